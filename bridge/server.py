"""The local edge on aiohttp: admission to ``GET /ws``, health, metrics, webhooks.

Admission runs before a client costs anything: browser origins (refused with 403
before the upgrade), the total and per-address client limits, then the credential (a
refused one gets an ``error`` frame and close 4001, since browsers cannot read a
refused handshake), then the filter against the credential's scope (4003). A handshake
that does not finish within the timeout is cut at the TCP level. Each admitted
connection then runs as a :class:`bridge.wsclient.Session`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge import clientproto as cp
from bridge.auth import Authenticator, AuthError, Identity, origin_allowed
from bridge.commands import Commands
from bridge.config import LimitsConfig, ServerConfig
from bridge.events import format_time
from bridge.hub import GOING_AWAY, Hub
from bridge.metrics import Metrics
from bridge.ports import EventStore
from bridge.sse import SseClient, SseSession
from bridge.status import Status, StatusBoard
from bridge.wsclient import (
    BAD_REQUEST,
    FORBIDDEN,
    UNAUTHORIZED,
    Session,
    WsClient,
    refuse,
)


log = structlog.get_logger("bridge.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The filter of every client that asks for none, shared: filters are immutable, and one
# per client would be held for each connection's life (memory per idle client).
NO_FILTER = cp.Filter()


class Connection(Protocol):
    """A connected client of either transport."""

    identity: Identity
    transport: asyncio.Transport
    close_code: int | None
    close_reason: str

    def close(self, code: int, reason: str) -> None: ...

    def disconnect_reason(self) -> str: ...

    def buffered(self) -> int: ...


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer, or behind trusted proxies the right-most untrusted
    address of ``X-Forwarded-For`` (the left part can be forged by the client)."""
    if peer is None:
        return "unknown"
    if not trusted or not forwarded_for:
        return peer
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not is_trusted(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop):
            return hop
    return peer


def credential(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer`` or the ``token`` query parameter."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("token") or None


class LocalServer:
    """The aiohttp application of the local endpoint.

    Args:
        cfg: listen address and client buffers.
        limits: client limits.
        authenticator: checks credentials.
        allowed_origins: browser origins allowed (None: the bridge's own).
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
        limits: LimitsConfig | None = None,
        authenticator: Authenticator | None = None,
        allowed_origins: tuple[str, ...] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.limits = limits or LimitsConfig()
        self.authenticator = authenticator or Authenticator(("none",))
        self.allowed_origins = allowed_origins
        self.hub = hub
        self.store = store
        self.status = status
        self.metrics = metrics
        self.poll_window = poll_window
        self.clock = clock
        self.clients: set[Connection] = set()
        self.per_address: Counter[str] = Counter()
        self.routes: list[tuple[str, str, Handler]] = []
        # History and commands (set once the REST client exists) and the bridged accounts.
        self.commands: Commands | None = None
        self.accounts: Callable[[], tuple[int, ...]] = tuple
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        # Connections whose first request has not arrived yet: their handshake timers.
        self._handshakes: dict[asyncio.BaseTransport | None, asyncio.TimerHandle] = {}
        self._streams: dict[asyncio.BaseTransport | None, SseClient] = {}
        # Every /ws session's welcome builder: one bound method, not one per client.
        self._welcome_frame = self.welcome_frame
        status.subscribe(self._on_status)
        metrics.client_buffered_bytes.set_function(self.buffered_bytes)

    def build_app(self) -> web.Application:
        """The routes of protocol.md §2 and §4 (and any added by other components)."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/events", self.handle_sse)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/metrics", self.handle_metrics)
        for method, path, handler in self.routes:
            app.router.add_route(method, path, handler)
        return app

    def watch_connections(self, server: web.Server) -> None:
        """Hook aiohttp's connection events: cut connections whose first request does not
        arrive within the handshake timeout (slow-loris: aiohttp has no header timeout), and
        end an SSE stream as soon as its client goes (aiohttp does not tell the handler)."""
        loop = asyncio.get_running_loop()
        timeout = self.limits.handshake_timeout
        made, lost = server.connection_made, server.connection_lost
        handle = server.request_handler
        pending = self._handshakes

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            pending[transport] = loop.call_later(timeout, self._check_handshake, transport)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            lost(handler, exc)
            timer = pending.pop(handler.transport, None)
            if timer is not None:
                timer.cancel()
            stream = self._streams.get(handler.transport)
            if stream is not None:
                stream.close(1006, "connection lost")

        def request_arrived(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            # A plain function handing on the application's coroutine, not a middleware:
            # a middleware's frame (and aiohttp's own one that any middleware brings) would
            # stay alive for each WebSocket's whole life (memory per idle client).
            timer = pending.pop(request.transport, None)
            if timer is not None:
                timer.cancel()
            return handle(request)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign,assignment]
        server.request_handler = request_arrived

    def close_clients(self, code: int = GOING_AWAY, reason: str = "shutting down") -> None:
        """Ask every client to close (first step of shutdown)."""
        for client in list(self.clients):
            client.close(code, reason)

    def buffered_bytes(self) -> int:
        """What the clients' sockets have not taken yet: bounded by their buffer limit each."""
        return sum(c.buffered() for c in self.clients)

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
        last_ok = self.status.last_poll_ok
        body = {
            "ready": ready,
            "upstream": current.state,
            "since": format_time(current.since),
            "reason": current.reason,
            "last_poll_ok": None if last_ok is None else format_time(last_ok),
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
        refused = self._admit(request)
        if refused is not None:
            return refused
        address = client_address(
            request.remote, request.headers.get("X-Forwarded-For"), self.limits.trusted_proxies
        )
        ws = web.WebSocketResponse(
            autoping=True,
            heartbeat=self.limits.ping_interval or None,
            # Per-message deflate only when switched on. Live events are prepared frames
            # written without compression (RFC 7692 lets any message go uncompressed, and
            # the client's inflate window only spans compressed ones), so they stay encoded
            # once for every client; what aiohttp sends (welcome, replay, results) is
            # compressed.
            compress=self.cfg.client_compression,
            max_msg_size=self.cfg.client_max_frame_bytes,
            timeout=2.0,
        )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the peer went away during the handshake
            return ws
        _drop_http_parser(request)
        try:
            identity = self.authenticator.authenticate(credential(request), self.clock())
        except AuthError as exc:
            self.metrics.auth_failures.labels(reason=exc.reason).inc()
            self.metrics.client_disconnects.labels(reason="unauthorized").inc()
            log.info("client.unauthorized", reason=exc.reason, address=address)
            await refuse(ws, UNAUTHORIZED, cp.ClientError("unauthorized", str(exc)))
            return ws
        try:
            flt, resume = cp.parse_query(request.query)
            identity.scope.check_filter(flt)
        except cp.ClientError as exc:
            self.metrics.client_errors.labels(code=exc.code).inc()
            self.metrics.client_disconnects.labels(reason=exc.code).inc()
            await refuse(ws, FORBIDDEN if exc.code == "forbidden" else BAD_REQUEST, exc)
            return ws
        if flt == NO_FILTER:
            flt = NO_FILTER  # shared (see NO_FILTER)
        # The session runs in this frame, not in a helper coroutine: one frame less
        # held per connected client (memory per idle client, docs/benchmarks.md).
        client = WsClient(ws, transport, identity, flt, self.cfg.client_buffer_bytes)
        session = Session(
            client,
            self.store,
            self._welcome_frame,
            self.metrics,
            frames_per_second=self.limits.frames_per_second,
            subscribes_per_minute=self.limits.subscribes_per_minute,
            commands=self.commands,
            commands_per_minute=self.limits.commands_per_minute,
        )
        self._connect(client, "ws", address, flt, resume=resume)
        try:
            with self.hub.subscription(client):
                await session.run(resume)
        except* ConnectionError:
            # The client went away while a frame was being written.
            client.close(1006, "connection lost")
        finally:
            self._disconnect(client, "ws", address)
        if not transport.is_closing() and client.close_code == 4029:
            transport.abort()
        return ws

    # Private methods

    def _admit(self, request: web.Request) -> web.Response | None:
        """Checks that cost no upgrade: origin and connection limits."""
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.host, self.allowed_origins):
            self.metrics.handshakes_refused.labels(reason="origin").inc()
            log.info("client.origin_refused", origin=origin[:200] if origin else None)
            return web.json_response({"error": "origin not allowed"}, status=403)
        if len(self.clients) >= self.limits.max_clients:
            self.metrics.handshakes_refused.labels(reason="max_clients").inc()
            return web.json_response(
                {"error": "too many clients"}, status=503, headers={"Retry-After": "5"}
            )
        address = client_address(
            request.remote, request.headers.get("X-Forwarded-For"), self.limits.trusted_proxies
        )
        if self.per_address[address] >= self.limits.max_clients_per_ip:
            self.metrics.handshakes_refused.labels(reason="max_per_address").inc()
            return web.json_response({"error": "too many clients from this address"}, status=429)
        return None

    def welcome_frame(self, identity: Identity, head: int, replayed: int) -> str:
        """A client's welcome: the bridged accounts it may see, its commands."""
        scope = identity.scope
        return cp.welcome_frame(
            self.store.epoch,
            head,
            self.status.current.state,
            replayed,
            accounts=sorted(
                a for a in self.accounts() if scope.accounts is None or a in scope.accounts
            ),
            client={"name": identity.name, "commands": sorted(scope.commands)},
        )

    def _welcome(self, identity: Identity) -> Callable[[int, int], str]:
        """The welcome builder of one SSE client."""
        return functools.partial(self.welcome_frame, identity)

    async def handle_sse(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events (protocol.md §4): the same filters, resume by Last-Event-ID.

        EventSource cannot read a refused answer, so refusals are plain HTTP statuses with
        a JSON body for humans and other clients: 401, 403, 400, 429, 503.
        """
        refused = self._admit(request)
        if refused is not None:
            return refused
        address = client_address(
            request.remote, request.headers.get("X-Forwarded-For"), self.limits.trusted_proxies
        )
        try:
            identity = self.authenticator.authenticate(credential(request), self.clock())
        except AuthError as exc:
            self.metrics.auth_failures.labels(reason=exc.reason).inc()
            log.info("client.unauthorized", reason=exc.reason, address=address, transport="sse")
            return web.json_response({"code": "unauthorized", "error": str(exc)}, status=401)
        query = dict(request.query)
        last_event_id = request.headers.get("Last-Event-ID")
        if last_event_id:
            query["since"] = last_event_id  # the browser's own resume wins over the URL's
        try:
            flt, resume = cp.parse_query(query)
            identity.scope.check_filter(flt)
        except cp.ClientError as exc:
            self.metrics.client_errors.labels(code=exc.code).inc()
            status = 403 if exc.code == "forbidden" else 400
            return web.json_response({"code": exc.code, "error": exc.message}, status=status)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        await response.prepare(request)
        transport = request.transport
        if transport is None:
            return response
        client = SseClient(response, transport, identity, flt, self.cfg.client_buffer_bytes)
        session = SseSession(
            client, self.store, self._welcome(identity), keepalive=self.limits.sse_keepalive
        )
        self._streams[transport] = client
        self._connect(client, "sse", address, flt, resume=resume)
        try:
            with self.hub.subscription(client):
                await session.run(resume)
        except* ConnectionError:
            client.close(1006, "connection lost")
        finally:
            del self._streams[transport]
            self._disconnect(client, "sse", address)
        if client.close_code == 4029 and not transport.is_closing():
            transport.abort()
        return response

    def _connect(
        self,
        client: Connection,
        kind: str,
        address: str,
        flt: cp.Filter,
        *,
        resume: cp.Resume | None,
    ) -> None:
        """Count and log one client connection; :meth:`_disconnect` always follows.

        (Two calls rather than a generator context manager, which would hold a generator
        and its frame per connected client: memory per idle client.)
        """
        log.info(
            "client.connected",
            transport=kind,
            client=client.identity.name,
            clients=len(self.clients) + 1,
            resume=resume is not None,
            filter=flt.to_wire(),
        )
        self.clients.add(client)
        self.per_address[address] += 1
        self._no_clients.clear()
        self.metrics.clients_connected.labels(transport=kind).inc()

    def _disconnect(self, client: Connection, kind: str, address: str) -> None:
        """The end of a connection counted by :meth:`_connect`."""
        # aiohttp may cancel the handler once the transport is gone; account here.
        self.clients.discard(client)
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
        if not self.clients:
            self._no_clients.set()
        self.metrics.clients_connected.labels(transport=kind).dec()
        reason = client.disconnect_reason()
        self.metrics.client_disconnects.labels(reason=reason).inc()
        log.info("client.disconnected", transport=kind, reason=reason, clients=len(self.clients))

    def _check_handshake(self, transport: asyncio.Transport) -> None:
        self._handshakes.pop(transport, None)
        if transport.is_closing():
            return
        self.metrics.handshakes_refused.labels(reason="timeout").inc()
        transport.abort()

    def _on_status(self, status: Status) -> None:
        log.info("upstream.status", state=status.state, reason=status.reason)
        self.metrics.set_upstream_state(status.state)
        self.hub.broadcast(cp.status_frame(status.state, format_time(status.since), status.reason))


def _drop_http_parser(request: web.Request) -> None:
    """Free the connection's HTTP request parser once it carries WebSocket frames.

    aiohttp keeps it for the connection's life, unused after an accepted upgrade (a
    WebSocket reader parses from then on): about 0.8 KiB per idle client. aiohttp itself
    sets it to None when the connection is lost, so None is a state it handles; this only
    touches a protocol that has switched (guarded, so another aiohttp just keeps it).
    """
    protocol = request.protocol
    if getattr(protocol, "_upgraded", False) and getattr(protocol, "_payload_parser", None):
        protocol._parser = None
