"""Chatwoot's model callbacks over the simulated database, as pure state transitions.

Owns every mutation; each returns the ``Broadcast`` list Chatwoot's ``ActionCableListener``
would enqueue (``/work/shared/chatwoot.md`` §2.1-§2.3). Must not do I/O, read the clock
(``now`` is passed in) or know about sockets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from bridge.simulator import render
from bridge.simulator.entities import (
    CONVERSATION_STATUSES,
    CONVERSATION_UPDATE_EVENTS,
    AgentBot,
    Broadcast,
    Contact,
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    MessageType,
    SenderType,
    User,
)
from bridge.simulator.store import (
    Actor,
    BotSpec,
    InboxSpec,
    InvalidError,
    NotFoundError,
    Store,
    UserSpec,
    WorldSpec,
    get_record,
    uniq,
)


__all__ = [
    "Actor",
    "BotSpec",
    "InboxSpec",
    "InvalidError",
    "NotFoundError",
    "UserSpec",
    "World",
    "WorldSpec",
]

# chatwoot.md §4.5: v4.10 writes update_last_seen at most hourly when nothing is unread.
LAST_SEEN_THROTTLE = 3600.0
# config/locales/en.yml ``conversations.activity.status``.
_STATUS_ACTIVITY = {
    "resolved": "Conversation was marked resolved by {}",
    "open": "Conversation was reopened by {}",
    "pending": "Conversation was marked as pending by {}",
    "snoozed": "Conversation was snoozed by {}",
}


class _Outbox:
    """Collects one request's broadcasts; re-read events are rendered when it finishes."""

    def __init__(self, world: World, account_id: int, actor: Actor | None) -> None:
        self._world = world
        self._account_id = account_id
        self._performer = _actor_push(actor)
        self._items: list[tuple[list[str], str, dict[str, Any] | Conversation, bool]] = []

    def emit(
        self,
        tokens: Iterable[str],
        event: str,
        data: dict[str, Any] | Conversation,
        *,
        performer: bool = True,
    ) -> None:
        self._items.append((uniq(tokens), event, data, performer))

    def finish(self) -> list[Broadcast]:
        out: list[Broadcast] = []
        for tokens, event, data, with_performer in self._items:
            # ActionCableListener#broadcast: ``return if tokens.blank?``.
            if not tokens:
                continue
            if isinstance(data, Conversation):
                # chatwoot.md §2.1 step 4: the job re-reads the conversation, so the payload is
                # the state after the whole request, not at dispatch time.
                payload = render.conversation_push(self._world, data)
            else:
                payload = dict(data)
            payload["account_id"] = self._account_id
            if with_performer and self._performer and event not in CONVERSATION_UPDATE_EVENTS:
                payload["performer"] = self._performer
            out.append(Broadcast(tokens, event, payload))
        return out


class World(Store):
    """The database plus Chatwoot's callbacks. Every timestamp comes in as ``now``."""

    def __init__(self, spec: WorldSpec, *, now: float) -> None:
        super().__init__(spec, now=now)
        self._seed_conversations(spec.conversations_per_account, now)

    # Public methods: mutations

    def create_conversation(
        self,
        account_id: int,
        *,
        now: float,
        inbox_id: int | None = None,
        contact_id: int | None = None,
        actor: Actor | None = None,
    ) -> tuple[Conversation, list[Broadcast]]:
        """Create a conversation (and a new contact unless ``contact_id`` is given)."""
        t = self._tick(now)
        self.account(account_id)
        inbox = self._inbox_for(account_id, inbox_id)
        out = _Outbox(self, account_id, actor)
        if contact_id is None:
            contact = self._new_contact(account_id, t)
            # Contact after_create_commit → contact.created on the account stream (§2.3).
            out.emit([f"account_{account_id}"], "contact.created", render.contact_push(contact))
        else:
            contact = self.contact(contact_id)
        ci = self._contact_inbox_for(contact, inbox, t)
        display_id = self._next_display[account_id]
        self._next_display[account_id] += 1
        conv = Conversation(
            id=len(self.conversations) + 1,
            account_id=account_id,
            display_id=display_id,
            inbox_id=inbox.id,
            contact_id=contact.id,
            contact_inbox_id=ci.id,
            uuid=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            status="open",
            created_at=t,
            updated_at=t,
            last_activity_at=t,
            # before_create :ensure_waiting_since.
            waiting_since=t,
        )
        self.conversations[conv.id] = conv
        self._by_display[account_id, display_id] = conv.id
        out.emit(
            self._user_tokens(conv) + self._ci_tokens(ci),
            "conversation.created",
            render.conversation_push(self, conv),
        )
        return conv, out.finish()

    def create_message(
        self,
        account_id: int,
        display_id: int,
        *,
        now: float,
        content: str | None,
        message_type: MessageType,
        private: bool = False,
        sender: User | AgentBot | Contact | None = None,
        echo_id: str | None = None,
        actor: Actor | None = None,
    ) -> tuple[Message, list[Broadcast]]:
        """Create a message and run ``Message#execute_after_create_commit_callbacks``.

        Args:
            account_id: Account of the conversation.
            display_id: Conversation display id.
            now: Wall-clock time.
            content: Text.
            message_type: Incoming messages default their sender to the conversation's contact.
            private: A private note (never sent to the contact).
            sender: Who wrote it.
            echo_id: Client-side id echoed in this request's payloads only.
            actor: ``Current.user`` of the request, rendered as ``performer``.

        Returns:
            The message and, in order: reopen status events, ``message.created``,
            ``first.reply.created`` / ``conversation.updated`` (waiting_since), ``contact.updated``.
        """
        t = self._tick(now)
        conv = self.conversation(account_id, display_id)
        if sender is None and message_type is MessageType.INCOMING:
            sender = self.contact(conv.contact_id)
        if isinstance(sender, Contact):
            self._contact_present(sender, t)
        msg = Message(
            id=len(self.messages) + 1,  # one global sequence across accounts
            account_id=account_id,
            inbox_id=conv.inbox_id,
            conversation_id=conv.id,
            content=content,
            message_type=message_type,
            created_at=t,
            updated_at=t,
            private=private,
            sender_type=_sender_type(sender),
            sender_id=None if sender is None else sender.id,
        )
        self.messages[msg.id] = msg
        conv.message_ids.append(msg.id)
        out = _Outbox(self, account_id, actor)
        if message_type is MessageType.INCOMING and conv.status in ("resolved", "snoozed"):
            # Message#reopen_conversation; no activity line since Current.user is the contact.
            self._apply_status(conv, "open", t, out, actor_name=None)
        self._touch_activity(conv, t)
        pushed = render.message_push(self, msg, echo_id=echo_id)
        out.emit(
            self._user_tokens(conv) + self._message_contact_tokens(conv, msg),
            "message.created",
            pushed,
        )
        human = message_type is MessageType.OUTGOING and isinstance(sender, User)
        if human and not private and self._first_reply(conv):
            out.emit(self._user_tokens(conv), "first.reply.created", pushed)
            conv.first_reply_created_at, conv.waiting_since = t, None
            self._bump(conv, t)
            out.emit(self._all_tokens(conv), "conversation.updated", conv)
        else:
            bot = message_type is MessageType.OUTGOING and isinstance(sender, AgentBot)
            if conv.waiting_since is not None and not private and (human or bot):
                conv.waiting_since = None
                self._bump(conv, t)
                out.emit(self._all_tokens(conv), "conversation.updated", conv)
            if message_type is MessageType.INCOMING and conv.waiting_since is None:
                conv.waiting_since = t
                self._bump(conv, t)
                out.emit(self._all_tokens(conv), "conversation.updated", conv)
        if isinstance(sender, Contact):
            # Message#update_contact_activity → Contact after_update_commit → contact.updated.
            sender.last_activity_at = t
            out.emit([f"account_{account_id}"], "contact.updated", render.contact_push(sender))
        return msg, out.finish()

    def set_status(
        self,
        account_id: int,
        display_id: int,
        status: str,
        *,
        now: float,
        actor: Actor | None = None,
        snoozed_until: float | None = None,
    ) -> list[Broadcast]:
        """Save a new status: ``conversation.status_changed`` AND ``conversation.updated``."""
        target = _as_status(status)
        t = self._tick(now)
        conv = self.conversation(account_id, display_id)
        out = _Outbox(self, account_id, actor)
        actor_name = actor.name if isinstance(actor, User) else None
        self._apply_status(conv, target, t, out, actor_name=actor_name, snoozed_until=snoozed_until)
        return out.finish()

    def toggle_status(
        self, account_id: int, display_id: int, *, now: float, actor: Actor | None = None
    ) -> tuple[ConversationStatus, list[Broadcast]]:
        """``Conversation#toggle_status``: open → resolved, anything else → open."""
        conv = self.conversation(account_id, display_id)
        target: ConversationStatus = "resolved" if conv.status == "open" else "open"
        return target, self.set_status(account_id, display_id, target, now=now, actor=actor)

    def assign(
        self,
        account_id: int,
        display_id: int,
        assignee_id: int | None,
        *,
        now: float,
        actor: Actor | None = None,
    ) -> list[Broadcast]:
        """Change the assignee: ``assignee.changed`` AND ``conversation.updated`` (§2.3)."""
        conv = self.conversation(account_id, display_id)
        if assignee_id is not None and account_id not in self.user(assignee_id).roles:
            raise InvalidError("assignee is not a member of the account")
        if conv.assignee_id == assignee_id:
            return []
        t = self._tick(now)
        conv.assignee_id = assignee_id
        self._bump(conv, t)
        out = _Outbox(self, account_id, actor)
        out.emit(self._user_tokens(conv), "assignee.changed", conv)
        out.emit(self._all_tokens(conv), "conversation.updated", conv)
        if isinstance(actor, User):
            if assignee_id is None:
                line = f"Conversation unassigned by {actor.name}"
            elif assignee_id == actor.id:
                line = f"{actor.name} self-assigned this conversation"
            else:
                line = f"Assigned to {self.user(assignee_id).name} by {actor.name}"
            self._activity(conv, line, t, out)
        return out.finish()

    def typing(
        self,
        account_id: int,
        display_id: int,
        *,
        on: bool,
        typist: User | Contact,
        is_private: bool = False,
        actor: Actor | None = None,
    ) -> list[Broadcast]:
        """``conversation.typing_on/off`` to members+admins+contact minus the typist's token."""
        conv = self.conversation(account_id, display_id)
        ci = self.contact_inbox(conv.contact_inbox_id)
        if isinstance(typist, User):
            own, typist_data = typist.pubsub_token, render.user_push(typist)
        else:
            own, typist_data = ci.pubsub_token, render.contact_push(typist)
        tokens = [tok for tok in uniq([*self._user_tokens(conv), ci.pubsub_token]) if tok != own]
        out = _Outbox(self, account_id, actor)
        event = "conversation.typing_on" if on else "conversation.typing_off"
        out.emit(
            tokens, event, render.typing_payload(self, conv, typist_data, is_private=is_private)
        )
        return out.finish()

    def update_message_status(
        self, message_id: int, status: MessageStatus, *, now: float, actor: Actor | None = None
    ) -> list[Broadcast]:
        """Change a message's delivery status: ``message.updated`` with ``previous_changes``."""
        msg = get_record(self.messages, message_id, "Message")
        if msg.status == status:
            return []  # previous_changes empty → no event
        t = self._tick(now)
        old_status, old_updated = msg.status, render.iso(msg.updated_at)
        msg.status, msg.updated_at = status, t
        conv = self.conversation_by_id(msg.conversation_id)
        # belongs_to :conversation, touch: true touches on every save, updates included.
        self._bump(conv, t)
        data = render.message_push(self, msg)
        data["previous_changes"] = {
            "status": [old_status, status],
            "updated_at": [old_updated, render.iso(t)],
        }
        out = _Outbox(self, msg.account_id, actor)
        out.emit(
            self._user_tokens(conv) + self._message_contact_tokens(conv, msg),
            "message.updated",
            data,
        )
        return out.finish()

    def agent_seen(self, account_id: int, display_id: int, user: User, *, now: float) -> None:
        """``update_last_seen``: ``update_columns``, so no event and no ``updated_at`` bump."""
        conv = self.conversation(account_id, display_id)
        last = conv.agent_last_seen_at
        if (
            render.unread_count(self, conv) == 0
            and last is not None
            and now - last < LAST_SEEN_THROTTLE
        ):
            return
        conv.agent_last_seen_at = now
        if conv.assignee_id == user.id:
            conv.assignee_last_seen_at = now

    def contact_read(self, account_id: int, display_id: int, *, now: float) -> list[Broadcast]:
        """The contact read the conversation: ``conversation.read`` to members+admins."""
        conv = self.conversation(account_id, display_id)
        conv.contact_last_seen_at = now
        out = _Outbox(self, account_id, None)
        out.emit(self._user_tokens(conv), "conversation.read", conv)
        return out.finish()

    # Private methods

    def _touch_activity(self, conv: Conversation, t: float) -> None:
        # Message#set_conversation_activity: update_columns(last_activity_at:, updated_at:).
        conv.last_activity_at = t
        self._bump(conv, t)

    def _apply_status(
        self,
        conv: Conversation,
        status: ConversationStatus,
        t: float,
        out: _Outbox,
        *,
        actor_name: str | None,
        snoozed_until: float | None = None,
    ) -> None:
        if conv.status == status:
            return
        conv.status = status
        conv.snoozed_until = snoozed_until if status == "snoozed" else None
        if status == "resolved":
            conv.waiting_since = None  # handle_resolved_status_change, update_column
        self._bump(conv, t)
        out.emit(self._all_tokens(conv), "conversation.status_changed", conv)
        out.emit(self._all_tokens(conv), "conversation.updated", conv)
        if actor_name is not None:
            # ActivityMessageHandler enqueues a job, so the line lands after both events.
            self._activity(conv, _STATUS_ACTIVITY[status].format(actor_name), t, out)

    def _activity(self, conv: Conversation, content: str, t: float, out: _Outbox) -> None:
        t = self._tick(t)
        msg = Message(
            id=len(self.messages) + 1,
            account_id=conv.account_id,
            inbox_id=conv.inbox_id,
            conversation_id=conv.id,
            content=content,
            message_type=MessageType.ACTIVITY,
            created_at=t,
            updated_at=t,
        )
        self.messages[msg.id] = msg
        conv.message_ids.append(msg.id)
        self._touch_activity(conv, t)
        # Created by Conversations::ActivityMessageJob: no Current.user, so no performer.
        out.emit(
            self._user_tokens(conv),
            "message.created",
            render.message_push(self, msg),
            performer=False,
        )

    def _first_reply(self, conv: Conversation) -> bool:
        # Message#valid_first_reply?: no first reply yet and at most this one human public reply.
        if conv.first_reply_created_at is not None:
            return False
        human_replies = sum(
            1
            for m in self.messages_of(conv)
            if m.message_type is MessageType.OUTGOING and m.sender_type == "User" and not m.private
        )
        return human_replies <= 1

    def _seed_conversations(self, per_account: int, now: float) -> None:
        for account_id in sorted(self.accounts):
            admins = [u for u in self.users.values() if u.is_admin(account_id)]
            inboxes = sorted(i.id for i in self.inboxes.values() if i.account_id == account_id)
            for n in range(per_account):
                # Alternate inboxes so an agent who is a member of only one sees a subset.
                inbox_id = inboxes[n % len(inboxes)] if inboxes else None
                conv, _ = self.create_conversation(account_id, now=now, inbox_id=inbox_id)
                self.create_message(
                    account_id,
                    conv.display_id,
                    now=now,
                    content=f"Hello, I need help ({n + 1})",
                    message_type=MessageType.INCOMING,
                )
                if admins and n % 2 == 0:
                    self.create_message(
                        account_id,
                        conv.display_id,
                        now=now,
                        content="Hi! How can I help?",
                        message_type=MessageType.OUTGOING,
                        sender=admins[0],
                    )
                if n % 5 == 4:
                    self.set_status(account_id, conv.display_id, "resolved", now=now)


def _as_status(value: str) -> ConversationStatus:
    for status in CONVERSATION_STATUSES:
        if status == value:
            return status
    raise InvalidError(f"'{value}' is not a valid status")


def _sender_type(sender: User | AgentBot | Contact | None) -> SenderType | None:
    if isinstance(sender, User):
        return "User"
    if isinstance(sender, AgentBot):
        return "AgentBot"
    if isinstance(sender, Contact):
        return "Contact"
    return None


def _actor_push(actor: Actor | None) -> dict[str, Any] | None:
    if isinstance(actor, User):
        return render.user_push(actor)
    if isinstance(actor, AgentBot):
        return render.bot_push(actor)
    return None
