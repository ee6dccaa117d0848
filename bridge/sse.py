"""One ``/events`` (Server-Sent Events) connection once admitted (protocol.md §4).

For frontends that only listen. Each event is ``id: <epoch>:<seq>``, ``event: <name>``,
``data: <the event envelope>``, so a browser's ``EventSource`` resumes by itself with
``Last-Event-ID``. Control frames go as ``event: welcome|status|reset|error`` with the
frame as ``data``. The welcome of a fresh stream and every reset carry the head's id, so
that a reconnect before the next event resumes from there; the welcome of a resumed
stream carries none (the replay moves the id on).

aiohttp writes a response with ``await``, so live frames go into a per-client queue,
bounded in bytes like the WebSocket buffer; a pump task writes them out. A client whose
queue would pass the limit is dropped (the hub counts it as a slow consumer). Keep-alive
comments go out every ``keepalive`` seconds; they also notice a vanished client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable

import structlog
from aiohttp import web

from bridge import clientproto as cp
from bridge.auth import Access, Identity
from bridge.events import Entry
from bridge.hub import Batch
from bridge.ports import EventStore, missed


log = structlog.get_logger("bridge.sse")

KEEPALIVE = b": keep-alive\n\n"
# The browser's reconnect delay, ms (EventSource's own backoff is not jittered).
RETRY_MS = 2000
MAX_HELD = 50_000
SLOW_CONSUMER = 4029
# Bytes handed to aiohttp per write.
CHUNK = 64 * 1024


def event_bytes(entry: Entry) -> bytes:
    """The entry as an SSE event, built once and shared by every client."""
    data = entry.cache.get("sse")
    if data is None:
        data = entry.cache["sse"] = (
            f"id: {entry.epoch}:{entry.seq}\nevent: {entry.event.name}\ndata: {entry.text}\n\n"
        ).encode()
    return data


def control_bytes(text: str, event_id: str | None = None) -> bytes:
    """A control frame (``welcome``, ``status``, ``reset``, ``error``) as an SSE event."""
    kind = json.loads(text).get("type", "message")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {text}\n\n".encode()


class SseClient:
    """One ``/events`` stream, as a :class:`bridge.hub.Subscriber`."""

    def __init__(
        self,
        response: web.StreamResponse,
        transport: asyncio.Transport,
        identity: Identity,
        flt: cp.Filter,
        buffer_limit: int,
    ) -> None:
        self.response = response
        self.transport = transport
        self.identity = identity
        self.filter = Access(identity.scope, flt)
        self.buffer_limit = buffer_limit
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing = asyncio.Event()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        # Frames published while the welcome and replay are written; None once live.
        self._held: deque[Entry | str] | None = deque()
        self._last_seq = 0

    # Subscriber

    def deliver(self, batch: Batch) -> bool:
        if self.closing.is_set():
            return True
        if self._held is not None:
            self._held.extend(batch.entries)
            return len(self._held) <= MAX_HELD
        return self._put(batch.encoded("sse", event_bytes))

    def send_control(self, text: str) -> bool:
        if self.closing.is_set():
            return True
        if self._held is not None:
            self._held.append(text)
            return len(self._held) <= MAX_HELD
        return self._put(control_bytes(text))

    def close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code = code
            self.close_reason = reason
            self.closing.set()
            self._wake.set()

    # Public methods

    def buffered(self) -> int:
        """Bytes queued or in the socket's buffer, not yet taken by the client."""
        transport = self.transport
        return self._queued + (0 if transport.is_closing() else transport.get_write_buffer_size())

    def disconnect_reason(self) -> str:
        """The ``reason`` label of the finished stream."""
        return {SLOW_CONSUMER: "slow_consumer", 1001: "shutdown", 4001: "unauthorized"}.get(
            self.close_code or 0, "client_closed"
        )

    def keepalive(self) -> bool:
        """Queue a keep-alive comment."""
        return self.closing.is_set() or self._put(KEEPALIVE)

    async def start(
        self, store: EventStore, resume: cp.Resume | None, welcome: Callable[[int, int], str]
    ) -> None:
        """Welcome, then replay or reset, then live; nothing is lost or doubled between."""
        since = None if resume is None else (resume.epoch, resume.seq)
        replay, gap = await missed(store, since, self.filter.matches)
        head = store.last_seq
        self._last_seq = head
        position = f"{store.epoch}:{head}"
        chunks = [b"retry: %d\n\n" % RETRY_MS]
        chunks.append(control_bytes(welcome(head, len(replay)), None if resume else position))
        if gap is not None:
            chunks.append(control_bytes(cp.reset_frame(gap.reason, store.epoch, head), position))
        await self._write(chunks)
        for start in range(0, len(replay), 100):
            await self._write(event_bytes(e) for e in replay[start : start + 100])
        while self._held:
            item = self._held.popleft()
            if self.closing.is_set():
                break
            if isinstance(item, str):
                await self._write([control_bytes(item)])
            elif item.seq > self._last_seq:
                await self._write([event_bytes(item)])
        self._held = None

    async def pump(self) -> None:
        """Write queued frames until the client is closed."""
        while not self.closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.closing.is_set():
                batch: list[bytes] = []
                size = 0
                while self._queue and size < CHUNK:
                    item = self._queue.popleft()
                    batch.append(item)
                    size += len(item)
                self._queued -= size
                await self._write(batch)

    # Private methods

    def _put(self, data: bytes) -> bool:
        # Behind: bytes already waiting, and these would pass the limit. (A coalesced batch
        # larger than the limit still goes to a client that has taken everything so far.)
        if self._queued and self._queued + len(data) > self.buffer_limit:
            return False
        self._queue.append(data)
        self._queued += len(data)
        self._wake.set()
        return True

    async def _write(self, chunks: Iterable[bytes]) -> None:
        await self.response.write(b"".join(chunks))


class SseSession:
    """Runs one admitted stream until it ends.

    Args:
        client: the stream.
        store: the event log (resume).
        welcome: the welcome frame for (head seq, replayed count).
        keepalive: seconds between keep-alive comments.
        wall_clock: for the credential's expiry.
    """

    def __init__(
        self,
        client: SseClient,
        store: EventStore,
        welcome: Callable[[int, int], str],
        *,
        keepalive: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.welcome = welcome
        self.keepalive = keepalive
        self.wall_clock = wall_clock

    async def run(self, resume: cp.Resume | None) -> None:
        """Stream until closed: shutdown, slow consumer, expiry or a failed write."""
        client = self.client
        await client.start(self.store, resume, self.welcome)
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(client.pump())
            ticker = tg.create_task(self._tick())
            expiry = None
            if client.identity.expires_at is not None:
                expiry = tg.create_task(self._expire(client.identity.expires_at))
            await client.closing.wait()
            for task in (ticker, expiry):
                if task is not None:
                    task.cancel()
            if client.close_code == SLOW_CONSUMER:
                client.transport.abort()  # a write may be stuck on a reader that stopped
            try:
                async with asyncio.timeout(3.0):
                    await asyncio.shield(pump)
            except TimeoutError:
                client.transport.abort()
        if client.close_reason == "token expired":
            with contextlib.suppress(ConnectionError):
                await client.response.write(
                    control_bytes(cp.error_frame("unauthorized", "token expired"))
                )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive)
            if not self.client.keepalive():
                self.client.close(SLOW_CONSUMER, "slow consumer")

    async def _expire(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - self.wall_clock()))
        self.client.close(4001, "token expired")
