"""The upstream connection manager: drives :class:`~bridge.actioncable.CableClient`
over a websockets client connection, and keeps it alive.

Follows chatwoot.md §8: one RoomChannel subscription per bridged account; no confirm
within the timeout is a failure that re-reads the profile and opens a **new** socket
(Chatwoot answers a bad token with silence and ignores a repeat subscribe on the same
socket); more than ``stale_after`` seconds without a ping means a dead socket; reconnect
with jittered step backoff; ``disconnect`` with ``reconnect:false`` means a long wait,
never a hot loop. It knows nothing of local clients, REST polling or the hub.
"""

from __future__ import annotations

import asyncio
import enum
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bridge import actioncable as ac
from bridge.config import Secret, UpstreamConfig
from bridge.errors import RestError, RestFatal, Unauthorized
from bridge.metrics import Metrics
from bridge.retry import Backoff


log = structlog.get_logger("bridge.upstream")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bridge subscribes as."""

    pubsub_token: Secret
    user_id: int
    account_ids: tuple[int, ...]


class CableState(enum.Enum):
    """The cable as the rest of the bridge needs to know it."""

    # A socket is being opened or subscriptions are not all confirmed yet.
    CONNECTING = "connecting"
    # Every subscription is confirmed: events flow.
    LIVE = "live"
    # The cable cannot work until someone acts (401, TLS, reconnect:false).
    DOWN = "down"


class UpstreamListener(Protocol):
    """What the upstream calls back into (the app wires these)."""

    def cable_state(self, state: CableState, reason: str) -> None:
        """The cable changed state."""

    async def cable_message(
        self, payload: object, received_at: float, account_id: int | None
    ) -> None:
        """A broadcast arrived on the subscription of ``account_id``."""


IdentitySource = Callable[[bool], Awaitable[Identity]]


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Why one socket's life ended and what to do next."""

    reason: str
    # Re-read the profile before the next socket (the token may have rotated).
    refresh: bool = False
    # Wait exactly this long (reconnect:false); None means the normal backoff.
    delay: float | None = None
    # The subscriptions were all confirmed at some point.
    was_live: bool = False
    # Nothing to retry soon: TLS trouble, refused protocol (reported as down).
    fatal: bool = False


def origin_of(url: str) -> str:
    """The ``Origin`` header for Chatwoot's host (scheme and authority of CHATWOOT_URL).

    Stock Chatwoot accepts any Origin (chatwoot.md §1.1), but a hardened install with
    ``allowed_request_origins`` expects its own host, as the dashboard sends.
    """
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


class Upstream:
    """Keeps one ActionCable connection to Chatwoot subscribed, forever.

    Args:
        cfg: URLs, timeouts, backoff.
        identity: returns the subscription identity; ``True`` asks it to re-read the profile.
        listener: receives state changes and messages.
        metrics: the metric objects.
        clock: wall clock (for ``received_at``).
        rng: randomness for backoff jitter.
    """

    def __init__(
        self,
        cfg: UpstreamConfig,
        identity: IdentitySource,
        listener: UpstreamListener,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._identity = identity
        self._listener = listener
        self._metrics = metrics
        self._clock = clock
        self._backoff = Backoff(cfg.reconnect_delays, rng=rng)
        self._sockets = 0
        # Identifier of each subscription of the current socket -> its account.
        self._subscribed: dict[str, int] = {}
        # Whether the current socket's subscriptions have all been confirmed.
        self._live = False
        self.state = CableState.CONNECTING
        # Wall time of the last frame received on any socket: where a gap fill starts.
        self.last_frame_at: float | None = None

    # Public methods

    async def run(self) -> None:
        """Connect, subscribe, reconnect; returns only when cancelled."""
        refresh = False
        while True:
            end = await self.attempt(refresh=refresh)
            if end.was_live:
                self._backoff.reset()
            refresh = end.refresh
            if end.delay is not None:
                delay = end.delay
            elif end.fatal:
                delay = self._backoff.cap
            else:
                delay = self._backoff.next_delay()
            if end.fatal or end.delay is not None:
                self._set_state(CableState.DOWN, end.reason)
            else:
                self._set_state(CableState.CONNECTING, end.reason)
            log.info("upstream.reconnecting", reason=end.reason, delay=round(delay, 3))
            await asyncio.sleep(delay)

    async def attempt(self, *, refresh: bool = False, until_live: bool = False) -> SessionEnd:
        """One socket's life: identity, connect, subscribe, read until it ends.

        Args:
            refresh: re-read the profile first.
            until_live: end as soon as every subscription is confirmed (``check``).
        """
        try:
            identity = await self._identity(refresh)
        except Unauthorized as exc:
            log.error("upstream.unauthorized", error=str(exc))
            return SessionEnd(str(exc), refresh=True, delay=self.cfg.refused_delay)
        except RestFatal as exc:
            log.error("upstream.bootstrap_failed", error=str(exc))
            return SessionEnd(str(exc), refresh=True, fatal=True)
        except RestError as exc:
            log.warning("upstream.bootstrap_failed", error=str(exc))
            return SessionEnd(str(exc), refresh=True)
        if not identity.account_ids:
            return SessionEnd("the profile lists no account to bridge", refresh=True, fatal=True)
        return await self._session(identity, until_live=until_live)

    # Private methods

    def _set_state(self, state: CableState, reason: str) -> None:
        if state is not self.state:
            self.state = state
            self._listener.cable_state(state, reason)

    async def _connect(self) -> ClientConnection:
        self._sockets += 1
        if self._sockets > 1:
            self._metrics.upstream_reconnects.inc()
        log.info("upstream.connecting", url=self.cfg.cable_url)
        return await connect(
            self.cfg.cable_url,
            origin=websockets.Origin(origin_of(self.cfg.url or self.cfg.cable_url)),
            subprotocols=[Subprotocol(ac.SUBPROTOCOL), Subprotocol(ac.UNSUPPORTED_SUBPROTOCOL)],
            compression=None,
            open_timeout=self.cfg.open_timeout,
            # ActionCable has its own pings (3 s); liveness is judged on those.
            ping_interval=None,
            close_timeout=2,
            max_size=self.cfg.max_frame_bytes,
            proxy=None,
            user_agent_header="chatwoot-bridge",
        )

    async def _session(self, identity: Identity, *, until_live: bool) -> SessionEnd:
        try:
            ws = await self._connect()
        except ssl.SSLError as exc:
            log.error("upstream.tls_error", error=str(exc)[:200])
            return SessionEnd(f"TLS error on the cable: {str(exc)[:200]}", fatal=True)
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            log.warning("upstream.handshake_refused", status=status)
            # Rails answers 404 for a non-upgrade request: a proxy dropping Upgrade headers
            # (chatwoot.md §7 item 8) or a wrong CHATWOOT_CABLE_URL.
            return SessionEnd(f"cable handshake refused with HTTP {status}")
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            log.warning("upstream.connect_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return SessionEnd(f"cannot open the cable: {type(exc).__name__}")
        try:
            if ws.subprotocol != ac.SUBPROTOCOL:
                log.error(
                    "upstream.subprotocol_refused", offered=ac.SUBPROTOCOL, got=ws.subprotocol
                )
                return SessionEnd("server does not speak actioncable-v1-json", fatal=True)
            return await self._converse(ws, identity, until_live=until_live)
        finally:
            await ws.close()

    async def _converse(
        self, ws: ClientConnection, identity: Identity, *, until_live: bool
    ) -> SessionEnd:
        self._live = False
        try:
            return await self._read_until_end(ws, identity, until_live=until_live)
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            log.info("upstream.closed", code=code)
            return SessionEnd(f"cable closed (code {code})", was_live=self._live)

    async def _read_until_end(
        self, ws: ClientConnection, identity: Identity, *, until_live: bool
    ) -> SessionEnd:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        now = loop.time()
        client = ac.CableClient(now)
        token = identity.pubsub_token.get()
        self._subscribed = {
            ac.room_identifier(token, account_id, identity.user_id): account_id
            for account_id in identity.account_ids
        }
        for identifier in self._subscribed:
            client.subscribe(identifier, now)
        next_presence = now + cfg.presence_interval
        while True:
            deadline = client.next_deadline(cfg.stale_after, cfg.subscribe_timeout)
            heartbeat = cfg.presence and self._live
            if heartbeat:
                deadline = min(deadline, next_presence)
            try:
                async with asyncio.timeout_at(deadline):
                    text = await ws.recv()
            except TimeoutError:
                now = loop.time()
                end = self._check_timers(client, now)
                if end is not None:
                    return end
                if heartbeat and now >= next_presence:
                    next_presence = now + cfg.presence_interval
                    self._heartbeat(client)
                    await self._flush(ws, client)
                continue
            now = loop.time()
            self.last_frame_at = self._clock()
            self._metrics.upstream_last_frame.set(self.last_frame_at)
            client.receive_text(text, now)
            await self._flush(ws, client)
            for event in client.events_received():
                end_or_confirmed = await self._handle(event, client, self._live)
                if isinstance(end_or_confirmed, SessionEnd):
                    return end_or_confirmed
                if end_or_confirmed and not self._live:
                    self._live = True
                    next_presence = now + cfg.presence_interval
                    log.info("upstream.live", accounts=list(identity.account_ids))
                    self._set_state(CableState.LIVE, "subscribed")
                    if until_live:
                        return SessionEnd("probe complete", was_live=True)

    def _check_timers(self, client: ac.CableClient, now: float) -> SessionEnd | None:
        """The subscribe timeout and the staleness rule, checked when a deadline passes."""
        cfg = self.cfg
        if client.overdue(now, cfg.subscribe_timeout):
            self._metrics.subscribe_failures.labels(reason="timeout").inc()
            log.warning("upstream.subscribe_timeout", timeout=cfg.subscribe_timeout)
            return SessionEnd(
                f"subscription not confirmed within {cfg.subscribe_timeout:g} s",
                refresh=True,
                was_live=self._live,
            )
        if client.is_stale(now, cfg.stale_after):
            log.warning("upstream.stale", silent_for=round(now - client.last_heartbeat_at, 3))
            return SessionEnd(f"no ping for {cfg.stale_after:g} s", was_live=self._live)
        return None

    @staticmethod
    def _heartbeat(client: ac.CableClient) -> None:
        """update_presence on every confirmed subscription (BRIDGE_PRESENCE=on only)."""
        for identifier, state in client.subscriptions.items():
            if state is ac.SubscriptionState.CONFIRMED:
                client.perform(identifier, "update_presence")

    async def _handle(
        self, event: ac.CableEvent, client: ac.CableClient, live: bool
    ) -> SessionEnd | bool:
        """Act on one event; a :class:`SessionEnd` ends the socket, True means all confirmed."""
        frames = self._metrics.upstream_frames
        match event:
            case ac.Message(identifier, payload):
                frames.labels(type="message").inc()
                try:
                    await self._listener.cable_message(
                        payload,
                        self.last_frame_at or self._clock(),
                        self._subscribed.get(identifier),
                    )
                except Exception as exc:  # one bad event must not take the cable down
                    log.exception("upstream.publish_error", error_type=type(exc).__name__)
            case ac.Ping():
                frames.labels(type="ping").inc()
            case ac.Welcome():
                frames.labels(type="welcome").inc()
                log.info("upstream.connected", subscriptions=len(client.subscriptions))
            case ac.Confirmed():
                frames.labels(type="confirm_subscription").inc()
                log.info("upstream.subscribed")
                return client.all_confirmed
            case ac.Rejected():
                frames.labels(type="reject_subscription").inc()
                self._metrics.subscribe_failures.labels(reason="rejected").inc()
                log.warning("upstream.subscription_rejected")
                return SessionEnd("subscription rejected", refresh=True, was_live=live)
            case ac.Disconnect(reason, reconnect):
                frames.labels(type="disconnect").inc()
                log.warning("upstream.disconnect_frame", reason=reason, reconnect=reconnect)
                if not reconnect:
                    return SessionEnd(
                        f"server disconnected us ({reason}) and asked us not to reconnect",
                        refresh=True,
                        delay=self.cfg.refused_delay,
                        was_live=live,
                    )
                return SessionEnd(f"server disconnected us ({reason})", was_live=live)
            case ac.Violation(reason, size):
                frames.labels(type="invalid").inc()
                self._metrics.upstream_violations.inc()
                log.warning("upstream.violation", reason=reason, size=size)
        return False

    async def _flush(self, ws: ClientConnection, client: ac.CableClient) -> None:
        for text in client.data_to_send():
            await ws.send(text)
