"""ActionCable server speaking Chatwoot's RoomChannel, on aiohttp.

Owns ``GET /cable``: the Rails wire protocol (``/work/shared/chatwoot.md`` §6), RoomChannel's
silent-failure semantics (§1.2), stream fan-out of broadcasts (§2.2) and the socket-level fault
switches. Must not decide *what* is broadcast: that is ``model``'s job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.simulator.entities import Broadcast, Subscriber
from bridge.simulator.faults import RECORD_KEY, Faults
from bridge.simulator.store import NotFoundError, Store


PROTOCOL = "actioncable-v1-json"
# Frames queued for one socket; a client this far behind is cut off (Rails would buffer
# without limit, a simulator used in long demos must not).
MAX_QUEUED_FRAMES = 50_000
_log = structlog.get_logger("bridge.simulator")


@dataclass(frozen=True, slots=True)
class _Close:
    code: int


_STOP = _Close(-1)


@dataclass(slots=True)
class _Subscription:
    identifier: str
    # Empty until ``subscribed`` succeeds; a failed subscription stays stored with no streams.
    streams: frozenset[str] = frozenset()
    subscriber: Subscriber | None = None


@dataclass(eq=False, slots=True)
class _Connection:
    id: int
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[str | _Close] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_QUEUED_FRAMES)
    )
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    closing: bool = False


def encode(frame: dict[str, Any]) -> str:
    """Compact JSON, as Rails' ``ActiveSupport::JSON.encode`` writes frames."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class CableServer:
    """The ``/cable`` endpoint plus fan-out and socket faults."""

    def __init__(
        self, world: Store, faults: Faults, *, ping_interval: float, clock: Callable[[], float]
    ) -> None:
        self._world = world
        self._faults = faults
        self._ping_interval = ping_interval
        self._clock = clock
        self._connections: dict[int, _Connection] = {}
        self._next_id = 1
        # Set whenever no socket is open, so shutdown can wait for the last one.
        self._idle = asyncio.Event()
        self._idle.set()
        self.frames_silenced = 0
        self.broadcasts_dropped = 0
        self.broadcasts_delivered = 0

    # Public methods

    @property
    def connection_count(self) -> int:
        """Open sockets."""
        return len(self._connections)

    def subscription_counts(self) -> dict[str, int]:
        """Confirmed and silently failed subscriptions over all sockets."""
        subs = [s for c in self._connections.values() for s in c.subscriptions.values()]
        confirmed = sum(1 for s in subs if s.subscriber is not None)
        return {"confirmed": confirmed, "failed": len(subs) - confirmed}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /cable``: upgrade, welcome, then read commands until the socket closes."""
        if self._faults.refusing(self._clock()):
            _log.info("sim.cable.refused")
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(protocols=(PROTOCOL,), timeout=2.0)
        if not ws.can_prepare(request).ok:
            # Rails answers a plain GET (or a proxy that drops Upgrade) with 404 (§6.1).
            _log.info("sim.cable.upgrade_failed", reason="Failed to upgrade to WebSocket")
            return web.Response(status=404, text="Page not found")
        # No Origin check: Chatwoot disables request forgery protection (§1.1).
        await ws.prepare(request)
        record = request.get(RECORD_KEY)
        if record is not None:
            record.status = 101  # logged now, not when the socket eventually closes
        conn = _Connection(self._next_id, ws, request.transport)
        self._next_id += 1
        self._connections[conn.id] = conn
        self._idle.clear()
        _log.info("sim.cable.connected", connection=conn.id, protocol=ws.ws_protocol)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write_loop(conn))
                self._send(conn, encode({"type": "welcome"}))
                await self._read_loop(conn)
                # The socket is gone: what is still queued cannot be delivered.
                while not conn.queue.empty():
                    conn.queue.get_nowait()
                conn.queue.put_nowait(_STOP)
        finally:
            del self._connections[conn.id]
            if not self._connections:
                self._idle.set()
            _log.info(
                "sim.cable.disconnected",
                connection=conn.id,
                close_code=ws.close_code and int(ws.close_code),
            )
        return ws

    async def run_pings(self) -> None:
        """Ping every socket each ``ping_interval`` seconds, forever (Rails ``BEAT_INTERVAL``)."""
        while True:
            await asyncio.sleep(self._ping_interval)
            if self._faults.stop_pings:
                continue
            frame = encode({"type": "ping", "message": int(self._clock())})
            for conn in list(self._connections.values()):
                self._send(conn, frame)

    def publish(self, broadcasts: Iterable[Broadcast]) -> None:
        """Deliver model broadcasts, unless ``drop_broadcasts`` loses them like Sidekiq can."""
        for broadcast in broadcasts:
            if self._faults.drop_broadcasts:
                self.broadcasts_dropped += 1
                continue
            self._deliver(broadcast)

    def drop_connections(self, *, abrupt: bool = True) -> int:
        """Cut every socket: TCP abort when ``abrupt``, else a 1001 close frame.

        Returns:
            How many sockets were cut.
        """
        conns = list(self._connections.values())
        for conn in conns:
            conn.closing = True
            if abrupt and conn.transport is not None:
                conn.transport.abort()
            else:
                _put_close(conn, WSCloseCode.GOING_AWAY)
        _log.info("sim.cable.dropped", connections=len(conns), abrupt=abrupt)
        return len(conns)

    def disconnect(self, reason: str, *, reconnect: bool) -> int:
        """Send Rails' ``disconnect`` frame to every socket, then close it with 1000 (§6.2).

        Returns:
            How many sockets were told.
        """
        frame = encode({"type": "disconnect", "reason": reason, "reconnect": reconnect})
        conns = list(self._connections.values())
        for conn in conns:
            self._send(conn, frame)
            conn.closing = True
            _put_close(conn, WSCloseCode.OK)
        _log.info(
            "sim.cable.disconnect", connections=len(conns), reason=reason, reconnect=reconnect
        )
        return len(conns)

    async def shutdown(self, grace: float = 2.0) -> None:
        """Close every socket with 1001 and wait up to ``grace`` seconds, then abort leftovers."""
        self.drop_connections(abrupt=False)
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            for conn in list(self._connections.values()):
                if conn.transport is not None:
                    conn.transport.abort()

    # Private methods

    async def _read_loop(self, conn: _Connection) -> None:
        async for msg in conn.ws:
            if msg.type is WSMsgType.TEXT:
                self._command(conn, msg.data)
            elif msg.type is WSMsgType.ERROR:
                break

    async def _write_loop(self, conn: _Connection) -> None:
        while True:
            item = await conn.queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Close):
                await conn.ws.close(code=item.code)
                return
            if conn.ws.closed:
                continue
            try:
                await conn.ws.send_str(item)
            except ConnectionError:
                return

    def _send(self, conn: _Connection, text: str) -> None:
        if conn.closing:
            return
        if self._faults.stop_pings:
            # Silence drops frames rather than queueing them: a half-open path loses them.
            self.frames_silenced += 1
            return
        try:
            conn.queue.put_nowait(text)
        except asyncio.QueueFull:
            _log.warning("sim.cable.slow_client", connection=conn.id)
            conn.closing = True
            if conn.transport is not None:
                conn.transport.abort()

    def _deliver(self, broadcast: Broadcast) -> None:
        # One ActionCable.server.broadcast per stream; each subscription streaming from it gets
        # the frame under its own identifier, whatever account it subscribed with (§2.2).
        message = encode({"event": broadcast.event, "data": broadcast.data})
        for stream in broadcast.streams:
            for conn in list(self._connections.values()):
                for sub in conn.subscriptions.values():
                    if stream in sub.streams:
                        self.broadcasts_delivered += 1
                        self._send(
                            conn,
                            f'{{"identifier":{json.dumps(sub.identifier)},"message":{message}}}',
                        )

    def _command(self, conn: _Connection, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            _log.warning("sim.command.invalid", connection=conn.id, error="not JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("identifier"), str):
            _log.warning(
                "sim.command.failed", connection=conn.id, error="Could not execute command"
            )
            return
        identifier: str = data["identifier"]
        command = data.get("command")
        if command == "subscribe":
            self._subscribe(conn, identifier)
        elif command == "unsubscribe":
            if conn.subscriptions.pop(identifier, None) is None:
                _log.warning("sim.unsubscribe.unknown", connection=conn.id)
        elif command == "message":
            self._perform(conn, identifier, data.get("data"))
        else:
            _log.warning("sim.command.unrecognized", connection=conn.id, command=str(command))

    def _subscribe(self, conn: _Connection, identifier: str) -> None:
        # Subscriptions#add: keyed by the identifier *string*; a repeat is a silent no-op.
        if identifier in conn.subscriptions:
            _log.info("sim.subscribe.duplicate_ignored", connection=conn.id)
            return
        try:
            params = json.loads(identifier)
        except ValueError:
            _log.warning("sim.subscribe.failed", connection=conn.id, reason="identifier not JSON")
            return
        if not isinstance(params, dict) or params.get("channel") != "RoomChannel":
            _log.warning(
                "sim.subscribe.failed", connection=conn.id, reason="Subscription class not found"
            )
            return
        # Stored *before* ``subscribed`` runs, so a failure leaves it in place (§1.2).
        sub = _Subscription(identifier)
        conn.subscriptions[identifier] = sub
        try:
            subscriber = self._world.resolve_subscriber(params)
        except NotFoundError as exc:
            # Rails logs "Could not execute command ... RecordNotFound" and sends nothing:
            # no confirm_subscription, no reject_subscription.
            _log.warning(
                "sim.subscribe.failed",
                connection=conn.id,
                reason=f"Could not execute command: {exc}",
                user_id=_loggable(params.get("user_id")),
                account_id=_loggable(params.get("account_id")),
            )
            return
        sub.subscriber, sub.streams = subscriber, frozenset(subscriber.streams)
        self._send(conn, encode({"identifier": identifier, "type": "confirm_subscription"}))
        _log.info(
            "sim.subscribe.confirmed",
            connection=conn.id,
            kind=subscriber.kind,
            subscriber_id=subscriber.id,
            account_id=subscriber.account_id,
        )
        self._presence(subscriber)

    def _perform(self, conn: _Connection, identifier: str, raw: object) -> None:
        sub = conn.subscriptions.get(identifier)
        if sub is None:
            _log.warning(
                "sim.command.failed", connection=conn.id, error="Unable to find subscription"
            )
            return
        try:
            action = json.loads(raw).get("action") if isinstance(raw, str) else None
        except (ValueError, AttributeError):
            action = None
        if sub.subscriber is None:
            # Issue #3695: the failed subscription has no user, so the action raises.
            _log.warning(
                "sim.command.failed", connection=conn.id, error="Could not execute command"
            )
            return
        if action != "update_presence":
            _log.warning(
                "sim.command.failed", connection=conn.id, error=f"Unable to process {action!r}"
            )
            return
        self._presence(sub.subscriber)

    def _presence(self, subscriber: Subscriber) -> None:
        # broadcast_presence goes straight to the cable server, not through Sidekiq, so the
        # drop_broadcasts switch does not apply to it.
        self._deliver(self._world.presence(subscriber, now=self._clock()))


def _put_close(conn: _Connection, code: int) -> None:
    try:
        conn.queue.put_nowait(_Close(code))
    except asyncio.QueueFull:
        if conn.transport is not None:
            conn.transport.abort()


def _loggable(value: object) -> int | str | None:
    # Identifier ids are logged for debugging; anything that is not a small id is elided.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 12:
        return value
    return None if value is None else "<invalid>"
