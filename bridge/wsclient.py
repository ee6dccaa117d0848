"""One ``/ws`` connection once admitted: welcome, replay, live frames, client frames.

Live event frames are written as prepared bytes straight to the client's transport, one
``write`` per client per event (or per coalesced batch, see :mod:`bridge.hub`); a client
whose unsent bytes would pass its buffer limit is dropped with 4029 (protocol.md §2, §3).
Replay on resume goes through aiohttp's ``send_str``, which waits for the socket to drain;
events published meanwhile are held and flushed after, so nothing is lost or doubled in
between. Client frames are rate limited; filter changes may narrow the client's scope,
never widen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import WSMessage, WSMsgType, web
from websockets.frames import Frame, Opcode

from bridge import clientproto as cp
from bridge.auth import Access, Identity
from bridge.events import Entry
from bridge.hub import Batch
from bridge.metrics import REQUEST_OUTCOMES, Metrics
from bridge.ports import EventStore, missed
from bridge.ratelimit import TokenBucket


if TYPE_CHECKING:
    from bridge.commands import Commands

log = structlog.get_logger("bridge.wsclient")

UNAUTHORIZED = 4001
FORBIDDEN = 4003
SLOW_OR_RATE_LIMITED = 4029
BAD_REQUEST = 4000
# Events held for one client while its replay is being written.
MAX_HELD = 50_000
# Requests (history, commands) one client may have waiting on Chatwoot at once.
MAX_IN_FLIGHT = 8
# Where ``async for`` over a WebSocketResponse stops (the session calls ``receive``).
_END_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


def frame_bytes(text: str) -> bytes:
    """A complete unmasked server text frame (RFC 6455 §5.2), built by websockets."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def entry_frame(entry: Entry) -> bytes:
    """The entry's WebSocket frame, built once and shared by every client."""
    data = entry.cache.get("ws")
    if data is None:
        data = entry.cache["ws"] = frame_bytes(entry.text)
    return data


class WsClient:
    """One ``/ws`` connection, as a :class:`bridge.hub.Subscriber`."""

    # Slots: one of these per connected client (memory per idle client, docs/benchmarks.md).
    __slots__ = (
        "_held",
        "_last_seq",
        "buffer_limit",
        "close_code",
        "close_reason",
        "closing",
        "filter",
        "identity",
        "on_close",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        identity: Identity,
        flt: cp.Filter,
        buffer_limit: int,
    ) -> None:
        self.identity = identity
        self.filter = Access(identity.scope, flt)
        self.ws = ws
        self.transport = transport
        self.buffer_limit = buffer_limit
        self.close_code: int | None = None
        self.close_reason = ""
        # A close was asked for; ``on_close`` starts it (a plain flag and a callback, not an
        # Event and a waiting task: thousands of idle clients each pay for what they hold).
        self.closing = False
        self.on_close: Callable[[], None] | None = None
        # Frames published while the welcome and replay are written; None once live.
        self._held: deque[Entry | str] | None = deque()
        self._last_seq = 0

    # Subscriber

    def deliver(self, batch: Batch) -> bool:
        if self.closing:
            return True
        if self._held is not None:
            self._held.extend(batch.entries)
            return len(self._held) <= MAX_HELD
        return self._write(batch.encoded("ws", entry_frame))

    def send_control(self, text: str) -> bool:
        if self.closing:
            return True
        if self._held is not None:
            self._held.append(text)
            return len(self._held) <= MAX_HELD
        return self._write(frame_bytes(text))

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.close_code = code
            self.close_reason = reason
            self.closing = True
            if self.on_close is not None:
                self.on_close()

    # Public methods

    def disconnect_reason(self) -> str:
        """The ``reason`` label of the finished connection."""
        if self.close_code is None and isinstance(self.ws.exception(), asyncio.TimeoutError):
            return "idle"  # the handler may have been cancelled before the reader saw it
        return {
            SLOW_OR_RATE_LIMITED: "rate_limited"
            if self.close_reason == "rate limited"
            else "slow_consumer",
            1001: "shutdown",
            1009: "frame_too_big",
            UNAUTHORIZED: "unauthorized",
        }.get(self.close_code or 0) or {
            "idle": "idle",
            "protocol error": "protocol_error",
        }.get(self.close_reason, "client_closed")

    def buffered(self) -> int:
        """Bytes in the socket's buffer, not yet taken by the client."""
        transport = self.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    async def send_now(self, text: str) -> None:
        """Send a frame before going live (welcome, reset, replay), waiting for drain."""
        await self.ws.send_str(text)

    def skip_through(self, seq: int) -> None:
        """Held entries up to ``seq`` are already covered by the replay."""
        self._last_seq = seq

    async def go_live(self) -> None:
        """Flush what was held during replay, then switch to direct writes."""
        while self._held:
            item = self._held.popleft()
            if self.closing:
                break
            if isinstance(item, str):
                await self.ws.send_str(item)
            elif item.seq > self._last_seq:
                await self.ws.send_str(item.text)
        self._held = None

    # Private methods

    def _write(self, data: bytes) -> bool:
        transport = self.transport
        if transport.is_closing():
            return True  # the reader sees the connection end and cleans up
        # Behind: bytes already waiting, and these would pass the limit. (A coalesced batch
        # larger than the limit still goes to a client that has taken everything so far.)
        waiting = transport.get_write_buffer_size()
        if waiting and waiting + len(data) > self.buffer_limit:
            return False
        transport.write(data)
        return True


class Session:
    """Runs one admitted connection until it ends.

    Args:
        client: the connection.
        store: the event log (resume).
        welcome: the welcome frame for (identity, head seq, replayed count).
        metrics: the metric objects.
        frames_per_second: client frame rate limit (burst twice that).
        subscribes_per_minute: filter change limit (burst 10).
        commands: answers history requests and commands (None: ``unsupported``).
        commands_per_minute: request limit (burst 20), at most :data:`MAX_IN_FLIGHT` at once.
        clock: monotonic clock for the limits.
    """

    # Memory per idle client (docs/benchmarks.md): what an idle client never uses is made
    # on first use, not here: the token buckets (made full, as they would be at connect),
    # the set of requests in flight, the token's expiry (a timer, not a task).
    __slots__ = (
        "_closer",
        "_expiry",
        "_frames",
        "_in_flight",
        "_live",
        "_requests",
        "_subscribes",
        "client",
        "clock",
        "commands",
        "commands_per_minute",
        "frames_per_second",
        "metrics",
        "store",
        "subscribes_per_minute",
        "wall_clock",
        "welcome",
    )

    def __init__(
        self,
        client: WsClient,
        store: EventStore,
        welcome: Callable[[Identity, int, int], str],
        metrics: Metrics,
        *,
        frames_per_second: float,
        subscribes_per_minute: float,
        commands: Commands | None = None,
        commands_per_minute: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.welcome = welcome
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self.frames_per_second = frames_per_second
        self.subscribes_per_minute = subscribes_per_minute
        self.commands = commands
        self.commands_per_minute = commands_per_minute
        self._frames: TokenBucket | None = None
        self._subscribes: TokenBucket | None = None
        self._requests: TokenBucket | None = None
        self._in_flight: set[asyncio.Task[None]] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None
        # Between the welcome and the end of ``run``: the session's tasks may be started.
        self._live = False
        client.on_close = self._spawn_closer

    async def run(self, resume: cp.Resume | None) -> None:
        """Welcome (and replay), then read frames until the connection ends; returns once
        the session's tasks (its close, requests being answered) have ended too."""
        client = self.client
        ws = client.ws
        await self.start(resume)
        # The session's tasks are its own (started on demand, waited for below), not in an
        # asyncio.TaskGroup: most clients never start one, and a task group (with its set
        # and list) per client would be held for each connection's life (memory per idle
        # client). The guarantees are a task group's: ``run`` returns only once they have
        # ended, and they are cancelled if it fails or is cancelled. They catch their own
        # errors (a failed request is answered, a close that times out aborts).
        self._live = True
        try:
            if client.closing:
                self._spawn_closer()
            expires_at = client.identity.expires_at
            if expires_at is not None:
                self._expiry = asyncio.get_running_loop().call_later(
                    max(0.0, expires_at - self.wall_clock()), self._expire
                )
            # The read loop is here, not in a helper coroutine, and calls ``receive`` rather
            # than using ``async for``: two coroutine frames less held per idle client.
            while True:
                msg = await ws.receive()
                if msg.type in _END_TYPES or not self._handle_message(msg):
                    break
            # A missed pong while no receive() was waiting ends the loop quietly.
            if isinstance(ws.exception(), asyncio.TimeoutError):
                self._protocol_error(ws.exception())
            if self._expiry is not None:
                self._expiry.cancel()
            client.close(client.close_code or 1000, client.close_reason)
        except BaseException:
            if self._expiry is not None:
                self._expiry.cancel()
            self._cancel_tasks()
            raise
        finally:
            try:
                await self._join()
            finally:
                self._live = False  # finished: nothing more may be started

    async def start(self, resume: cp.Resume | None) -> None:
        """Welcome, then replay or reset, then live; nothing is lost or doubled between."""
        client, store = self.client, self.store
        since = None if resume is None else (resume.epoch, resume.seq)
        replay, gap = await missed(store, since, client.filter.matches)
        # Everything up to ``head`` is covered by the replay (or by nothing, for a new
        # client); the client was registered first, so what comes after is being held.
        head = store.last_seq
        client.skip_through(head)
        await client.send_now(self.welcome(client.identity, head, len(replay)))
        if gap is not None:
            await client.send_now(cp.reset_frame(gap.reason, store.epoch, head))
        for entry in replay:
            await client.send_now(entry.text)
        await client.go_live()

    # Private methods

    def _handle_message(self, msg: WSMessage) -> bool:
        """One message from the client; False ends the session."""
        client = self.client
        if not self._frame_allowed():
            self.metrics.client_frames.labels(type="over_limit").inc()
            client.close(SLOW_OR_RATE_LIMITED, "rate limited")
            return False
        if msg.type is WSMsgType.TEXT:
            self._handle_text(msg.data)
        elif msg.type is WSMsgType.BINARY:
            self.metrics.client_frames.labels(type="binary").inc()
            self._send_error(
                cp.ClientError("bad_request", "binary frames are not supported; send JSON text")
            )
        elif msg.type is WSMsgType.ERROR:
            self._protocol_error(msg.data)
            return False
        return not client.closing

    def _frame_allowed(self) -> bool:
        now = self.clock()
        if self._frames is None:
            rate = self.frames_per_second
            self._frames = TokenBucket(rate, 2 * rate, now)
        return self._frames.take(now)

    def _subscribe_allowed(self) -> bool:
        now = self.clock()
        if self._subscribes is None:
            self._subscribes = TokenBucket(self.subscribes_per_minute / 60, 10, now)
        return self._subscribes.take(now)

    def _request_allowed(self) -> bool:
        now = self.clock()
        if self._requests is None:
            self._requests = TokenBucket(self.commands_per_minute / 60, 20, now)
        return self._requests.take(now)

    def _protocol_error(self, error: object) -> None:
        """aiohttp reports a bad frame (too big, bad UTF-8) or a missed pong as an ERROR."""
        client = self.client
        if client.close_code is not None:
            return
        if isinstance(error, asyncio.TimeoutError):
            # No pong to aiohttp's heartbeat ping: an idle (or vanished) client.
            client.close_code, client.close_reason = 1006, "idle"
        elif getattr(error, "code", None) == 1009:
            client.close_code, client.close_reason = 1009, "frame too big"
        else:
            self.metrics.client_frames.labels(type="invalid").inc()
            client.close_code, client.close_reason = getattr(error, "code", 1002), "protocol error"

    def _handle_text(self, text: str) -> None:
        client = self.client
        try:
            frame = cp.parse_frame(text)
        except cp.ClientError as exc:
            self.metrics.client_frames.labels(type="invalid").inc()
            self._send_error(exc)
            return
        match frame:
            case cp.Ping():
                self.metrics.client_frames.labels(type="ping").inc()
                client.send_control(cp.PONG_FRAME)
            case cp.Subscribe(ref, flt):
                self.metrics.client_frames.labels(type="subscribe").inc()
                if not self._subscribe_allowed():
                    self._send_error(
                        cp.ClientError("rate_limited", "too many filter changes; slow down", ref)
                    )
                    return
                try:
                    client.identity.scope.check_filter(flt, ref)
                except cp.ClientError as exc:
                    self._send_error(exc)
                    return
                client.filter = Access(client.identity.scope, flt)
                client.send_control(cp.subscribed_frame(ref, flt))
            case cp.Request():
                self.metrics.client_frames.labels(type="request").inc()
                self._request(frame)

    def _request(self, request: cp.Request) -> None:
        """Start answering a request, within the client's limits."""
        commands, in_flight = self.commands, self._in_flight
        if commands is None or not self._live:
            error = cp.ClientError(
                "unsupported", "this endpoint serves no history or commands", request.ref
            )
            self._answered(request, error)
        elif (
            in_flight is not None and len(in_flight) >= MAX_IN_FLIGHT
        ) or not self._request_allowed():
            error = cp.ClientError(
                "rate_limited", "too many requests; wait for the answers", request.ref
            )
            self._answered(request, error)
        else:
            if in_flight is None:
                in_flight = self._in_flight = set()
            task = asyncio.get_running_loop().create_task(self._answer(commands, request))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _answer(self, commands: Commands, request: cp.Request) -> None:
        try:
            data = await commands.handle(self.client.identity, request)
        except cp.ClientError as exc:
            self._answered(request, exc)
            return
        except Exception:  # a bug answering one request must not end the session
            log.exception("command.failed", kind=request.kind)
            self._answered(
                request,
                cp.ClientError("upstream_error", "the bridge failed to answer", request.ref),
            )
            return
        self._answered(request, None)
        if not self.client.send_control(cp.result_frame(request.ref, data)):
            self.client.close(SLOW_OR_RATE_LIMITED, "slow consumer")

    def _answered(self, request: cp.Request, error: cp.ClientError | None) -> None:
        outcome = "ok" if error is None else error.code
        if outcome not in REQUEST_OUTCOMES:
            outcome = "bad_request"
        self.metrics.client_requests.labels(kind=request.kind, outcome=outcome).inc()
        if error is not None:
            self._send_error(error)

    def _send_error(self, exc: cp.ClientError) -> None:
        self.metrics.client_errors.labels(code=exc.code).inc()
        self.client.send_control(cp.error_frame(exc.code, exc.message, exc.ref))

    def _expire(self) -> None:
        """Close with 4001 when the client's token expires (it reconnects with a new one)."""
        self._expiry = None
        self._send_error(cp.ClientError("unauthorized", "token expired"))
        self.client.close(UNAUTHORIZED, "token expired")

    def _spawn_closer(self) -> None:
        """A close was asked for (slow consumer, shutdown, reader end): start it as one of
        the session's tasks (once live; ``run`` catches up on one asked before)."""
        if self._live and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._close())

    def _tasks(self) -> list[asyncio.Task[None]]:
        """The session's tasks not ended yet."""
        tasks = [] if self._in_flight is None else [t for t in self._in_flight if not t.done()]
        if self._closer is not None and not self._closer.done():
            tasks.append(self._closer)
        return tasks

    def _cancel_tasks(self) -> None:
        for task in self._tasks():
            task.cancel()

    async def _join(self) -> None:
        """Wait until the session's tasks have ended (cancelling them if this is cancelled,
        and still waiting for them, as a task group does)."""
        cancelled: asyncio.CancelledError | None = None
        while tasks := self._tasks():
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError as exc:
                cancelled = exc
                self._cancel_tasks()
        if cancelled is not None:
            raise cancelled

    async def _close(self) -> None:
        client = self.client
        if client.ws.closed:
            return
        try:
            async with asyncio.timeout(3.0):
                await client.ws.close(
                    code=client.close_code or 1000, message=client.close_reason.encode()
                )
        except TimeoutError:
            client.transport.abort()


async def refuse(ws: web.WebSocketResponse, code: int, error: cp.ClientError) -> None:
    """Explain in an error frame, then close: browsers cannot read a refused handshake."""
    with contextlib.suppress(ConnectionError):
        await ws.send_str(cp.error_frame(error.code, error.message))
        await ws.close(code=code, message=error.code.encode())
