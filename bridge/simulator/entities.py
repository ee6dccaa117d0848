"""Plain records of the simulated Chatwoot database, one dataclass per table.

Owns field names, enums and the ``Broadcast`` tuple; must not render JSON, read the clock or
do I/O. Column sets follow upstream Chatwoot v4.10.1 (``/work/shared/chatwoot.md`` §2.4-§2.5).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


Role = Literal["administrator", "agent"]
ConversationStatus = Literal["open", "resolved", "pending", "snoozed"]
MessageStatus = Literal["sent", "delivered", "read", "failed"]
SenderType = Literal["User", "Contact", "AgentBot"]

CONVERSATION_STATUSES: tuple[ConversationStatus, ...] = ("open", "resolved", "pending", "snoozed")
MESSAGE_STATUSES: tuple[MessageStatus, ...] = ("sent", "delivered", "read", "failed")

# chatwoot.md §2.1 step 4: the broadcast job re-reads the conversation for these five events,
# which both refreshes the payload and drops ``performer``.
CONVERSATION_UPDATE_EVENTS = frozenset(
    {
        "conversation.read",
        "conversation.updated",
        "team.changed",
        "assignee.changed",
        "conversation.status_changed",
    }
)


class MessageType(enum.IntEnum):
    """``messages.message_type``; push and REST send the integer (chatwoot.md §2.4)."""

    INCOMING = 0  # from the contact
    OUTGOING = 1  # from an agent or bot
    ACTIVITY = 2  # system line such as "Conversation was marked resolved by ..."
    TEMPLATE = 3  # campaign / bot template


class Broadcast(NamedTuple):
    """One ``ActionCableBroadcastJob``: the same ``{event, data}`` sent once per stream."""

    streams: list[str]
    event: str
    data: dict[str, Any]


# Hands a mutation's broadcasts to the cable server (injected into REST and traffic).
Publish = Callable[[Iterable[Broadcast]], None]


@dataclass(slots=True)
class Account:
    """A Chatwoot account (tenant)."""

    id: int
    name: str
    created_at: float


@dataclass(slots=True)
class User:
    """An agent or administrator; ``roles`` maps account id to the role held there."""

    id: int
    name: str
    email: str
    access_token: str
    pubsub_token: str
    roles: dict[int, Role]
    created_at: float
    availability: str = "online"
    # chatwoot.md §1.2: users with auto_offline false count as present even when not connected.
    auto_offline: bool = True

    def is_admin(self, account_id: int) -> bool:
        """Whether this user administers ``account_id``."""
        return self.roles.get(account_id) == "administrator"


@dataclass(slots=True)
class AgentBot:
    """An AgentBot: it has an access token but no pubsub_token (chatwoot.md §4.1)."""

    id: int
    name: str
    access_token: str
    account_id: int


@dataclass(slots=True)
class Inbox:
    """An inbox; ``member_ids`` are the agents assigned to it (admins see it regardless)."""

    id: int
    account_id: int
    name: str
    channel_type: str
    member_ids: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Contact:
    """A customer."""

    id: int
    account_id: int
    name: str
    email: str | None
    phone_number: str | None
    identifier: str | None
    created_at: float
    last_activity_at: float | None = None
    blocked: bool = False
    additional_attributes: dict[str, Any] = field(default_factory=dict)
    custom_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ContactInbox:
    """The contact's identity in one inbox; its pubsub_token is the widget's cable token."""

    id: int
    contact_id: int
    inbox_id: int
    source_id: str
    pubsub_token: str
    created_at: float
    updated_at: float
    hmac_verified: bool = False


@dataclass(slots=True)
class Conversation:
    """A conversation; ``id`` is the DB id, ``display_id`` the per-account number in URLs."""

    id: int
    account_id: int
    display_id: int
    inbox_id: int
    contact_id: int
    contact_inbox_id: int
    uuid: str
    status: ConversationStatus
    created_at: float
    updated_at: float
    last_activity_at: float
    assignee_id: int | None = None
    team_id: int | None = None
    priority: str | None = None
    snoozed_until: float | None = None
    first_reply_created_at: float | None = None
    waiting_since: float | None = None
    agent_last_seen_at: float | None = None
    assignee_last_seen_at: float | None = None
    contact_last_seen_at: float | None = None
    labels: list[str] = field(default_factory=list)
    additional_attributes: dict[str, Any] = field(default_factory=dict)
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    message_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Message:
    """A message; ``conversation_id`` is the conversation's DB id (rendered as display id)."""

    id: int
    account_id: int
    inbox_id: int
    conversation_id: int
    content: str | None
    message_type: MessageType
    created_at: float
    updated_at: float
    private: bool = False
    status: MessageStatus = "sent"
    sender_type: SenderType | None = None
    sender_id: int | None = None
    content_type: str = "text"
    source_id: str | None = None
    content_attributes: dict[str, Any] = field(default_factory=dict)
    additional_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Who a RoomChannel subscription resolved to (chatwoot.md §1.2 ``current_user``)."""

    kind: Literal["User", "Contact"]
    id: int
    account_id: int
    token: str
    streams: tuple[str, ...]
