"""Chatwoot's JSON shapes, rendered from the simulator's records.

Owns every wire shape (push payloads and REST views) and nothing else: no state changes, no
clock, no I/O. Shapes follow ``/work/shared/chatwoot.md`` §2.4-§2.7 and §4.2-§4.4; timestamps
are deliberately mixed exactly as §2.7 lists them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from bridge.simulator.entities import (
    AgentBot,
    Contact,
    ContactInbox,
    Conversation,
    Inbox,
    Message,
    MessageType,
    User,
)


# chatwoot.md §2.5: the dashboard and REST count at most the last 10 unread incoming messages
# (``unread_incoming_messages`` is ``.incoming.last(10)``).
UNREAD_CAP = 10


class Lookup(Protocol):
    """The read-only part of the world the renderers need (``model.World`` satisfies it)."""

    def contact(self, contact_id: int) -> Contact: ...
    def contact_inbox(self, contact_inbox_id: int) -> ContactInbox: ...
    def inbox(self, inbox_id: int) -> Inbox: ...
    def user(self, user_id: int) -> User: ...
    def bot(self, bot_id: int) -> AgentBot: ...
    def conversation_by_id(self, conversation_id: int) -> Conversation: ...
    def messages_of(self, conversation: Conversation) -> list[Message]: ...


def iso(ts: float) -> str:
    """Format like ActiveSupport's JSON encoder: UTC, milliseconds, ``...T06:00:00.123Z``."""
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_or_none(ts: float | None) -> str | None:
    """``iso`` that keeps ``None`` (a NULL column) as JSON null."""
    return None if ts is None else iso(ts)


def to_i(ts: float | None) -> int:
    """Ruby's ``time.to_i``, where ``nil.to_i`` is 0 (chatwoot.md §2.7: 0 means null)."""
    return 0 if ts is None else int(ts)


# Public methods: people


def contact_push(contact: Contact) -> dict[str, Any]:
    """``Contact#push_event_data`` (message sender, ``meta.sender``, ``contact.*`` events)."""
    return {
        "additional_attributes": dict(contact.additional_attributes),
        "custom_attributes": dict(contact.custom_attributes),
        "email": contact.email,
        "id": contact.id,
        "identifier": contact.identifier,
        "name": contact.name,
        "phone_number": contact.phone_number,
        "thumbnail": "",
        "blocked": contact.blocked,
        "type": "contact",
    }


def contact_rest(contact: Contact, *, online: bool) -> dict[str, Any]:
    """``api/v1/models/_contact.json.jbuilder`` without ``contact_inboxes``."""
    return {
        "additional_attributes": dict(contact.additional_attributes),
        "availability_status": "online" if online else "offline",
        "email": contact.email,
        "id": contact.id,
        "name": contact.name,
        "phone_number": contact.phone_number,
        "blocked": contact.blocked,
        "identifier": contact.identifier,
        "thumbnail": "",
        "custom_attributes": dict(contact.custom_attributes),
        "last_activity_at": None
        if contact.last_activity_at is None
        else int(contact.last_activity_at),
        "created_at": int(contact.created_at),
    }


def user_push(user: User) -> dict[str, Any]:
    """``User#push_event_data`` (message sender, typing ``user``, ``performer``)."""
    return {
        "id": user.id,
        "name": user.name,
        "available_name": user.name,
        "avatar_url": "",
        "type": "user",
        "availability_status": user.availability,
        "thumbnail": "",
    }


def bot_push(bot: AgentBot) -> dict[str, Any]:
    """``AgentBot#push_event_data``."""
    return {"id": bot.id, "name": bot.name, "avatar_url": "", "type": "agent_bot"}


def agent_rest(user: User, account_id: int) -> dict[str, Any]:
    """``api/v1/models/_agent.json.jbuilder`` (REST ``meta.assignee``)."""
    return {
        "id": user.id,
        "account_id": account_id,
        "availability_status": user.availability,
        "auto_offline": user.auto_offline,
        "confirmed": True,
        "email": user.email,
        "available_name": user.name,
        "name": user.name,
        "role": user.roles.get(account_id, "agent"),
        "thumbnail": "",
        "custom_role_id": None,
    }


def profile(user: User, accounts: list[tuple[int, str, float]]) -> dict[str, Any]:
    """``GET /api/v1/profile`` (chatwoot.md §4.2); ``accounts`` is ``(id, name, created_at)``."""
    active = accounts[0][0] if accounts else None
    return {
        "access_token": user.access_token,
        "account_id": active,
        "available_name": user.name,
        "avatar_url": "",
        "confirmed": True,
        "display_name": None,
        "message_signature": None,
        "email": user.email,
        "id": user.id,
        "inviter_id": None,
        "name": user.name,
        "provider": "email",
        "pubsub_token": user.pubsub_token,
        "role": None if active is None else user.roles[active],
        "ui_settings": {},
        "uid": user.email,
        "type": None,
        "accounts": [
            {
                "id": account_id,
                "name": name,
                "status": "active",
                "active_at": iso(created_at),
                "role": user.roles[account_id],
                "permissions": [user.roles[account_id]],
                "availability": user.availability,
                "availability_status": user.availability,
                "auto_offline": user.auto_offline,
                "custom_role_id": None,
            }
            for account_id, name, created_at in accounts
        ],
    }


def sender_push(world: Lookup, message: Message) -> dict[str, Any] | None:
    """The ``sender`` block of a message, or ``None`` when the message has no sender."""
    if message.sender_id is None:
        return None
    if message.sender_type == "User":
        return user_push(world.user(message.sender_id))
    if message.sender_type == "Contact":
        return contact_push(world.contact(message.sender_id))
    if message.sender_type == "AgentBot":
        return bot_push(world.bot(message.sender_id))
    return None


# Public methods: messages


def unread_count(world: Lookup, conversation: Conversation) -> int:
    """Incoming messages newer than ``agent_last_seen_at``, capped at ``UNREAD_CAP``."""
    seen = conversation.agent_last_seen_at
    count = sum(
        1
        for message in world.messages_of(conversation)
        if message.message_type is MessageType.INCOMING
        and (seen is None or message.created_at > seen)
    )
    return min(count, UNREAD_CAP)


def message_push(world: Lookup, message: Message, *, echo_id: str | None = None) -> dict[str, Any]:
    """``Message#push_event_data`` (chatwoot.md §2.4).

    Args:
        world: Record lookups.
        message: The message.
        echo_id: Only the request that created the message knows it: upstream ``echo_id`` is an
            ``attr_accessor``, not a column, so later renders never carry it.

    Returns:
        Every column (``attributes``) with ``created_at`` as int, ``updated_at`` as ISO string,
        ``message_type`` as int and ``conversation_id`` as the display id, plus ``conversation``,
        optional ``echo_id`` and ``sender``.
    """
    conversation = world.conversation_by_id(message.conversation_id)
    contact_inbox = world.contact_inbox(conversation.contact_inbox_id)
    data: dict[str, Any] = {
        "id": message.id,
        "content": message.content,
        "account_id": message.account_id,
        "inbox_id": message.inbox_id,
        "conversation_id": conversation.display_id,
        "message_type": int(message.message_type),
        "created_at": int(message.created_at),
        "updated_at": iso(message.updated_at),
        "private": message.private,
        "status": message.status,
        "source_id": message.source_id,
        "content_type": message.content_type,
        "content_attributes": dict(message.content_attributes),
        "sender_type": message.sender_type,
        "sender_id": message.sender_id,
        "external_source_ids": {},
        "additional_attributes": dict(message.additional_attributes),
        "processed_message_content": message.content,
        "sentiment": {},
        "conversation": {
            "assignee_id": conversation.assignee_id,
            "unread_count": unread_count(world, conversation),
            "last_activity_at": int(conversation.last_activity_at),
            "contact_inbox": {"source_id": contact_inbox.source_id},
        },
    }
    if echo_id:
        data["echo_id"] = echo_id
    sender = sender_push(world, message)
    if sender is not None:
        data["sender"] = sender
    return data


def message_rest(world: Lookup, message: Message, *, echo_id: str | None = None) -> dict[str, Any]:
    """``api/v1/models/_message.json.jbuilder``: the REST subset of chatwoot.md §4.4."""
    conversation = world.conversation_by_id(message.conversation_id)
    data: dict[str, Any] = {
        "id": message.id,
        "content": message.content,
        "inbox_id": message.inbox_id,
    }
    if echo_id:
        data["echo_id"] = echo_id
    data.update(
        {
            "conversation_id": conversation.display_id,
            "message_type": int(message.message_type),
            "content_type": message.content_type,
            "status": message.status,
            "content_attributes": dict(message.content_attributes),
            "created_at": int(message.created_at),
            "private": message.private,
            "source_id": message.source_id,
        }
    )
    sender = sender_push(world, message)
    if sender is not None:
        data["sender"] = sender
    return data


# Public methods: conversations


def contact_inbox_record(contact_inbox: ContactInbox) -> dict[str, Any]:
    """The whole ContactInbox row, as the push payload leaks it (chatwoot.md §2.5)."""
    return {
        "id": contact_inbox.id,
        "contact_id": contact_inbox.contact_id,
        "inbox_id": contact_inbox.inbox_id,
        "source_id": contact_inbox.source_id,
        "created_at": iso(contact_inbox.created_at),
        "updated_at": iso(contact_inbox.updated_at),
        "hmac_verified": contact_inbox.hmac_verified,
        "pubsub_token": contact_inbox.pubsub_token,
    }


def conversation_push(world: Lookup, conversation: Conversation) -> dict[str, Any]:
    """``Conversations::EventDataPresenter#push_data`` (chatwoot.md §2.5)."""
    inbox = world.inbox(conversation.inbox_id)
    contact_inbox = world.contact_inbox(conversation.contact_inbox_id)
    messages = world.messages_of(conversation)
    # ``messages.chat.last``: activity lines and private notes never reach the push preview.
    chat = [m for m in messages if m.message_type is not MessageType.ACTIVITY and not m.private]
    assignee = None if conversation.assignee_id is None else world.user(conversation.assignee_id)
    return {
        "additional_attributes": dict(conversation.additional_attributes),
        "can_reply": True,
        "channel": inbox.channel_type,
        "contact_inbox": contact_inbox_record(contact_inbox),
        "id": conversation.display_id,
        "inbox_id": conversation.inbox_id,
        "messages": [message_push(world, chat[-1])] if chat else [],
        "labels": list(conversation.labels),
        "meta": {
            "sender": contact_push(world.contact(conversation.contact_id)),
            "assignee": None if assignee is None else user_push(assignee),
            "assignee_type": None if assignee is None else "User",
            "team": None,
            "hmac_verified": contact_inbox.hmac_verified,
        },
        "status": conversation.status,
        "custom_attributes": dict(conversation.custom_attributes),
        "snoozed_until": iso_or_none(conversation.snoozed_until),
        "unread_count": unread_count(world, conversation),
        # ISO string here, int in REST (chatwoot.md §2.7).
        "first_reply_created_at": iso_or_none(conversation.first_reply_created_at),
        "priority": conversation.priority,
        "waiting_since": to_i(conversation.waiting_since),
        "agent_last_seen_at": to_i(conversation.agent_last_seen_at),
        "contact_last_seen_at": to_i(conversation.contact_last_seen_at),
        "last_activity_at": int(conversation.last_activity_at),
        "timestamp": int(conversation.last_activity_at),
        "created_at": int(conversation.created_at),
        "updated_at": round(conversation.updated_at, 6),
    }


def conversation_rest(
    world: Lookup, conversation: Conversation, *, contact_online: bool
) -> dict[str, Any]:
    """``api/v1/conversations/partials/_conversation.json.jbuilder`` (chatwoot.md §4.3)."""
    inbox = world.inbox(conversation.inbox_id)
    contact_inbox = world.contact_inbox(conversation.contact_inbox_id)
    messages = [
        m for m in world.messages_of(conversation) if m.account_id == conversation.account_id
    ]
    non_activity = [m for m in messages if m.message_type is not MessageType.ACTIVITY]
    meta: dict[str, Any] = {
        "sender": contact_rest(world.contact(conversation.contact_id), online=contact_online),
        "channel": inbox.channel_type,
    }
    if conversation.assignee_id is not None:
        meta["assignee"] = agent_rest(world.user(conversation.assignee_id), conversation.account_id)
        meta["assignee_type"] = "User"
    meta["hmac_verified"] = contact_inbox.hmac_verified
    return {
        "meta": meta,
        "id": conversation.display_id,
        # REST keeps the last message of any type, activity included (push does not).
        "messages": [message_push(world, messages[-1])] if messages else [],
        "account_id": conversation.account_id,
        "uuid": conversation.uuid,
        "additional_attributes": dict(conversation.additional_attributes),
        "agent_last_seen_at": to_i(conversation.agent_last_seen_at),
        "assignee_last_seen_at": to_i(conversation.assignee_last_seen_at),
        "can_reply": True,
        "contact_last_seen_at": to_i(conversation.contact_last_seen_at),
        "custom_attributes": dict(conversation.custom_attributes),
        "inbox_id": conversation.inbox_id,
        "labels": list(conversation.labels),
        "muted": False,
        "snoozed_until": iso_or_none(conversation.snoozed_until),
        "status": conversation.status,
        "created_at": int(conversation.created_at),
        "updated_at": round(conversation.updated_at, 6),
        "timestamp": int(conversation.last_activity_at),
        "first_reply_created_at": to_i(conversation.first_reply_created_at),
        "unread_count": unread_count(world, conversation),
        "last_non_activity_message": message_push(world, non_activity[-1])
        if non_activity
        else None,
        "last_activity_at": int(conversation.last_activity_at),
        "priority": conversation.priority,
        "waiting_since": to_i(conversation.waiting_since),
        "sla_policy_id": None,
    }


def messages_meta(world: Lookup, conversation: Conversation) -> dict[str, Any]:
    """The ``meta`` of ``GET .../messages`` (chatwoot.md §4.4): ISO-or-null seen timestamps."""
    meta: dict[str, Any] = {
        "labels": list(conversation.labels),
        "additional_attributes": dict(conversation.additional_attributes),
        "contact": contact_push(world.contact(conversation.contact_id)),
    }
    if conversation.assignee_id is not None:
        meta["assignee"] = user_push(world.user(conversation.assignee_id))
    meta["agent_last_seen_at"] = iso_or_none(conversation.agent_last_seen_at)
    meta["assignee_last_seen_at"] = iso_or_none(conversation.assignee_last_seen_at)
    return meta


def typing_payload(
    world: Lookup, conversation: Conversation, typist: dict[str, Any], *, is_private: bool
) -> dict[str, Any]:
    """``conversation.typing_on/off`` data before ``account_id`` is merged (chatwoot.md §2.3)."""
    return {
        "conversation": conversation_push(world, conversation),
        "user": typist,
        "is_private": is_private,
    }
