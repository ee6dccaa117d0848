"""The local edge: ``GET /ws``, ``/healthz``, ``/readyz`` and ``/metrics`` on aiohttp.

Each WebSocket client gets a small TaskGroup (reader, closer). Live event frames are
written as prepared bytes straight to the client's transport, one ``write`` per client
per event, and a client whose unsent bytes would pass its buffer limit is dropped with
4029 (protocol.md §2, §3). Replay on resume goes through aiohttp's ``send_str``, which
waits for the socket to drain; events published meanwhile are held and flushed after.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.frames import Frame, Opcode

from bridge import clientproto as cp
from bridge.config import ServerConfig
from bridge.eventlog import Gap
from bridge.events import Entry, format_time
from bridge.hub import GOING_AWAY, Hub
from bridge.metrics import Metrics
from bridge.ports import EventStore
from bridge.status import Status, StatusBoard


log = structlog.get_logger("bridge.server")

BAD_REQUEST_CLOSE = 4000
# Events held for one client while its replay is being written.
MAX_HELD = 50_000


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

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        flt: cp.Filter,
        buffer_limit: int,
    ) -> None:
        self.filter = flt
        self.ws = ws
        self.transport = transport
        self.buffer_limit = buffer_limit
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing = asyncio.Event()
        # Frames published while the welcome and replay are written; None once live.
        self._held: deque[Entry | str] | None = deque()
        self._last_seq = 0

    # Subscriber

    def deliver(self, entry: Entry) -> bool:
        if self.closing.is_set():
            return True
        if self._held is not None:
            self._held.append(entry)
            return len(self._held) <= MAX_HELD
        return self._write(entry_frame(entry))

    def send_control(self, text: str) -> bool:
        if self.closing.is_set():
            return True
        if self._held is not None:
            self._held.append(text)
            return len(self._held) <= MAX_HELD
        return self._write(frame_bytes(text))

    def close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code = code
            self.close_reason = reason
            self.closing.set()

    # Public methods

    async def send_now(self, text: str) -> None:
        """Send a frame before going live (welcome, reset, replay), waiting for drain."""
        await self.ws.send_str(text)

    def skip_through(self, seq: int) -> None:
        """Held entries up to ``seq`` are already covered by the replay."""
        self._last_seq = seq

    async def send_entry(self, entry: Entry) -> None:
        """Send a replayed entry, remembering its seq so held copies are skipped."""
        await self.ws.send_str(entry.text)

    async def go_live(self) -> None:
        """Flush what was held during replay, then switch to direct writes."""
        while self._held:
            item = self._held.popleft()
            if self.closing.is_set():
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
        if transport.get_write_buffer_size() + len(data) > self.buffer_limit:
            return False
        transport.write(data)
        return True


class LocalServer:
    """The aiohttp application of the local endpoint.

    Args:
        cfg: listen address and limits.
        hub: where clients subscribe.
        store: the event log, for resume.
        status: the upstream state.
        metrics: the metric objects (the registry is served at ``/metrics``).
        poll_window: how recent a poll must be for ``/readyz`` while polling, s.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        hub: Hub,
        store: EventStore,
        status: StatusBoard,
        metrics: Metrics,
        *,
        poll_window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.hub = hub
        self.store = store
        self.status = status
        self.metrics = metrics
        self.poll_window = poll_window
        self.clock = clock
        self.clients: set[WsClient] = set()
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        status.subscribe(self._on_status)

    def build_app(self) -> web.Application:
        """The routes of protocol.md §2 and §4."""
        app = web.Application()
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    def close_clients(self, code: int = GOING_AWAY, reason: str = "shutting down") -> None:
        """Ask every client to close (first step of shutdown)."""
        for client in list(self.clients):
            client.close(code, reason)

    async def wait_no_clients(self) -> None:
        """Return once every client connection has ended."""
        await self._no_clients.wait()

    # HTTP handlers

    async def handle_healthz(self, _: web.Request) -> web.Response:
        """200 while the process runs."""
        return web.json_response({"status": "ok"})

    async def handle_readyz(self, _: web.Request) -> web.Response:
        """200 when the upstream is live, or polling successfully; 503 otherwise."""
        now = self.clock()
        current = self.status.current
        ready = self.status.ready(now, self.poll_window)
        body = {
            "ready": ready,
            "upstream": current.state,
            "since": format_time(current.since),
            "reason": current.reason,
            "last_poll_ok": None
            if self.status.last_poll_ok is None
            else format_time(self.status.last_poll_ok),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def handle_metrics(self, _: web.Request) -> web.Response:
        """Prometheus text format."""
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """The local WebSocket endpoint (protocol.md §2)."""
        ws = web.WebSocketResponse(
            autoping=True,
            heartbeat=None,
            compress=False,
            max_msg_size=self.cfg.client_max_frame_bytes,
            timeout=2.0,
        )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the peer went away during the handshake
            return ws
        try:
            flt, resume = cp.parse_query(request.query)
        except cp.ClientError as exc:
            self.metrics.client_errors.labels(code=exc.code).inc()
            await ws.send_str(cp.error_frame(exc.code, exc.message))
            await ws.close(code=BAD_REQUEST_CLOSE, message=b"bad request")
            self.metrics.client_disconnects.labels(reason="bad_request").inc()
            return ws
        client = WsClient(ws, transport, flt, self.cfg.client_buffer_bytes)
        log.info(
            "client.connected",
            transport="ws",
            clients=len(self.clients) + 1,
            resume=resume is not None,
            filter=flt.to_wire(),
        )
        self.clients.add(client)
        self._no_clients.clear()
        gauge = self.metrics.clients_connected.labels(transport="ws")
        gauge.inc()
        try:
            with self.hub.subscription(client):
                await self._start(client, resume)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._closer(client))
                    await self._read(client)
                    client.close(client.close_code or 1000, client.close_reason)
        except* ConnectionError:
            # The client went away while a frame was being written.
            client.close(1006, "connection lost")
        finally:
            # aiohttp may cancel this handler once the transport is gone; account here.
            self.clients.discard(client)
            if not self.clients:
                self._no_clients.set()
            gauge.dec()
            reason = _disconnect_reason(client)
            self.metrics.client_disconnects.labels(reason=reason).inc()
            log.info(
                "client.disconnected", transport="ws", reason=reason, clients=len(self.clients)
            )
            if not transport.is_closing() and client.close_code == 4029:
                transport.abort()
        return ws

    # Private methods

    async def _start(self, client: WsClient, resume: cp.Resume | None) -> None:
        """Welcome, then replay or reset, then live; nothing is lost or doubled between."""
        store = self.store
        replay: list[Entry] = []
        gap: Gap | None = None
        if resume is not None:
            found = await store.since(resume.epoch, resume.seq)
            if isinstance(found, Gap):
                gap = found
            else:
                replay = [entry for entry in found if client.filter.matches(entry.event)]
        # Everything up to ``head`` is covered by the replay (or by nothing, for a new
        # client); the client was registered first, so what comes after is being held.
        head = store.last_seq
        client.skip_through(head)
        await client.send_now(
            cp.welcome_frame(store.epoch, head, self.status.current.state, len(replay))
        )
        if gap is not None:
            await client.send_now(cp.reset_frame(gap.reason, store.epoch, head))
        for entry in replay:
            await client.send_entry(entry)
        await client.go_live()

    async def _read(self, client: WsClient) -> None:
        """Handle client frames until the connection ends or a close is requested."""
        ws = client.ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self._handle_text(client, msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._send_error(
                    client,
                    cp.ClientError(
                        "bad_request", "binary frames are not supported; send JSON text"
                    ),
                )
            elif msg.type is WSMsgType.ERROR:
                client.close_code = client.close_code or 1009
                client.close_reason = client.close_reason or "frame too big"
                break
            if client.closing.is_set():
                break

    def _handle_text(self, client: WsClient, text: str) -> None:
        try:
            frame = cp.parse_frame(text)
        except cp.ClientError as exc:
            self.metrics.client_frames.labels(type="invalid").inc()
            self._send_error(client, exc)
            return
        match frame:
            case cp.Ping():
                self.metrics.client_frames.labels(type="ping").inc()
                client.send_control(cp.PONG_FRAME)
            case cp.Subscribe(ref, flt):
                self.metrics.client_frames.labels(type="subscribe").inc()
                client.filter = flt
                client.send_control(cp.subscribed_frame(ref, flt))

    def _send_error(self, client: WsClient, exc: cp.ClientError) -> None:
        self.metrics.client_errors.labels(code=exc.code).inc()
        client.send_control(cp.error_frame(exc.code, exc.message, exc.ref))

    async def _closer(self, client: WsClient) -> None:
        """Wait for a close request (slow consumer, shutdown, reader end) and close."""
        await client.closing.wait()
        if client.ws.closed:
            return
        try:
            async with asyncio.timeout(3.0):
                await client.ws.close(
                    code=client.close_code or 1000, message=client.close_reason.encode()
                )
        except TimeoutError:
            client.transport.abort()

    def _on_status(self, status: Status) -> None:
        log.info("upstream.status", state=status.state, reason=status.reason)
        self.metrics.set_upstream_state(status.state)
        self.hub.broadcast(cp.status_frame(status.state, format_time(status.since), status.reason))


def _disconnect_reason(client: WsClient) -> str:
    code = client.close_code
    if code == 4029:
        return "slow_consumer"
    if code == GOING_AWAY:
        return "shutdown"
    if code == 1009:
        return "frame_too_big"
    return "client_closed"


def route_names(app: web.Application) -> list[Any]:
    """The paths served, for the startup log line."""
    return sorted({r.resource.canonical for r in app.router.routes() if r.resource is not None})
