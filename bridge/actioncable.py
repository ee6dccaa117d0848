"""Sans-I/O ActionCable client protocol (Rails ``actioncable-v1-json``).

Owns the wire frames of chatwoot.md §6 and a per-socket state machine; feed it text
with :meth:`CableClient.receive_text`, collect :meth:`events_received` and
:meth:`data_to_send`. It opens no socket, reads no clock (``now`` is passed in), never
logs and knows nothing about Chatwoot's payloads. Malformed input never raises: it
becomes a :class:`Violation` event.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict


SUBPROTOCOL = "actioncable-v1-json"
# Offered second, exactly as @rails/actioncable does, so a server that speaks none of
# ours answers with a protocol we can recognise and refuse (chatwoot.md §6.1).
UNSUPPORTED_SUBPROTOCOL = "actioncable-unsupported"

DisconnectReason = Literal["unauthorized", "invalid_request", "server_restart", "remote"]


# Wire shapes (server to client), chatwoot.md §6.2.


class WelcomeFrame(TypedDict):
    type: Literal["welcome"]


class PingFrame(TypedDict):
    type: Literal["ping"]
    message: int


class ConfirmFrame(TypedDict):
    type: Literal["confirm_subscription"]
    identifier: str


class RejectFrame(TypedDict):
    type: Literal["reject_subscription"]
    identifier: str


class DisconnectFrame(TypedDict, total=False):
    type: Literal["disconnect"]
    reason: str
    reconnect: bool


class MessageFrame(TypedDict):
    identifier: str
    message: Any


# Events handed to the driver.


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server accepted the connection; subscriptions are (re)sent now."""


@dataclass(frozen=True, slots=True)
class Ping:
    """A server heartbeat (every 3 s on Rails); ``at`` is the server's unix time."""

    at: int | None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A subscription was confirmed."""

    identifier: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A subscription was rejected (Chatwoot never does this; forks might)."""

    identifier: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The server is closing the connection; ``reconnect`` is its advice."""

    reason: str | None
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Message:
    """A broadcast for one of our subscriptions; ``payload`` is the decoded ``message``."""

    identifier: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Violation:
    """Input we could not use. ``reason`` is safe to log: it never quotes the frame,
    which may carry a pubsub token inside its identifier."""

    reason: str
    size: int


CableEvent = Welcome | Ping | Confirmed | Rejected | Disconnect | Message | Violation


class ConnectionState(enum.Enum):
    """Where one socket is in its life."""

    # The socket is open; the server has not said welcome yet.
    CONNECTING = "connecting"
    # Welcome received; subscriptions can be sent.
    OPEN = "open"
    # A disconnect frame arrived or the driver closed; nothing more is processed.
    CLOSED = "closed"


class SubscriptionState(enum.Enum):
    """Where one subscription is on this socket."""

    # Waiting for the welcome before the subscribe command can be sent.
    QUEUED = "queued"
    # Subscribe sent, no answer yet. Chatwoot answers a bad token with nothing at all.
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


_RECEIVING = (SubscriptionState.PENDING, SubscriptionState.CONFIRMED)
_WAITING = (SubscriptionState.QUEUED, SubscriptionState.PENDING)


def room_identifier(pubsub_token: str, account_id: int, user_id: int) -> str:
    """The RoomChannel identifier, byte-identical to the dashboard's.

    Key order and compact separators follow ``BaseActionCableConnector.js``; the server
    keys subscriptions by this exact string (chatwoot.md §1.2).
    """
    return json.dumps(
        {
            "channel": "RoomChannel",
            "pubsub_token": pubsub_token,
            "account_id": account_id,
            "user_id": user_id,
        },
        separators=(",", ":"),
    )


def encode_command(command: str, identifier: str, data: dict[str, Any] | None = None) -> str:
    """Encode a client command; ``data`` is itself sent as a JSON string (§6.3)."""
    frame: dict[str, str] = {"command": command, "identifier": identifier}
    if data is not None:
        frame["data"] = json.dumps(data, separators=(",", ":"))
    return json.dumps(frame, separators=(",", ":"))


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON; Python accepts them by default and would pass them
    # on to browsers that cannot parse them.
    raise ValueError(name)


# One decoder for every frame: ``json.loads`` with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(text: str | bytes) -> CableEvent:
    """Decode one server frame into an event; never raises."""
    size = len(text)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return Violation("frame is not UTF-8", size)
    try:
        frame = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return Violation("frame is not JSON", size)
    if not isinstance(frame, dict):
        return Violation("frame is not a JSON object", size)
    kind = frame.get("type")
    identifier = frame.get("identifier")
    if kind is None:
        if "message" not in frame:
            return Violation("frame has neither type nor message", size)
        if not isinstance(identifier, str):
            return Violation("message frame without a string identifier", size)
        return Message(identifier, frame["message"])
    if kind == "ping":
        at = frame.get("message")
        return Ping(at if isinstance(at, int) and not isinstance(at, bool) else None)
    if kind == "welcome":
        return Welcome()
    if kind in ("confirm_subscription", "reject_subscription"):
        if not isinstance(identifier, str):
            return Violation(f"{kind} without a string identifier", size)
        return Confirmed(identifier) if kind == "confirm_subscription" else Rejected(identifier)
    if kind == "disconnect":
        reason = frame.get("reason")
        reconnect = frame.get("reconnect", True)
        return Disconnect(
            reason if isinstance(reason, str) else None,
            reconnect if isinstance(reconnect, bool) else True,
        )
    return Violation("unknown frame type", size)


class CableClient:
    """State of one ActionCable socket, as seen by the client.

    A new instance is used for every socket: after a silent subscription failure the
    server keeps the dead subscription and ignores a repeat subscribe on the same
    socket, so recovery always needs a new socket (chatwoot.md §1.2).
    """

    def __init__(self, now: float) -> None:
        self.state = ConnectionState.CONNECTING
        self.opened_at = now
        # Last welcome or ping; the staleness rule of the JS ConnectionMonitor.
        self.last_heartbeat_at = now
        # Last frame of any kind; the gap fill window starts here.
        self.last_frame_at: float | None = None
        self.subscriptions: dict[str, SubscriptionState] = {}
        self._sent_at: dict[str, float] = {}
        self._events: list[CableEvent] = []
        self._outgoing: list[str] = []

    # Public methods

    def subscribe(self, identifier: str, now: float) -> None:
        """Ask for a subscription; sent at once when open, else after the welcome."""
        if identifier in self.subscriptions or self.state is ConnectionState.CLOSED:
            return
        if self.state is ConnectionState.OPEN:
            self._send_subscribe(identifier, now)
        else:
            # The clock starts now: a welcome that never comes (lost on a half-open path)
            # must time out like a confirm that never comes.
            self.subscriptions[identifier] = SubscriptionState.QUEUED
            self._sent_at[identifier] = now

    def perform(self, identifier: str, action: str) -> None:
        """Call a channel action, e.g. ``update_presence``; only on a confirmed subscription."""
        if self.subscriptions.get(identifier) is SubscriptionState.CONFIRMED:
            self._outgoing.append(encode_command("message", identifier, {"action": action}))

    def receive_text(self, text: str | bytes, now: float) -> None:
        """Feed one frame received from the server."""
        if self.state is ConnectionState.CLOSED:
            return
        event = decode(text)
        self.last_frame_at = now
        match event:
            case Message(identifier):  # first: nearly every frame is a broadcast
                # Rails may deliver a broadcast before the confirm: the channel's
                # ``subscribed`` broadcasts presence while its streams are still being
                # registered. Only an identifier we never sent is a violation.
                if self.subscriptions.get(identifier) not in _RECEIVING:
                    event = Violation("message for no subscription of ours", len(text))
            case Welcome():
                self.state = ConnectionState.OPEN
                self.last_heartbeat_at = now
                for identifier, state in list(self.subscriptions.items()):
                    if state is SubscriptionState.QUEUED:
                        self._send_subscribe(identifier, now)
            case Ping():
                self.last_heartbeat_at = now
            case Confirmed(identifier) | Rejected(identifier):
                if self.subscriptions.get(identifier) is not SubscriptionState.PENDING:
                    event = Violation(
                        f"{type(event).__name__.lower()} for no pending subscription", len(text)
                    )
                else:
                    self.subscriptions[identifier] = (
                        SubscriptionState.CONFIRMED
                        if isinstance(event, Confirmed)
                        else SubscriptionState.REJECTED
                    )
            case Disconnect():
                self.state = ConnectionState.CLOSED
            case Violation():
                pass
        self._events.append(event)

    def close(self) -> None:
        """The driver closed the socket; ignore anything that still arrives."""
        self.state = ConnectionState.CLOSED

    def events_received(self) -> list[CableEvent]:
        """Return and forget the events decoded since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Return and forget the text frames to write, in order."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    @property
    def all_confirmed(self) -> bool:
        """Every requested subscription is confirmed."""
        return bool(self.subscriptions) and all(
            state is SubscriptionState.CONFIRMED for state in self.subscriptions.values()
        )

    def overdue(self, now: float, timeout: float) -> list[str]:
        """Subscriptions asked for more than ``timeout`` seconds ago and still unanswered
        (queued behind a welcome that never came, or sent and never confirmed)."""
        return [
            identifier
            for identifier, state in self.subscriptions.items()
            if state in _WAITING and now - self._sent_at[identifier] > timeout
        ]

    def is_stale(self, now: float, threshold: float) -> bool:
        """No welcome or ping for longer than ``threshold`` seconds."""
        return now - self.last_heartbeat_at > threshold

    def next_deadline(self, stale_after: float, subscribe_timeout: float) -> float:
        """The earliest time at which :meth:`is_stale` or :meth:`overdue` can change."""
        deadlines: Iterable[float] = (
            self._sent_at[identifier] + subscribe_timeout
            for identifier, state in self.subscriptions.items()
            if state in _WAITING
        )
        return min([self.last_heartbeat_at + stale_after, *deadlines])

    # Private methods

    def _send_subscribe(self, identifier: str, now: float) -> None:
        self.subscriptions[identifier] = SubscriptionState.PENDING
        self._sent_at[identifier] = now
        self._outgoing.append(encode_command("subscribe", identifier))
