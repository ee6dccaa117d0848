"""``chatwoot-bridge tail``: print the events of a running bridge.

Connects to the local ``/ws`` with filters, prints one line per frame (or the raw
JSON), and resumes with ``since`` after a reconnect, as any client should.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import connect

from bridge.retry import Backoff


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What to print and when to stop."""

    url: str
    accounts: str | None = None
    conversations: str | None = None
    events: str | None = None
    since: str | None = None
    raw: bool = False
    # Stop after this many events (None: never).
    count: int | None = None
    # Give up reconnecting after this many failures in a row (None: never).
    max_retries: int | None = None


def ws_url(opts: TailOptions, since: str | None) -> str:
    """The ``/ws`` URL with the filters as query parameters."""
    query = {
        key: value
        for key, value in (
            ("accounts", opts.accounts),
            ("conversations", opts.conversations),
            ("events", opts.events),
            ("since", since),
        )
        if value
    }
    base = opts.url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    if not base.endswith("/ws"):
        base += "/ws"
    return base + ("?" + urlencode(query) if query else "")


def summarise(data: Mapping[str, Any], name: str) -> str:
    """A short human description of an event's payload."""
    if name.startswith("message."):
        content = data.get("content")
        text = content if isinstance(content, str) else ""
        kinds = {0: "in", 1: "out", 2: "activity", 3: "template"}
        kind = kinds.get(data.get("message_type"), "?")  # type: ignore[arg-type]
        private = " private" if data.get("private") else ""
        return f"#{data.get('id')} {kind}{private} {text[:60]!r}"
    if name.startswith("conversation.typing"):
        user = data.get("user")
        who = user.get("name") if isinstance(user, Mapping) else "?"
        return f"{who} typing"
    if "status" in data and name.startswith(("conversation.", "assignee.", "team.")):
        return f"status={data.get('status')}"
    return ""


def format_frame(frame: Mapping[str, Any]) -> str:
    """One line for a frame."""
    kind = frame.get("type")
    if kind == "event":
        where = f"{frame.get('account_id')}/{frame.get('conversation_id') or '-'}"
        data = frame.get("data")
        summary = summarise(data if isinstance(data, Mapping) else {}, str(frame.get("event")))
        return (
            f"{frame.get('received_at')}  #{frame.get('seq'):<6} {frame.get('event'):<30} "
            f"{where:<10} {frame.get('source'):<7} {summary}"
        )
    if kind == "welcome":
        return (
            f"-- connected: epoch {frame.get('epoch')} seq {frame.get('seq')}, "
            f"upstream {frame.get('upstream')}, replayed {frame.get('replayed')}"
        )
    if kind == "status":
        return f"-- upstream {frame.get('upstream')} ({frame.get('reason')})"
    if kind == "reset":
        return f"-- reset ({frame.get('reason')}): history lost, refetch state"
    return "-- " + json.dumps(frame)


async def tail(opts: TailOptions, out: TextIO = sys.stdout) -> int:
    """Print frames until ``count`` events arrived or retries ran out; return an exit status."""
    since = opts.since
    seen = 0
    backoff = Backoff((0.5, 1.0, 2.0, 5.0))
    while True:
        try:
            async with connect(ws_url(opts, since), open_timeout=5, max_size=None) as ws:
                backoff.reset()
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    frame = json.loads(text)
                    kind = frame.get("type")
                    if kind == "event":
                        since = f"{frame['epoch']}:{frame['seq']}"
                        seen += 1
                    elif kind == "reset" or (kind == "welcome" and since is None):
                        since = f"{frame['epoch']}:{frame['seq']}"
                    out.write((text if opts.raw else format_frame(frame)) + "\n")
                    out.flush()
                    if opts.count is not None and seen >= opts.count:
                        return 0
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            if opts.max_retries is not None and backoff.failures >= opts.max_retries:
                out.write(f"-- giving up: {type(exc).__name__}: {exc}\n")
                return 1
            delay = backoff.next_delay()
            out.write(f"-- disconnected ({type(exc).__name__}); retrying in {delay:.1f} s\n")
            out.flush()
            await asyncio.sleep(delay)
