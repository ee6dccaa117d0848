"""Seeded generator of plausible Chatwoot activity.

Owns *what happens next* (messages, new conversations, status changes, typing pairs, notes,
assignments, delivery receipts) and its pacing; the effects and broadcasts come from ``model``.
Must not touch sockets. Same seed and same starting world give the same sequence of actions.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from collections.abc import Callable

from bridge.simulator.entities import Conversation, MessageStatus, MessageType, Publish, User
from bridge.simulator.model import World


# Relative weights: mostly messages in existing conversations, as in a real inbox.
_WEIGHTS: dict[str, int] = {
    "incoming": 40,
    "outgoing": 25,
    "typing_on": 10,
    "status": 8,
    "new_conversation": 5,
    "private_note": 4,
    "assign": 4,
    "message_status": 4,
}
_PHRASES = (
    "Hi, is my order on its way?",
    "Thanks for the quick answer!",
    "Could you check my invoice?",
    "Let me look into that for you.",
    "The app keeps logging me out.",
    "I have sent the details by email.",
    "Is there anything else I can help with?",
    "Perfect, that works.",
)
# A tick never catches up on more than this many events, so a stalled loop does not flood.
_MAX_CATCH_UP = 1000


class TrafficGenerator:
    """Drives random activity at ``rate`` events per second (0 pauses)."""

    def __init__(
        self,
        world: World,
        publish: Publish,
        *,
        clock: Callable[[], float],
        seed: int,
        rate: float,
    ) -> None:
        self._world = world
        self._publish = publish
        self._clock = clock
        self._rng = random.Random(seed)
        self._rate = rate
        self._wake = asyncio.Event()
        # Typing indicators switched on and not yet off: (account_id, display_id, user id or
        # None for the contact). Each gets its typing_off on a later step.
        self._typing: list[tuple[int, int, int | None]] = []
        self._counter = 0
        self._handlers: dict[str, Callable[[], None]] = {
            "incoming": self._do_incoming,
            "outgoing": self._do_outgoing,
            "private_note": self._do_private_note,
            "new_conversation": self._do_new_conversation,
            "status": self._do_status,
            "assign": self._do_assign,
            "typing_on": self._do_typing_on,
            "typing_off": self._do_typing_off,
            "message_status": self._do_message_status,
        }
        self.actions: collections.Counter[str] = collections.Counter()

    # Public methods

    @property
    def rate(self) -> float:
        """Events per second; 0 means paused."""
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the pace at runtime.

        Raises:
            ValueError: ``rate`` is negative.
        """
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._rate = rate
        self._wake.set()

    def step(self) -> str:
        """Perform one random action now and return its name."""
        if self._typing and self._rng.random() < 0.5:
            action = "typing_off"
        else:
            names = list(_WEIGHTS)
            action = self._rng.choices(names, weights=[_WEIGHTS[n] for n in names])[0]
        self._handlers[action]()
        self.actions[action] += 1
        return action

    def burst(
        self, n_messages: int, n_conversations: int, *, account_id: int | None = None
    ) -> list[int]:
        """Create ``n_messages`` messages spread round-robin over ``n_conversations``.

        Existing conversations are used first (oldest first), new ones are created when there
        are too few. Roughly 60% of the messages are incoming, the rest agent replies.

        Returns:
            The ids of the messages created, in creation order.
        """
        if n_conversations <= 0:
            raise ValueError("n_conversations must be > 0")
        accounts = [account_id] if account_id is not None else sorted(self._world.accounts)
        targets = sorted(
            (c for a in accounts for c in self._world.conversations_in(a)), key=lambda c: c.id
        )[:n_conversations]
        while len(targets) < n_conversations:
            targets.append(self._new_conversation(accounts[len(targets) % len(accounts)]))
        ids: list[int] = []
        for n in range(n_messages):
            conv = targets[n % len(targets)]
            if self._rng.random() < 0.6:
                ids.append(self._message(conv, MessageType.INCOMING))
            else:
                ids.append(self._message(conv, MessageType.OUTGOING, agent=self._agent(conv)))
        return ids

    async def run(self) -> None:
        """Generate events until cancelled, following ``rate`` changes immediately."""
        loop = asyncio.get_running_loop()
        budget, last = 0.0, loop.time()
        while True:
            self._wake.clear()
            if self._rate <= 0:
                await self._wake.wait()
                budget, last = 0.0, loop.time()
                continue
            try:
                async with asyncio.timeout(max(1.0 / self._rate, 0.01)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            now = loop.time()
            budget = min(budget + (now - last) * self._rate, _MAX_CATCH_UP)
            last = now
            while budget >= 1.0:
                budget -= 1.0
                self.step()

    # Private methods: actions

    def _do_incoming(self) -> None:
        self._message(self._pick_conversation(), MessageType.INCOMING)

    def _do_outgoing(self) -> None:
        conv = self._pick_conversation()
        self._message(conv, MessageType.OUTGOING, agent=self._agent(conv))

    def _do_private_note(self) -> None:
        conv = self._pick_conversation()
        self._message(conv, MessageType.OUTGOING, agent=self._agent(conv), private=True)

    def _do_new_conversation(self) -> None:
        conv = self._new_conversation(self._rng.choice(sorted(self._world.accounts)))
        self._message(conv, MessageType.INCOMING)

    def _do_status(self) -> None:
        conv = self._pick_conversation()
        status = self._rng.choice([s for s in ("open", "resolved", "pending") if s != conv.status])
        self._publish(
            self._world.set_status(
                conv.account_id, conv.display_id, status, now=self._clock(), actor=self._agent(conv)
            )
        )

    def _do_assign(self) -> None:
        conv = self._pick_conversation()
        members = [u.id for u in self._agents(conv)]
        assignee = self._rng.choice([*members, None])
        self._publish(
            self._world.assign(
                conv.account_id,
                conv.display_id,
                assignee,
                now=self._clock(),
                actor=self._agent(conv),
            )
        )

    def _do_typing_on(self) -> None:
        conv = self._pick_conversation()
        agent = self._agent(conv) if self._rng.random() < 0.5 else None
        self._typing.append((conv.account_id, conv.display_id, None if agent is None else agent.id))
        self._typing_event(conv, agent, on=True)

    def _do_typing_off(self) -> None:
        account_id, display_id, user_id = self._typing.pop(0)
        conv = self._world.conversation(account_id, display_id)
        self._typing_event(conv, None if user_id is None else self._world.user(user_id), on=False)

    def _do_message_status(self) -> None:
        # Channel delivery receipts: the newest outgoing message not yet read moves one step.
        candidates = list(
            itertools.islice(
                (
                    m
                    for m in reversed(self._world.messages.values())
                    if m.message_type is MessageType.OUTGOING and m.status in ("sent", "delivered")
                ),
                20,
            )
        )
        if not candidates:
            self._do_incoming()
            return
        message = self._rng.choice(candidates)
        status: MessageStatus = "delivered" if message.status == "sent" else "read"
        self._publish(self._world.update_message_status(message.id, status, now=self._clock()))

    # Private methods: helpers

    def _pick_conversation(self) -> Conversation:
        account_id = self._rng.choice(sorted(self._world.accounts))
        conversations = self._world.conversations_in(account_id)
        if not conversations:
            return self._new_conversation(account_id)
        return self._rng.choice(conversations)

    def _new_conversation(self, account_id: int) -> Conversation:
        conv, broadcasts = self._world.create_conversation(account_id, now=self._clock())
        self._publish(broadcasts)
        return conv

    def _agents(self, conv: Conversation) -> list[User]:
        return [
            u
            for u in sorted(self._world.users.values(), key=lambda u: u.id)
            if conv.account_id in u.roles and self._world.can_see(u, conv)
        ]

    def _agent(self, conv: Conversation) -> User | None:
        agents = self._agents(conv)
        return self._rng.choice(agents) if agents else None

    def _message(
        self,
        conv: Conversation,
        message_type: MessageType,
        *,
        agent: User | None = None,
        private: bool = False,
    ) -> int:
        self._counter += 1
        content = f"{self._rng.choice(_PHRASES)} (#{self._counter})"
        message, broadcasts = self._world.create_message(
            conv.account_id,
            conv.display_id,
            now=self._clock(),
            content=content,
            message_type=message_type,
            private=private,
            sender=agent,
            actor=agent,
        )
        self._publish(broadcasts)
        return message.id

    def _typing_event(self, conv: Conversation, agent: User | None, *, on: bool) -> None:
        typist = agent if agent is not None else self._world.contact(conv.contact_id)
        self._publish(
            self._world.typing(conv.account_id, conv.display_id, on=on, typist=typist, actor=agent)
        )
