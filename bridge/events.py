"""The normalised bridge event and its wire envelope (protocol.md §2).

One immutable dataclass for every Chatwoot event: the envelope is the same for all of
them and ``data`` keeps Chatwoot's push shape, so a class per event name would only
repeat it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, NewType


AccountId = NewType("AccountId", int)
ConversationId = NewType("ConversationId", int)  # Chatwoot's per-account display id

Source = Literal["cable", "poll", "webhook"]
SOURCES: tuple[Source, ...] = ("cable", "poll", "webhook")

# Events that carry a whole conversation (push data) and replace the client's copy of
# it; the older of two such events must not be published (chatwoot.md §2.5, PR #10876).
CONVERSATION_STATE_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.read",
        "conversation.status_changed",
        "conversation.updated",
        "assignee.changed",
        "team.changed",
        "conversation.contact_changed",
    }
)

# Every name Chatwoot broadcasts over ActionCable (chatwoot.md §2.3). Others pass
# through unchanged and are counted as unknown.
KNOWN_EVENTS = frozenset(
    {
        "message.created",
        "message.updated",
        "first.reply.created",
        *CONVERSATION_STATE_EVENTS,
        "conversation.typing_on",
        "conversation.typing_off",
        "conversation.mentioned",
        "contact.created",
        "contact.updated",
        "contact.merged",
        "contact.deleted",
        "notification.created",
        "notification.updated",
        "notification.deleted",
        "account.cache_invalidated",
        "copilot.message.created",
        "presence.update",
    }
)


def format_time(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC, always with milliseconds (truncated) and a ``Z``.

    One fixed width, so clients can compare the strings as well as parse them.
    """
    second = math.floor(ts) if math.isfinite(ts) else 0
    prefix = _SECONDS.get(second)
    if prefix is None:
        try:
            moment = datetime.fromtimestamp(second, UTC)
        except (OverflowError, OSError, ValueError):
            moment = datetime.fromtimestamp(0, UTC)  # never reached with parsed times
        if len(_SECONDS) >= 64:
            _SECONDS.clear()  # bounded: events cluster around "now"
        prefix = _SECONDS[second] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
    # microseconds as datetime rounds them, then truncated to milliseconds
    millis = min(999, max(0, round((ts - second) * 1e6) // 1000)) if math.isfinite(ts) else 0
    return f"{prefix}{millis:03d}Z"


# Formatted seconds, reused: most events of a second share them (the hot path formats two
# times per event).
_SECONDS: dict[int, str] = {}


@dataclass(slots=True)
class Event:
    """One Chatwoot event, normalised.

    Attributes:
        name: Chatwoot's own event name, e.g. ``message.created``.
        account_id: the account it belongs to (``data.account_id``).
        conversation_id: the conversation's display id, or None.
        source: where the bridge learnt of it.
        occurred_at: Chatwoot's own time of the event, unix seconds, or None.
        received_at: when the bridge received it, unix seconds.
        data: Chatwoot's push shape with every ``pubsub_token`` removed.
        dedupe_key: equal for two deliveries of the same fact, whatever their source.
        version: for conversation state events, Chatwoot's float ``updated_at``.
        inbox_id: the inbox, when the payload names it (for scopes and filters).
    """

    # Final fields rather than ``frozen=True``: as immutable to mypy, while building one
    # (twice per event on the hot path) costs a plain store per field, not a call to
    # ``object.__setattr__``.
    name: Final[str]
    account_id: Final[AccountId]
    conversation_id: Final[ConversationId | None]
    source: Final[Source]
    occurred_at: Final[float | None]
    received_at: Final[float]
    data: Final[dict[str, Any]]
    dedupe_key: Final[str | None] = None
    version: Final[float | None] = None
    inbox_id: Final[int | None] = None
    known: Final[bool] = field(default=True, compare=False)

    def without_data(self, data: dict[str, Any]) -> Event:
        """The same event with other ``data`` (cheaper than ``dataclasses.replace``)."""
        return Event(
            self.name,
            self.account_id,
            self.conversation_id,
            self.source,
            self.occurred_at,
            self.received_at,
            data,
            self.dedupe_key,
            self.version,
            self.inbox_id,
            self.known,
        )

    def to_wire(self, epoch: str, seq: int) -> dict[str, Any]:
        """The ``event`` frame of protocol.md §2."""
        occurred = self.occurred_at if self.occurred_at is not None else self.received_at
        return {
            "type": "event",
            "epoch": epoch,
            "seq": seq,
            "event": self.name,
            "account_id": self.account_id,
            "conversation_id": self.conversation_id,
            "source": self.source,
            "occurred_at": format_time(occurred),
            "received_at": format_time(self.received_at),
            "data": self.data,
        }


@dataclass(slots=True)
class Entry:
    """An event with its place in the log and its frame, encoded once for every client.

    Attributes:
        seq: position in the epoch, growing by one per published event.
        event: the event.
        text: the JSON ``event`` frame, shared by every client and by replay.
        epoch: the event log's epoch (SSE ids name it).
    """

    seq: int
    event: Event
    text: str
    # Encodings for other transports, filled lazily and shared (WebSocket frame, SSE).
    cache: dict[str, bytes] = field(default_factory=dict)
    epoch: str = ""

    @classmethod
    def build(cls, epoch: str, seq: int, event: Event) -> Entry:
        """Encode the frame once."""
        wire = event.to_wire(epoch, seq)
        try:
            text = _ENCODER.encode(wire)
        except ValueError:
            # A number too large for a float (``1e400`` upstream) became infinity, which
            # JSON cannot carry (browsers reject ``Infinity``): it goes out as null.
            text = _ENCODER.encode(_finite(wire))
        return cls(seq, event, text, epoch=epoch)


# Compact UTF-8 frames; one encoder for all (``json.dumps`` with arguments builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every infinite or NaN float replaced by None (decoded JSON is
    shallow enough to recurse: the decoder refuses deeper nesting)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
