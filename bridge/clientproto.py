"""The local socket protocol (protocol.md §2): filters, client frames, server frames.

Pure: parses what a client sends (query string, text frames) into typed values or a
:class:`ClientError` with a code from protocol.md, and encodes the server's control
frames. The fan-out path uses :meth:`Filter.matches`, so it is kept cheap.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.events import Event


PROTOCOL_VERSION = 1
MAX_LIST_ITEMS = 1000
MAX_GLOBS = 50
MAX_GLOB_LENGTH = 100
MAX_REF_LENGTH = 100

ErrorCode = Literal[
    "bad_request", "unauthorized", "forbidden", "rate_limited", "unsupported", "upstream_error"
]
RequestKind = Literal["conversations", "messages", "send", "typing", "read"]
STATUSES = ("open", "resolved", "pending", "snoozed", "all")
MAX_CONTENT = 20_000
UpstreamStateName = Literal["live", "connecting", "polling", "down"]


class ClientError(Exception):
    """A client sent something we cannot accept; becomes an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str, ref: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """A conversation named in a filter: ``42`` in any account, or ``1:42``."""

    display_id: int
    account_id: int | None = None

    def __str__(self) -> str:
        if self.account_id is None:
            return str(self.display_id)
        return f"{self.account_id}:{self.display_id}"


# One shared empty set for every filter that names no conversation (memory per client).
_NO_REFS: frozenset[tuple[int, int | None]] = frozenset()


@dataclass(frozen=True, slots=True)
class Filter:
    """What a client wants; ``None`` for a dimension means everything."""

    accounts: frozenset[int] | None = None
    conversations: frozenset[ConversationRef] | None = None
    events: tuple[str, ...] | None = None
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _names: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    # Precomputed for ``matches``, which runs once per client per event: the conversations
    # as plain tuples (cheaper to build and hash than refs), and whether it takes everything.
    _refs: frozenset[tuple[int, int | None]] = field(
        default=_NO_REFS, init=False, compare=False, repr=False
    )
    everything: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.conversations:
            refs = frozenset((ref.display_id, ref.account_id) for ref in self.conversations)
            object.__setattr__(self, "_refs", refs)
        everything = self.accounts is None and self.conversations is None and self.events is None
        object.__setattr__(self, "everything", everything)

    @classmethod
    def make(
        cls,
        accounts: frozenset[int] | None = None,
        conversations: frozenset[ConversationRef] | None = None,
        events: tuple[str, ...] | None = None,
    ) -> Filter:
        """Build a filter and compile its event globs once."""
        pattern = None
        if events is not None:
            pattern = re.compile("|".join(fnmatch.translate(glob) for glob in events) or "(?!)")
        return cls(accounts, conversations, events, pattern)

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes this filter."""
        if self.accounts is not None and event.account_id not in self.accounts:
            return False
        if self.conversations is not None:
            cid = event.conversation_id
            if cid is None:
                return False
            refs = self._refs
            if (cid, None) not in refs and (cid, event.account_id) not in refs:
                return False
        if self._pattern is not None:
            known = self._names.get(event.name)
            if known is None:
                known = self._pattern.fullmatch(event.name) is not None
                if len(self._names) < 1000:
                    self._names[event.name] = known
            return known
        return True

    def to_wire(self) -> dict[str, Any]:
        """The filter as the ``subscribed`` frame echoes it."""
        return {
            "accounts": None if self.accounts is None else sorted(self.accounts),
            "conversations": None
            if self.conversations is None
            else sorted(str(ref) for ref in self.conversations),
            "events": None if self.events is None else list(self.events),
        }


@dataclass(frozen=True, slots=True)
class Resume:
    """A ``since=<epoch>:<seq>`` request."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    """Client ``{"type":"ping"}``."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Client ``subscribe``: replaces the connection's filter."""

    ref: object
    filter: Filter


@dataclass(frozen=True, slots=True)
class Request:
    """A request answered by a ``result`` (or ``error``) frame with the same ``ref``:
    history (``conversations``, ``messages``) and commands (``send``, ``typing``, ``read``)."""

    kind: RequestKind
    ref: object
    account_id: int
    conversation_id: int | None = None
    # conversations: status, page; messages: before; send: content, echo_id, private;
    # typing: on, private.
    status: str = "open"
    page: int = 1
    before: int | None = None
    content: str = ""
    echo_id: str | None = None
    private: bool = False
    on: bool = True


ClientFrame = Ping | Subscribe | Request


# Parsing


def _parse_int(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise ClientError("bad_request", f"{what}: {text[:40]!r} is not a positive id")
    return int(text)


def _parse_id(item: object, what: str) -> int:
    if isinstance(item, int) and not isinstance(item, bool):
        return _parse_int(str(item), what)
    if isinstance(item, str):
        return _parse_int(item, what)
    raise ClientError("bad_request", f"{what}: items must be positive ids")


def _parse_conversation(item: object) -> ConversationRef:
    if isinstance(item, int) and not isinstance(item, bool):
        return ConversationRef(_parse_int(str(item), "conversations"))
    if isinstance(item, str):
        account, sep, display = item.partition(":")
        if sep:
            return ConversationRef(
                _parse_int(display, "conversations"), _parse_int(account, "conversations")
            )
        return ConversationRef(_parse_int(item, "conversations"))
    raise ClientError("bad_request", "conversations: items must be ids or 'account:id'")


def _parse_glob(item: object) -> str:
    if not isinstance(item, str) or not item or len(item) > MAX_GLOB_LENGTH:
        raise ClientError("bad_request", f"events: globs must be 1 to {MAX_GLOB_LENGTH} characters")
    if not re.fullmatch(r"[A-Za-z0-9_.*?\[\]!:-]+", item):
        raise ClientError("bad_request", f"events: {item[:40]!r} is not an event glob")
    return item


def _limit(items: list[Any], what: str, most: int) -> list[Any]:
    if len(items) > most:
        raise ClientError("bad_request", f"{what}: at most {most} items")
    return items


def _split(raw: str) -> list[str]:
    return [part for part in raw.split(",") if part.strip()]


def filter_from_lists(
    accounts: list[Any] | None, conversations: list[Any] | None, events: list[Any] | None
) -> Filter:
    """Validate filter lists from a query string or a subscribe frame."""
    return Filter.make(
        accounts=None
        if accounts is None
        else frozenset(
            _parse_id(a, "accounts") for a in _limit(accounts, "accounts", MAX_LIST_ITEMS)
        ),
        conversations=None
        if conversations is None
        else frozenset(
            _parse_conversation(c) for c in _limit(conversations, "conversations", MAX_LIST_ITEMS)
        ),
        events=None
        if events is None
        else tuple(dict.fromkeys(_parse_glob(e) for e in _limit(events, "events", MAX_GLOBS))),
    )


def parse_since(raw: str) -> Resume:
    """``<epoch>:<seq>`` as sent in ``since`` or SSE's ``Last-Event-ID``."""
    epoch, sep, seq = raw.strip().rpartition(":")
    if not sep or not epoch or len(epoch) > 64 or not seq.isdigit() or len(seq) > 18:
        raise ClientError("bad_request", "since: expected <epoch>:<seq>")
    return Resume(epoch, int(seq))


def parse_query(query: Mapping[str, str]) -> tuple[Filter, Resume | None]:
    """The filter and resume point of a ``/ws`` or ``/events`` request."""

    def listed(name: str) -> list[str] | None:
        raw = query.get(name)
        return None if raw is None else _split(raw)

    flt = filter_from_lists(listed("accounts"), listed("conversations"), listed("events"))
    since = query.get("since")
    return flt, None if not since else parse_since(since)


def _ref(frame: Mapping[str, Any]) -> object:
    ref = frame.get("ref")
    if ref is None or (isinstance(ref, int | float) and not isinstance(ref, bool)):
        return ref
    if isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH:
        return ref
    return None


def _optional_list(frame: Mapping[str, Any], key: str, ref: object) -> list[Any] | None:
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ClientError("bad_request", f"{key}: must be a list or null", ref)
    return value


def parse_frame(text: str | bytes) -> ClientFrame:
    """Parse one client text frame.

    Raises:
        ClientError: ``bad_request`` for malformed frames, ``unsupported`` for unknown types.
    """
    if isinstance(text, bytes):
        raise ClientError("bad_request", "binary frames are not supported; send JSON text")
    try:
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ClientError("bad_request", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ClientError("bad_request", "frame must be a JSON object")
    ref = _ref(frame)
    kind = frame.get("type")
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        try:
            flt = filter_from_lists(
                _optional_list(frame, "accounts", ref),
                _optional_list(frame, "conversations", ref),
                _optional_list(frame, "events", ref),
            )
        except ClientError as exc:
            raise ClientError(exc.code, exc.message, ref) from None
        return Subscribe(ref, flt)
    if kind in ("conversations", "messages", "send", "typing", "read"):
        return _request(kind, frame, ref)
    if not isinstance(kind, str):
        raise ClientError("bad_request", "frame needs a string 'type'", ref)
    raise ClientError("unsupported", f"unknown frame type {kind[:40]!r}", ref)


def _positive(frame: Mapping[str, Any], key: str, ref: object, *, required: bool) -> int | None:
    value = frame.get(key)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**53:
        return value
    raise ClientError("bad_request", f"{key}: a positive integer is required", ref)


def _required(frame: Mapping[str, Any], key: str, ref: object) -> int:
    value = _positive(frame, key, ref, required=True)
    if value is None:  # pragma: no cover - required=True raises instead
        raise ClientError("bad_request", f"{key}: a positive integer is required", ref)
    return value


def _flag(frame: Mapping[str, Any], key: str, ref: object, default: bool) -> bool:
    value = frame.get(key, default)
    if not isinstance(value, bool):
        raise ClientError("bad_request", f"{key}: must be true or false", ref)
    return value


def _request(kind: RequestKind, frame: Mapping[str, Any], ref: object) -> Request:
    account = _required(frame, "account_id", ref)
    if kind == "conversations":
        status = frame.get("status", "open")
        if status not in STATUSES:
            raise ClientError("bad_request", f"status: one of {', '.join(STATUSES)}", ref)
        page = _positive(frame, "page", ref, required=False) or 1
        return Request(kind, ref, account, status=status, page=page)
    conversation = _required(frame, "conversation_id", ref)
    if kind == "messages":
        return Request(
            kind, ref, account, conversation, before=_positive(frame, "before", ref, required=False)
        )
    if kind == "send":
        content, echo = frame.get("content"), frame.get("echo_id")
        if not isinstance(content, str) or not content.strip() or len(content) > MAX_CONTENT:
            raise ClientError("bad_request", f"content: 1 to {MAX_CONTENT} characters", ref)
        if echo is not None and (not isinstance(echo, str) or not 0 < len(echo) <= 100):
            raise ClientError("bad_request", "echo_id: a string of at most 100 characters", ref)
        return Request(
            kind,
            ref,
            account,
            conversation,
            content=content,
            echo_id=echo,
            private=_flag(frame, "private", ref, False),
        )
    if kind == "typing":
        return Request(
            kind,
            ref,
            account,
            conversation,
            on=_flag(frame, "on", ref, True),
            private=_flag(frame, "private", ref, False),
        )
    return Request(kind, ref, account, conversation)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


# Server frames


def _dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def welcome_frame(
    epoch: str,
    seq: int,
    upstream: UpstreamStateName,
    replayed: int,
    *,
    accounts: list[int] | None = None,
    client: Mapping[str, Any] | None = None,
) -> str:
    """``welcome``: always the first frame; ``accounts`` (the bridged accounts the client may
    see) and ``client`` (its name and allowed commands) are additions to protocol v1."""
    frame: dict[str, Any] = {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "epoch": epoch,
        "seq": seq,
        "upstream": upstream,
        "replayed": replayed,
    }
    if accounts is not None:
        frame["accounts"] = accounts
    if client is not None:
        frame["client"] = client
    return _dumps(frame)


def reset_frame(reason: str, epoch: str, seq: int) -> str:
    """``reset``: the client cannot resume and must refetch its state."""
    return _dumps({"type": "reset", "reason": reason, "epoch": epoch, "seq": seq})


def status_frame(upstream: UpstreamStateName, since: str, reason: str) -> str:
    """``status``: the upstream state changed."""
    return _dumps({"type": "status", "upstream": upstream, "since": since, "reason": reason})


def error_frame(code: ErrorCode, message: str, ref: object = None) -> str:
    """``error``: a client frame was refused."""
    return _dumps({"type": "error", "code": code, "message": message, "ref": ref})


def result_frame(ref: object, data: Mapping[str, Any]) -> str:
    """``result``: the answer to a request frame."""
    return _dumps({"type": "result", "ref": ref, "ok": True, "data": data})


def subscribed_frame(ref: object, flt: Filter) -> str:
    """``subscribed``: the new filter is in force."""
    return _dumps({"type": "subscribed", "ref": ref, "filter": flt.to_wire()})


PONG_FRAME = _dumps({"type": "pong"})
