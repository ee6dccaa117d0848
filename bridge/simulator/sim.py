"""The ``Simulator`` facade: one simulated Chatwoot and the knobs tests turn.

Owns the wiring of database, cable server, REST API, traffic generator and fault switches, plus
the in-process operations tests and ``/_sim`` call (act as a contact or agent, flip faults, read
ground truth). Must not contain protocol or payload logic of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from bridge.simulator import render
from bridge.simulator.cable import CableServer
from bridge.simulator.config import SimConfig
from bridge.simulator.entities import Broadcast, MessageStatus, MessageType, User
from bridge.simulator.faults import Faults
from bridge.simulator.model import InvalidError, World
from bridge.simulator.rest import RestApi
from bridge.simulator.traffic import TrafficGenerator


_log = structlog.get_logger("bridge.simulator")
_MESSAGE_TYPES = {"incoming": MessageType.INCOMING, "outgoing": MessageType.OUTGOING}


class Simulator:
    """A simulated Chatwoot. Build it with ``build_app``; every method is safe to call in-process.

    Attributes:
        cfg: The configuration.
        world: The database (``model.World``); read it freely, mutate it only through methods.
        faults: The fault switches (``faults.Faults``).
        cable: The ActionCable server.
        rest: The REST handlers.
        traffic: The traffic generator.
    """

    def __init__(self, cfg: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.world = World(cfg.world_spec(), now=clock())
        self.faults = Faults(seed=cfg.seed, log_size=cfg.request_log_size, clock=clock)
        self.cable = CableServer(
            self.world, self.faults, ping_interval=cfg.ping_interval, clock=clock
        )
        self.rest = RestApi(self.world, self.publish, clock=clock)
        self.traffic = TrafficGenerator(
            self.world, self.publish, clock=clock, seed=cfg.seed, rate=cfg.rate
        )
        self._rotations = 0

    # Public methods: lifecycle

    def publish(self, broadcasts: Iterable[Broadcast]) -> None:
        """Hand broadcasts to the cable server (subject to ``drop_broadcasts``)."""
        self.cable.publish(broadcasts)

    async def run(self) -> None:
        """Run pings and generated traffic until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.cable.run_pings())
            tasks.create_task(self.traffic.run())

    async def shutdown(self) -> None:
        """Release hung REST requests and close every socket with 1001 (bounded)."""
        self.faults.close()
        await self.cable.shutdown()

    # Public methods: faults

    def set_faults(
        self,
        *,
        stop_pings: bool | None = None,
        drop_broadcasts: bool | None = None,
        rest_mode: str | None = None,
        rest_fault_ratio: float | None = None,
        refuse_connections: bool | None = None,
    ) -> dict[str, Any]:
        """Flip any subset of the switches; ``None`` leaves a switch as it is.

        Raises:
            ValueError: Unknown ``rest_mode`` or a ratio outside 0..1.

        Returns:
            All switches after the change.
        """
        if rest_fault_ratio is not None and not 0.0 <= rest_fault_ratio <= 1.0:
            raise ValueError("rest_fault_ratio must be within 0..1")
        if rest_mode is not None:
            self.faults.set_rest_mode(rest_mode)
        if rest_fault_ratio is not None:
            self.faults.rest_fault_ratio = rest_fault_ratio
        if stop_pings is not None:
            self.faults.stop_pings = stop_pings
        if drop_broadcasts is not None:
            self.faults.drop_broadcasts = drop_broadcasts
        if refuse_connections is not None:
            self.faults.refuse_connections = refuse_connections
        _log.info("sim.faults", **self.faults.snapshot())
        return self.faults.snapshot()

    def drop_connections(self, *, abrupt: bool = True, refuse_for: float = 0.0) -> int:
        """Cut every socket like a network failure; optionally refuse upgrades for a while.

        Args:
            abrupt: TCP abort (no close frame) when true, a 1001 close frame otherwise.
            refuse_for: Seconds during which new ``/cable`` upgrades get 503.

        Returns:
            How many sockets were cut.
        """
        if refuse_for > 0:
            self.faults.refuse_until = self.clock() + refuse_for
        return self.cable.drop_connections(abrupt=abrupt)

    def disconnect(self, reason: str = "server_restart", *, reconnect: bool = True) -> int:
        """Send ``{"type":"disconnect","reason":..,"reconnect":..}`` to every socket and close."""
        return self.cable.disconnect(reason, reconnect=reconnect)

    def server_restart(self) -> int:
        """``ActionCable.server.restart``: disconnect ``server_restart`` with reconnect true."""
        return self.disconnect("server_restart", reconnect=True)

    # Public methods: traffic

    def rotate_pubsub_token(self, user_id: int) -> str:
        """Give a user a new pubsub token, as a password change does (chatwoot.md §4.2).

        Open subscriptions keep streaming the old token, which nothing broadcasts to any
        more; a new subscription with the old token fails silently.
        """
        user = self.world.user(user_id)
        user.pubsub_token = f"{user.pubsub_token.split('~')[0]}~{self._rotations + 1}"
        self._rotations += 1
        return user.pubsub_token

    def set_rate(self, rate: float) -> None:
        """Generated events per second; 0 pauses."""
        self.traffic.set_rate(rate)

    def burst(
        self, n_messages: int, n_conversations: int, *, account_id: int | None = None
    ) -> list[int]:
        """Create many messages at once (see ``TrafficGenerator.burst``); returns their ids."""
        return self.traffic.burst(n_messages, n_conversations, account_id=account_id)

    # Public methods: acting as contacts and agents

    def create_conversation(
        self, account_id: int, *, inbox_id: int | None = None
    ) -> dict[str, Any]:
        """A contact opens a conversation; returns its push payload."""
        conv, broadcasts = self.world.create_conversation(
            account_id, now=self.clock(), inbox_id=inbox_id
        )
        self.publish(broadcasts)
        return render.conversation_push(self.world, conv)

    def create_message(
        self,
        account_id: int,
        conversation_id: int | None = None,
        *,
        content: str | None,
        message_type: str = "incoming",
        private: bool = False,
        user_id: int | None = None,
        echo_id: str | None = None,
    ) -> dict[str, Any]:
        """A contact (``incoming``) or an agent (``outgoing``) writes a message.

        Args:
            account_id: Account.
            conversation_id: Display id; ``None`` opens a new conversation first.
            content: Text.
            message_type: ``incoming`` or ``outgoing``.
            private: A private note (outgoing only).
            user_id: The agent for outgoing messages; defaults to ``cfg.user_id`` (the admin).
            echo_id: Echoed in the push payload.

        Returns:
            The ``message.created`` push payload (what subscribers received or would have).
        """
        kind = _MESSAGE_TYPES.get(message_type)
        if kind is None:
            raise InvalidError("message_type must be incoming or outgoing")
        if conversation_id is None:
            conversation_id = self.create_conversation(account_id)["id"]
        agent = None if kind is MessageType.INCOMING else self._agent(account_id, user_id)
        message, broadcasts = self.world.create_message(
            account_id,
            conversation_id,
            now=self.clock(),
            content=content,
            message_type=kind,
            private=private,
            sender=agent,
            echo_id=echo_id,
            actor=agent,
        )
        self.publish(broadcasts)
        for broadcast in broadcasts:
            if broadcast.event == "message.created" and broadcast.data["id"] == message.id:
                return broadcast.data
        return render.message_push(self.world, message, echo_id=echo_id)

    def set_status(
        self, account_id: int, conversation_id: int, status: str, *, user_id: int | None = None
    ) -> dict[str, Any]:
        """Change a conversation's status (by ``user_id``, or by the system when ``None``)."""
        actor = None if user_id is None else self._agent(account_id, user_id)
        self.publish(
            self.world.set_status(
                account_id, conversation_id, status, now=self.clock(), actor=actor
            )
        )
        return render.conversation_push(
            self.world, self.world.conversation(account_id, conversation_id)
        )

    def assign(
        self,
        account_id: int,
        conversation_id: int,
        assignee_id: int | None,
        *,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Assign (or unassign with ``None``) a conversation."""
        actor = None if user_id is None else self._agent(account_id, user_id)
        self.publish(
            self.world.assign(
                account_id, conversation_id, assignee_id, now=self.clock(), actor=actor
            )
        )
        return render.conversation_push(
            self.world, self.world.conversation(account_id, conversation_id)
        )

    def typing(
        self,
        account_id: int,
        conversation_id: int,
        *,
        on: bool,
        user_id: int | None = None,
        is_private: bool = False,
    ) -> None:
        """The contact (``user_id`` None) or an agent starts or stops typing."""
        conv = self.world.conversation(account_id, conversation_id)
        agent = None if user_id is None else self._agent(account_id, user_id)
        typist = agent if agent is not None else self.world.contact(conv.contact_id)
        self.publish(
            self.world.typing(
                account_id,
                conversation_id,
                on=on,
                typist=typist,
                is_private=is_private,
                actor=agent,
            )
        )

    def update_message_status(self, message_id: int, status: MessageStatus) -> None:
        """A channel delivery receipt: ``message.updated`` with ``previous_changes``."""
        self.publish(self.world.update_message_status(message_id, status, now=self.clock()))

    # Public methods: observation

    def ground_truth(
        self, account_id: int | None = None, conversation_id: int | None = None
    ) -> dict[str, Any]:
        """Every conversation's message ids, status and ``updated_at``: what REST must yield."""
        rows = []
        for conv in sorted(self.world.conversations.values(), key=lambda c: c.id):
            if account_id is not None and conv.account_id != account_id:
                continue
            if conversation_id is not None and conv.display_id != conversation_id:
                continue
            rows.append(
                {
                    "account_id": conv.account_id,
                    "id": conv.display_id,
                    "status": conv.status,
                    "assignee_id": conv.assignee_id,
                    "updated_at": round(conv.updated_at, 6),
                    "last_activity_at": int(conv.last_activity_at),
                    "message_ids": list(conv.message_ids),
                }
            )
        return {"conversations": rows}

    def state(self) -> dict[str, Any]:
        """Counts, switches, connections and confirmed subscriptions."""
        world = self.world
        return {
            "accounts": sorted(world.accounts),
            "conversations": len(world.conversations),
            "messages": len(world.messages),
            "contacts": len(world.contacts),
            "connections": self.cable.connection_count,
            "subscriptions": self.cable.subscription_counts(),
            "faults": self.faults.snapshot(),
            "traffic": {"rate": self.traffic.rate, "actions": dict(self.traffic.actions)},
            "broadcasts": {
                "frames_delivered": self.cable.broadcasts_delivered,
                "dropped": self.cable.broadcasts_dropped,
                "frames_silenced": self.cable.frames_silenced,
            },
            "requests_logged": len(self.faults.requests),
        }

    def request_log(self) -> list[dict[str, Any]]:
        """The bounded log of /api and /cable requests, oldest first."""
        return [record.to_json() for record in self.faults.requests]

    def clear_request_log(self) -> None:
        """Forget every logged request."""
        self.faults.requests.clear()

    # Private methods

    def _agent(self, account_id: int, user_id: int | None) -> User:
        user = self.world.user(self.cfg.user_id if user_id is None else user_id)
        if account_id not in user.roles:
            raise InvalidError(f"user {user.id} is not a member of account {account_id}")
        return user
