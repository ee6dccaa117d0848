"""The composition root: builds every component, wires them, runs them, stops them.

Shutdown is ordered and bounded (uvicorn, anycable): stop accepting → stop the
upstream → close clients with 1001 and wait ≤ grace → close the HTTP session.
No protocol or business logic lives here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge import __version__
from bridge.auth import build_authenticator
from bridge.bootstrap import IdentityResolver
from bridge.cache import MessageCache
from bridge.commands import Commands
from bridge.config import Config
from bridge.errors import RestFatal, RestRetryable
from bridge.eventlog import MemoryEventLog
from bridge.hub import Coalescing, Hub, Subscriber
from bridge.logs import REDACTOR
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.poller import STARTUP_GRACE, Poller
from bridge.ports import EventStore, LocalEventStore, LocalLease, UpstreamLease
from bridge.rest import ChatwootREST
from bridge.server import LocalServer
from bridge.static import StaticFiles
from bridge.status import StatusBoard, UpstreamHealth
from bridge.sync import Syncer, remember
from bridge.systemd import Notifier
from bridge.tracking import ConversationTracker
from bridge.upstream import Identity, Upstream
from bridge.webhooks import WebhookReceiver


log = structlog.get_logger("bridge.app")


class LoopScheduler:
    """The hub's clock and timer: the running event loop's (looked up when used, so the
    bridge may be built before its loop runs)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], object], /) -> object:
        return asyncio.get_running_loop().call_at(when, callback)


class Bridge:
    """The daemon: one object per process (or per test).

    Args:
        cfg: the validated configuration.
        registry: the Prometheus registry (a fresh one by default).
        store: the event log (in memory by default).
        lease: upstream ownership (always held by default).
        notifier: systemd notifications (none by default).
        clock: wall clock.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        registry: CollectorRegistry | None = None,
        store: EventStore | None = None,
        lease: UpstreamLease | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.metrics = Metrics.create(
            registry or CollectorRegistry(auto_describe=True), __version__
        )
        if store is None:
            log_ = MemoryEventLog(
                secrets.token_hex(6),
                cfg.eventlog.replay_size,
                cfg.eventlog.dedupe_size,
                cfg.eventlog.max_bytes,
            )
            self.metrics.eventlog_entries.set_function(lambda: len(log_))
            store = LocalEventStore(log_)
        self.store = store
        self.lease = lease or LocalLease()
        self.status = StatusBoard(clock())
        self.health = UpstreamHealth(self.status, cfg.poller.max_retries)
        window = cfg.limits.coalesce_max
        self.hub = Hub(
            on_slow=self._on_slow,
            scheduler=LoopScheduler(),
            coalescing=Coalescing(max_window=window, min_window=min(0.010, window)),
        )
        self.pipeline = Pipeline(self.store, self.hub, self.metrics, clock=clock)
        self.cache = MessageCache(
            cfg.cache.max_messages, cfg.cache.ttl, on_lookup=self._on_cache_lookup
        )
        self.metrics.cache_messages.set_function(lambda: self.cache.messages_held)
        self.metrics.cache_bytes.set_function(lambda: self.cache.bytes_held)
        self.tracker = ConversationTracker()
        self.pipeline.observers.append(
            lambda entry: remember(entry, self.cache, self.tracker, clock())
        )
        self.accounts: tuple[int, ...] = ()
        self.poller: Poller | None = None
        self.server = LocalServer(
            cfg.server,
            self.hub,
            self.store,
            self.status,
            self.metrics,
            poll_window=cfg.poller.inactive_interval + cfg.rest.timeout,
            limits=cfg.limits,
            authenticator=build_authenticator(cfg.auth),
            allowed_origins=cfg.auth.allowed_origins,
            clock=clock,
        )
        self.server.routes.extend(StaticFiles().routes())
        if "webhook" in cfg.sources:
            receiver = WebhookReceiver(
                cfg.webhook,
                self.pipeline.publish,
                lambda: self.pipeline.accounts,
                self.metrics,
                ephemeral="cable" not in cfg.sources,
                clock=clock,
            )
            self.server.routes.extend(receiver.routes())
        self.metrics.set_upstream_state(self.status.current.state)
        self.url: str | None = None

    async def run(
        self, stop: asyncio.Event, *, on_ready: Callable[[str], None] | None = None
    ) -> None:
        """Run until ``stop`` is set, then shut down in order.

        Raises:
            Unauthorized: the API token is refused at startup (exit 1).
            RestFatal: TLS or account configuration problems at startup (exit 1).
        """
        cfg = self.cfg
        notifier = self.notifier
        async with AsyncExitStack() as stack:
            stack.callback(notifier.close)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=cfg.rest.concurrency * 2),
                    trust_env=False,
                )
            )
            upstream, poller = await self._build(session)
            runner = web.AppRunner(
                self.server.build_app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            if runner.server is not None:
                self.server.watch_connections(runner.server)
            site = web.TCPSite(runner, cfg.server.host, cfg.server.port, reuse_address=True)
            await site.start()
            self.url = _site_url(runner, cfg.server.host)
            log.info("bridge.listening", url=self.url, version=__version__)
            self.status.subscribe(lambda s: notifier.status(f"upstream {s.state}: {s.reason}"))
            notifier.ready(f"listening on {self.url}; upstream {self.status.current.state}")
            if on_ready is not None:
                on_ready(self.url)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._housekeeping(), name="housekeeping"),
                    tg.create_task(notifier.watchdog(), name="watchdog"),
                ]
                # The sources are the seed plan's feature flags (BRIDGE_SOURCES).
                if "cable" in cfg.sources:
                    tasks.append(tg.create_task(self._hold_upstream(upstream), name="upstream"))
                if "poll" in cfg.sources:
                    tasks.append(tg.create_task(poller.run(), name="poller"))
                await stop.wait()
                log.info("bridge.stopping")
                notifier.stopping()
                await site.stop()
                for task in tasks:
                    task.cancel()
            await self._close_clients()
            await self.lease.release()
        log.info("bridge.stopped")

    async def _build(self, session: aiohttp.ClientSession) -> tuple[Upstream, Poller]:
        """The services that need the HTTP session; reads the profile once."""
        cfg = self.cfg
        rest = ChatwootREST(
            session, cfg.upstream.url, cfg.upstream.api_token, cfg.rest, self.metrics
        )
        identity = IdentityResolver(
            cfg.upstream, rest, on_secret=lambda s: REDACTOR.add([s]), on_identity=self._on_identity
        )
        await self._bootstrap(identity)
        upstream = Upstream(cfg.upstream, identity, self.pipeline, self.metrics, clock=self.clock)
        syncer = Syncer(
            rest, self.cache, self.tracker, self.pipeline.publish, self.store.seen, clock=self.clock
        )
        poller = self.poller = Poller(
            cfg.poller,
            syncer,
            self.health,
            self.metrics,
            accounts=lambda: self.accounts,
            clients=lambda: len(self.hub),
            any_active=self._any_active,
            last_frame_at=lambda: upstream.last_frame_at,
            clock=self.clock,
            enabled="poll" in cfg.sources,
            # Without the cable, REST is the source from the start.
            startup_grace=STARTUP_GRACE if "cable" in cfg.sources else 0.0,
        )
        if "cable" not in cfg.sources:
            only = "webhooks" if "poll" not in cfg.sources else "REST"
            self.health.set_cable(
                "live" if only == "webhooks" else "down", f"cable off; {only} only", self.clock()
            )
        self.server.commands = Commands(
            rest, self.cache, self.tracker, lambda: self.pipeline.accounts, clock=self.clock
        )
        self.server.accounts = lambda: self.accounts
        self.pipeline.cable_listeners.append(poller.cable_state)
        self.hub.on_change.append(poller.clients_changed)
        return upstream, poller

    # Private methods

    async def _bootstrap(self, identity: IdentityResolver) -> None:
        """Read the profile once before listening: a wrong token fails fast and clearly."""
        try:
            await identity(False)
        except RestRetryable as exc:
            # Chatwoot may simply start after us; the upstream loop keeps trying.
            log.warning("bootstrap.unreachable", error=str(exc))
            return
        except RestFatal as exc:
            log.error("bootstrap.failed", error=str(exc))
            raise

    def _on_identity(self, identity: Identity) -> None:
        self.accounts = identity.account_ids
        self.pipeline.accounts = frozenset(identity.account_ids)

    def _on_cache_lookup(self, hit: bool, key: tuple[int, int]) -> None:
        (self.metrics.cache_hits if hit else self.metrics.cache_misses).inc()
        log.debug("cache.hit" if hit else "cache.miss", account_id=key[0], conversation_id=key[1])

    def _any_active(self, now: float) -> bool:
        """A conversation is active when a client names it or it was busy lately."""
        return bool(self.hub.watched_conversations()) or bool(
            self.tracker.active(now, self.cfg.cache.ttl)
        )

    async def _housekeeping(self) -> None:
        """Expire cached conversations (TTL) now and then."""
        period = max(1.0, min(30.0, self.cfg.cache.ttl / 10))
        while True:
            await asyncio.sleep(period)
            self.cache.sweep(self.clock())

    async def _hold_upstream(self, upstream: Upstream) -> None:
        """Run the upstream while this node holds the lease."""
        await self.lease.acquire()
        await upstream.run()

    async def _close_clients(self) -> None:
        grace = self.cfg.server.shutdown_grace
        self.server.close_clients()
        try:
            async with asyncio.timeout(grace):
                await self.server.wait_no_clients()
        except TimeoutError:
            log.warning("bridge.shutdown_grace_exceeded", clients=len(self.server.clients))
            for client in list(self.server.clients):
                client.transport.abort()

    def _on_slow(self, _: Subscriber) -> None:
        log.info("client.slow_consumer")


def _site_url(runner: web.AppRunner, host: str) -> str:
    """The URL actually bound (port 0 picks a free one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound_host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            return f"http://{bound_host}:{address[1]}"
    return f"http://{host}"
