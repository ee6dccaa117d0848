"""Chatwoot payloads to bridge events: the only module that knows Chatwoot's shapes.

Follows chatwoot.md §2.3-2.7: which field holds the conversation's display id, which
of Chatwoot's mixed timestamps (unix int, unix float, ISO string) dates each event,
and where ``pubsub_token`` leaks. Pure functions; unknown event names pass through
unchanged, and nothing here raises on bad input: it returns :class:`Dropped`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.events import (
    CONVERSATION_STATE_EVENTS,
    KNOWN_EVENTS,
    AccountId,
    ConversationId,
    Event,
    Source,
)


DropReason = Literal["malformed", "no_account", "not_bridged", "other_subscription", "ephemeral"]

# Keys removed wherever they appear in a payload: Chatwoot serialises whole
# ContactInbox records into conversation push data (chatwoot.md §2.5).
SECRET_KEYS = frozenset({"pubsub_token"})


@dataclass(frozen=True, slots=True)
class Dropped:
    """A payload that does not become an event, and why (safe to log: no payload)."""

    reason: DropReason
    detail: str
    name: str | None = None


# Timestamps outside these (2000-01-01, 2100-01-01) are garbage, not times: a year-10000
# value would even fail to format (found by the fuzzer).
EARLIEST = 946_684_800.0
LATEST = 4_102_444_800.0


def parse_time(value: object) -> float | None:
    """Chatwoot's mixed timestamps as unix seconds.

    Unix ints (``created_at``), floats (conversation ``updated_at``) and ISO-8601
    strings (message ``updated_at``, ``snoozed_until``) are all accepted; ``0`` is
    Chatwoot's spelling of null (chatwoot.md §2.7).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or not EARLIEST <= value <= LATEST:
            return None
        return float(value)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        ts = moment.timestamp()
        return ts if EARLIEST <= ts <= LATEST else None
    return None


def as_id(value: object) -> int | None:
    """A positive integer id; Chatwoot sends ints, some forks send digit strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        parsed = int(value)
        return parsed if parsed > 0 else None
    return None


def scrub(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` without any :data:`SECRET_KEYS`, at any depth.

    Iterative, so a deeply nested payload cannot exhaust the stack. Each container is
    copied whole (in C) and then only its nested containers are visited.
    """
    root = dict(data)
    stack: list[dict[str, Any] | list[Any]] = [root]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key in SECRET_KEYS:
                if key in node:
                    del node[key]
            items: Iterable[tuple[Any, Any]] = node.items()
        else:
            items = enumerate(node)
        for key, value in items:
            kind = type(value)
            if kind in _SCALARS:  # the common case, without the slower ABC checks below
                continue
            if kind is dict or isinstance(value, Mapping):
                nested: dict[str, Any] | list[Any] = dict(value)
            elif isinstance(value, list):
                nested = list(value)
            else:
                continue
            node[key] = nested
            stack.append(nested)
    return root


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _dig(data: Mapping[str, Any], *path: str) -> object:
    node: object = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


CONTACT_FIELDS = (
    "name",
    "email",
    "phone_number",
    "identifier",
    "thumbnail",
    "blocked",
    "additional_attributes",
    "custom_attributes",
)

# Per event: (conversation display id, inbox id, occurred_at) extractors.
Extract = Callable[[Mapping[str, Any]], object]


@dataclass(frozen=True, slots=True)
class _Rule:
    conversation: Extract
    inbox: Extract
    occurred: Extract


def _none(_: Mapping[str, Any]) -> object:
    return None


_MESSAGE = _Rule(
    conversation=lambda d: d.get("conversation_id"),
    inbox=lambda d: d.get("inbox_id"),
    occurred=lambda d: d.get("created_at"),
)
_MESSAGE_UPDATED = _Rule(
    conversation=lambda d: d.get("conversation_id"),
    inbox=lambda d: d.get("inbox_id"),
    occurred=lambda d: d.get("updated_at") or d.get("created_at"),
)
_CONVERSATION = _Rule(
    conversation=lambda d: d.get("id"),
    inbox=lambda d: d.get("inbox_id"),
    occurred=lambda d: d.get("updated_at") or d.get("last_activity_at"),
)
_TYPING = _Rule(
    conversation=lambda d: _dig(d, "conversation", "id"),
    inbox=lambda d: _dig(d, "conversation", "inbox_id"),
    occurred=_none,
)


def _notification_conversation(d: Mapping[str, Any]) -> object:
    # primary_actor_id is the conversation's database id; its push data carries the
    # display id that everything else uses.
    if _dig(d, "notification", "primary_actor_type") != "Conversation":
        return None
    return _dig(d, "notification", "primary_actor", "id")


_NOTIFICATION = _Rule(
    conversation=_notification_conversation,
    inbox=lambda d: _dig(d, "notification", "primary_actor", "inbox_id"),
    occurred=lambda d: _dig(d, "notification", "created_at"),
)
# An update (read, snoozed) carries no time of its own: read_at is set only for reads
# and last_activity_at belongs to the notification, not to this change.
_NOTIFICATION_UPDATED = _Rule(
    conversation=_notification_conversation, inbox=_NOTIFICATION.inbox, occurred=_none
)
_NO_CONVERSATION = _Rule(conversation=_none, inbox=_none, occurred=_none)

RULES: dict[str, _Rule] = {
    "message.created": _MESSAGE,
    "first.reply.created": _MESSAGE,
    "message.updated": _MESSAGE_UPDATED,
    **dict.fromkeys(CONVERSATION_STATE_EVENTS, _CONVERSATION),
    "conversation.mentioned": _CONVERSATION,
    "conversation.typing_on": _TYPING,
    "conversation.typing_off": _TYPING,
    "notification.created": _NOTIFICATION,
    "notification.updated": _NOTIFICATION_UPDATED,
    "notification.deleted": _Rule(_notification_conversation, _none, _none),
    "copilot.message.created": _Rule(_none, _none, lambda d: d.get("created_at")),
}


def _dedupe_key(
    name: str,
    account_id: int,
    conversation_id: int | None,
    data: Mapping[str, Any],
    version: float | None,
) -> str | None:
    """Equal for the same fact however it arrived (cable, REST, webhook)."""
    if name in ("message.created", "first.reply.created"):
        message_id = as_id(data.get("id"))
        return f"{name}:{message_id}" if message_id else None
    if name == "message.updated":
        message_id = as_id(data.get("id"))
        updated = data.get("updated_at")
        if message_id and isinstance(updated, str):
            return f"{name}:{message_id}:{updated}"
        return None
    if name in CONVERSATION_STATE_EVENTS and conversation_id and version is not None:
        return f"{name}:{account_id}:{conversation_id}:{version!r}"
    if name == "contact.created":
        contact_id = as_id(data.get("id"))
        return f"{name}:{account_id}:{contact_id}" if contact_id else None
    if name == "contact.updated":
        # Push and webhook agree on these fields; an identical repeat tells nothing new.
        contact_id = as_id(data.get("id"))
        if contact_id is None:
            return None
        visible = json.dumps([data.get(k) for k in CONTACT_FIELDS], sort_keys=True, default=str)
        digest = hashlib.blake2b(visible.encode(), digest_size=8).hexdigest()
        return f"{name}:{account_id}:{contact_id}:{digest}"
    return None


def build(
    name: str,
    data: Mapping[str, Any],
    *,
    source: Source,
    received_at: float,
    accounts: Container[int] | None,
    via_account: int | None = None,
) -> Event | Dropped:
    """Normalise one event in Chatwoot's push shape, from any source.

    Args:
        name: Chatwoot's event name (dotted).
        data: the push-shaped payload.
        source: where it came from.
        received_at: when the bridge received it.
        accounts: the bridged account ids; None bridges every account.
        via_account: the account of the cable subscription it arrived on, if any.
    """
    account_id = as_id(data.get("account_id"))
    if account_id is None:
        return Dropped("no_account", "data.account_id is missing or not an id", name)
    # The pubsub token is per user, not per account: an agent in several accounts gets
    # every account's events on one stream (chatwoot.md §2.2).
    if accounts is not None and account_id not in accounts:
        return Dropped("not_bridged", f"account {account_id} is not bridged", name)
    # Every subscription streams the user's token, so a broadcast to the token arrives
    # once per subscription; the copy on the event's own account subscription is kept.
    if via_account is not None and account_id != via_account:
        return Dropped("other_subscription", f"copy of an account {account_id} event", name)
    rule = RULES.get(name, _NO_CONVERSATION)
    conversation_id = as_id(rule.conversation(data))
    version = None
    if name in CONVERSATION_STATE_EVENTS:
        updated = data.get("updated_at")
        version = parse_time(updated)
    return Event(
        name=name,
        account_id=AccountId(account_id),
        conversation_id=ConversationId(conversation_id) if conversation_id else None,
        source=source,
        occurred_at=parse_time(rule.occurred(data)),
        received_at=received_at,
        data=scrub(data),
        dedupe_key=_dedupe_key(name, account_id, conversation_id, data, version),
        version=version,
        inbox_id=as_id(rule.inbox(data)),
        known=name in KNOWN_EVENTS,
    )


def from_cable(
    payload: object,
    *,
    received_at: float,
    accounts: Container[int] | None,
    via_account: int | None = None,
) -> Event | Dropped:
    """Normalise the ``message`` of an ActionCable broadcast: ``{"event": …, "data": {…}}``.

    ``via_account`` is the account of the RoomChannel subscription the frame came on.
    """
    if not isinstance(payload, Mapping):
        return Dropped("malformed", "broadcast message is not an object")
    name = payload.get("event")
    data = payload.get("data")
    if not isinstance(name, str) or not name or len(name) > 200:
        return Dropped("malformed", "broadcast without an event name")
    if not isinstance(data, Mapping):
        return Dropped("malformed", "broadcast data is not an object", name)
    return build(
        name,
        data,
        source="cable",
        received_at=received_at,
        accounts=accounts,
        via_account=via_account,
    )


# REST shapes (chatwoot.md §4.3, §4.4) mapped to the push shapes (§2.4, §2.5), so that
# clients see one shape whatever the source.

SENDER_TYPES = {
    "contact": "Contact",
    "user": "User",
    "agent_bot": "AgentBot",
    "captain_assistant": "Captain::Assistant",
}
# REST conversation fields the push shape does not have.
_REST_ONLY_CONVERSATION = frozenset({"uuid", "muted", "last_non_activity_message"})


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def message_from_rest(
    account_id: int, message: Mapping[str, Any], conversation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A REST message (a subset) in the push shape of ``message.created``.

    What REST does not carry is derived where Chatwoot derives it (``sender_type`` from
    the sender, ``conversation{}`` from the conversation) and otherwise given the value
    a fresh message has: ``updated_at`` is the creation time, attributes are empty.
    """
    push = dict(message)
    push["account_id"] = account_id
    sender = message.get("sender")
    if isinstance(sender, Mapping):
        kind = sender.get("type")
        push.setdefault("sender_type", SENDER_TYPES.get(kind) if isinstance(kind, str) else None)
        push.setdefault("sender_id", as_id(sender.get("id")))
    else:
        push.setdefault("sender_type", None)
        push.setdefault("sender_id", None)
    push.setdefault("updated_at", _iso(parse_time(message.get("created_at"))))
    push.setdefault("additional_attributes", {})
    push.setdefault("external_source_ids", {})
    push.setdefault("sentiment", {})
    push.setdefault("processed_message_content", message.get("content"))
    if "conversation" not in push and conversation is not None:
        meta = conversation.get("meta")
        assignee = meta.get("assignee") if isinstance(meta, Mapping) else None
        push["conversation"] = {
            "assignee_id": as_id(assignee.get("id")) if isinstance(assignee, Mapping) else None,
            "unread_count": conversation.get("unread_count"),
            "last_activity_at": conversation.get("last_activity_at"),
            "contact_inbox": {"source_id": None},
        }
    return push


def conversation_from_rest(account_id: int, conversation: Mapping[str, Any]) -> dict[str, Any]:
    """A REST conversation in the push shape of the conversation events (chatwoot.md §2.5).

    ``channel`` moves out of ``meta``; ``first_reply_created_at`` becomes ISO (null for
    0); ``messages`` holds the last chat message as push does (public, not activity),
    which REST gives as ``last_non_activity_message``; REST has no ``contact_inbox``.
    """
    push = {k: v for k, v in conversation.items() if k not in _REST_ONLY_CONVERSATION}
    push["account_id"] = account_id
    meta = dict(conversation.get("meta") or {})
    push["channel"] = meta.pop("channel", None)
    push["meta"] = meta
    first_reply = conversation.get("first_reply_created_at")
    if not isinstance(first_reply, str):
        push["first_reply_created_at"] = _iso(parse_time(first_reply))
    last = conversation.get("last_non_activity_message")
    push["messages"] = (
        [message_from_rest(account_id, last, conversation)]
        if isinstance(last, Mapping) and not last.get("private")
        else []
    )
    push.setdefault("contact_inbox", None)
    return push


# Webhooks (chatwoot.md §5): flat payloads with an underscore ``event``, string
# ``message_type``, ISO ``created_at``; mapped to the push shapes too.

MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}
EPHEMERAL = frozenset({"conversation.typing_on", "conversation.typing_off"})
_WEBHOOK_ONLY = frozenset({"event", "changed_attributes", "account", "avatar"})


def webhook_account(payload: Mapping[str, Any]) -> int | None:
    """The account a webhook belongs to, where the payload says it."""
    candidates = [
        _dig(payload, "account", "id"),
        payload.get("account_id"),
        _dig(payload, "conversation", "account_id"),
    ]
    for holder in (payload, payload.get("conversation")):
        messages = holder.get("messages") if isinstance(holder, Mapping) else None
        if isinstance(messages, list) and messages and isinstance(messages[0], Mapping):
            candidates.append(messages[0].get("account_id"))
    for candidate in candidates:
        found = as_id(candidate)
        if found is not None:
            return found
    return None


def _webhook_message(account_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    conversation = payload.get("conversation")
    conv = conversation if isinstance(conversation, Mapping) else {}
    message_id = as_id(payload.get("id"))
    # The conversation's push data carries the last chat message in the push shape:
    # when it is this message, it is the most faithful copy there is.
    for candidate in conv.get("messages") or []:
        if isinstance(candidate, Mapping) and as_id(candidate.get("id")) == message_id:
            push = dict(candidate)
            push.update((k, payload[k]) for k in ("content", "content_attributes") if k in payload)
            push["account_id"] = account_id
            return push
    kind = payload.get("message_type")
    sender = payload.get("sender")
    push = {
        k: v
        for k, v in payload.items()
        if k not in _WEBHOOK_ONLY and k not in ("inbox", "conversation")
    }
    push["account_id"] = account_id
    push["message_type"] = MESSAGE_TYPES.get(kind, kind) if isinstance(kind, str) else kind
    created = parse_time(payload.get("created_at"))
    push["created_at"] = int(created) if created is not None else None
    push.setdefault("updated_at", _iso(created))
    push["inbox_id"] = as_id(_dig(payload, "inbox", "id")) or as_id(conv.get("inbox_id"))
    push["conversation_id"] = as_id(conv.get("id"))
    if isinstance(sender, Mapping):
        sender_push = {k: v for k, v in sender.items() if k not in ("account", "avatar")}
        sender_push.setdefault("type", "user" if push["message_type"] in (1, 3) else "contact")
        push["sender"] = sender_push
    push = message_from_rest(account_id, push, conv or None)
    if conv:
        push["conversation"] = {
            "assignee_id": as_id(_dig(conv, "meta", "assignee", "id")),
            "unread_count": conv.get("unread_count"),
            "last_activity_at": conv.get("last_activity_at"),
            "contact_inbox": {"source_id": _dig(conv, "contact_inbox", "source_id")},
        }
    return push


def from_webhook(
    payload: object,
    *,
    received_at: float,
    accounts: Container[int] | None,
    account_hint: int | None = None,
    ephemeral: bool = True,
) -> Event | Dropped:
    """Normalise a Chatwoot webhook body.

    Args:
        payload: the decoded JSON body.
        received_at: when it arrived.
        accounts: the bridged accounts.
        account_hint: the account named in the webhook URL (conversation payloads carry none).
        ephemeral: whether typing events are taken from webhooks (not when the cable, which
            delivers them first, is on: they have no key to deduplicate them by).
    """
    if not isinstance(payload, Mapping):
        return Dropped("malformed", "webhook body is not an object")
    raw = payload.get("event")
    if not isinstance(raw, str) or not raw or len(raw) > 100:
        return Dropped("malformed", "webhook without an event name")
    name = raw.replace("_", ".", 1) if raw.count("_") else raw
    if name in EPHEMERAL and not ephemeral:
        return Dropped("ephemeral", "typing comes from the cable", name)
    account_id = account_hint or webhook_account(payload)
    if account_id is None:
        return Dropped(
            "no_account", "the webhook names no account: use /webhooks/chatwoot/<account id>", name
        )
    if name.startswith("message."):
        data = _webhook_message(account_id, payload)
    elif name in EPHEMERAL:
        data = {k: payload.get(k) for k in ("conversation", "user", "is_private")}
        user = data.get("user")
        if isinstance(user, Mapping):
            data["user"] = {k: v for k, v in user.items() if k not in ("account", "avatar")}
            data["user"].setdefault("type", "contact")
    elif name.startswith("contact."):
        data = {k: v for k, v in payload.items() if k not in _WEBHOOK_ONLY}
        data.setdefault("type", "contact")
    else:
        data = {k: v for k, v in payload.items() if k not in _WEBHOOK_ONLY}
    data["account_id"] = account_id
    return build(name, data, source="webhook", received_at=received_at, accounts=accounts)
