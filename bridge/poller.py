"""The REST policy: reconcile while live, fall back while not, fill the gap on return.

Modes (chatwoot.md §8, seed plan phase 1):

* ``STARTING``: before the cable's first confirm. If it is not live within the
  startup grace, the fallback starts (a cable that never works still gets polled).
* ``LIVE``: a low-rate reconciliation pass every ``reconcile_interval`` finds what the
  cable silently missed; conversations changed in the last ``settle`` seconds wait for
  the next pass, so the cable gets the chance to deliver them first.
* ``OUTAGE``: the cable dropped or went silent. A pass runs every ``active_interval``
  while any conversation is active (watched by a client or recently busy), otherwise
  every ``inactive_interval``; paused while no client is connected, and the next pass
  covers the paused time.
* ``GAP_FILL``: the subscription is confirmed again; one pass covers what is left.

Each pass reads, per account, the conversation list with ``updated_within`` reaching
back to where the last successful pass ended (minus a margin), so request counts depend
on accounts and changed conversations, never on the number of clients. Failures back
off (jittered steps); after ``max_retries`` in a row the upstream is reported down and
retries continue at the longest step. A 401 is logged once.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable, Sequence

import structlog

from bridge.config import PollerConfig
from bridge.errors import RestError, RestRetryable, Unauthorized
from bridge.metrics import Metrics
from bridge.retry import Backoff
from bridge.status import UpstreamHealth
from bridge.sync import Syncer
from bridge.upstream import CableState


log = structlog.get_logger("bridge.poller")

# Seconds the first confirm may take at startup before the fallback starts.
STARTUP_GRACE = 15.0


class Mode(enum.Enum):
    """What the poller is doing."""

    # Before the first confirmed subscription.
    STARTING = "starting"
    # The cable is live; reconciliation only.
    LIVE = "live"
    # The cable is not live; REST is the source.
    OUTAGE = "outage"
    # The cable is live again; one pass fills what the outage left.
    GAP_FILL = "gap_fill"


GAP_REASON = {Mode.LIVE: "reconcile", Mode.OUTAGE: "outage", Mode.GAP_FILL: "reconnect"}


class Poller:
    """Runs REST passes when the mode asks for them.

    Args:
        cfg: intervals, retries, backoff, margins.
        syncer: runs one pass over one account.
        health: the combined upstream state.
        metrics: the metric objects.
        accounts: the bridged account ids (they may change on a profile re-read).
        clients: how many local clients are connected.
        any_active: whether any conversation is active at this time.
        last_frame_at: wall time of the cable's last frame (where a gap starts).
        clock: wall clock.
        rng: randomness for backoff jitter.
    """

    def __init__(
        self,
        cfg: PollerConfig,
        syncer: Syncer,
        health: UpstreamHealth,
        metrics: Metrics,
        *,
        accounts: Callable[[], Sequence[int]],
        clients: Callable[[], int],
        any_active: Callable[[float], bool],
        last_frame_at: Callable[[], float | None],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        startup_grace: float = STARTUP_GRACE,
        enabled: bool = True,
    ) -> None:
        self.cfg = cfg
        self.syncer = syncer
        self.health = health
        self.metrics = metrics
        self._accounts = accounts
        self._clients = clients
        self._any_active = any_active
        self._last_frame_at = last_frame_at
        self.clock = clock
        self.mode = Mode.STARTING
        self.started_at = clock()
        self.startup_grace = startup_grace
        # BRIDGE_SOURCES without poll: the cable's state is still reported, nothing polls.
        self.enabled = enabled
        # Where REST coverage begins: the first confirm, or the start of the fallback.
        self.coverage_start: float | None = None
        # Per account: everything before this time has been checked against REST.
        self.covered_until: dict[int, float] = {}
        self.last_pass_at: float | None = None
        self.failures = 0
        self.passes = 0
        self._backoff = Backoff(cfg.backoff, rng=rng)
        self._retry_at: float | None = None
        self._unauthorized_logged = False
        self._wake = asyncio.Event()

    # Inputs

    def cable_state(self, state: CableState, reason: str) -> None:
        """The upstream changed state (wired as a pipeline cable listener)."""
        now = self.clock()
        mode = self.mode
        if not self.enabled:
            self.health.set_cable(state.value, reason, now)
            return
        if state is CableState.LIVE:
            if mode is Mode.STARTING:
                self._begin_coverage(now)
                self.last_pass_at = now
                mode = Mode.LIVE
            elif mode is Mode.OUTAGE:
                mode = Mode.GAP_FILL
        elif mode in (Mode.LIVE, Mode.GAP_FILL):
            if self.cfg.reconcile_interval == 0:
                # Without reconciliation the cable is trusted up to its last frame.
                trusted = self._last_frame_at() or now
                for account in self._accounts():
                    self.covered_until[account] = max(
                        self.covered_until.get(account, trusted), trusted
                    )
            self.last_pass_at = None  # the first fallback pass runs at once
            mode = Mode.OUTAGE
        # One combined status change, not a "connecting" flash before "polling".
        self._set_mode(mode, now, publish=False)
        self.health.set_cable(state.value, reason, now)
        self._wake.set()

    def clients_changed(self) -> None:
        """A local client connected or left (wired as a hub listener)."""
        self._update_idle()
        self._wake.set()

    # Public methods

    async def run(self) -> None:
        """Run passes when due; returns only when cancelled."""
        while True:
            due = self._due_at()
            await self._wait(due)
            now = self.clock()
            if due is None or now < due:
                continue
            if self.mode is Mode.STARTING:
                log.warning("poll.cable_not_live_at_startup", grace=self.startup_grace)
                self._begin_coverage(now)
                self._set_mode(Mode.OUTAGE, now)
                continue
            await self.run_pass()

    async def run_pass(self) -> int:
        """One pass over every bridged account; returns the events it published."""
        mode = self.mode
        now = self.clock()
        settle = self.cfg.reconcile_settle if mode is Mode.LIVE else 0.0
        until = now - settle
        start = self.coverage_start if self.coverage_start is not None else now
        published = 0
        error: RestError | None = None
        for account in self._accounts():
            covered = self.covered_until.setdefault(account, start)
            # A message of the first second of coverage may carry that second's stamp.
            since = max(covered - self.cfg.gap_margin, start - 1.0)
            try:
                result = await self.syncer.sync_account(account, since, until)
            except RestError as exc:
                error = exc
                continue
            published += result.published
            if result.errors:
                error = result.errors[0]
            else:
                self.covered_until[account] = max(covered, until)
        self.last_pass_at = now
        self.passes += 1
        reason = GAP_REASON.get(mode, "outage")
        if published:
            self.metrics.gap_events.labels(reason=reason).inc(published)
            log.info("poll.gap_events", reason=reason, published=published)
        self.metrics.poll_passes.labels(mode=reason, outcome="error" if error else "ok").inc()
        if error is not None:
            self._failed(error, now)
        else:
            self._succeeded(now)
            if self.mode is Mode.GAP_FILL and mode is Mode.GAP_FILL:
                log.info("poll.gap_filled", published=published)
                self._set_mode(Mode.LIVE, now)
        return published

    # Private methods

    def _begin_coverage(self, now: float) -> None:
        if self.coverage_start is None:
            self.coverage_start = now

    def _set_mode(self, mode: Mode, now: float, *, publish: bool = True) -> None:
        if mode is self.mode:
            return
        previous, self.mode = self.mode, mode
        if mode is Mode.OUTAGE:
            log.info("poll.started", previous=previous.value)
        elif previous is Mode.OUTAGE:
            log.info("poll.stopped", mode=mode.value)
        self._update_idle()
        self.health.set_polling(mode is Mode.OUTAGE, now, publish=publish)

    def _due_at(self) -> float | None:
        """When the next pass is due (wall time), or None when nothing is scheduled."""
        cfg = self.cfg
        match self.mode:
            case Mode.STARTING:
                return self.started_at + self.startup_grace
            case Mode.LIVE:
                if cfg.reconcile_interval <= 0:
                    return None
                return (
                    self._retry_at or (self.last_pass_at or self.clock()) + cfg.reconcile_interval
                )
            case Mode.GAP_FILL:
                return self._retry_at or self.clock()
            case Mode.OUTAGE:
                if self._clients() == 0:
                    return None  # paused; the next pass covers the pause
                if self._retry_at is not None:
                    return self._retry_at
                if self.last_pass_at is None:
                    return self.clock()
                now = self.clock()
                interval = cfg.active_interval if self._any_active(now) else cfg.inactive_interval
                return self.last_pass_at + interval

    async def _wait(self, due: float | None) -> None:
        self._wake.clear()
        if due is None:
            await self._wake.wait()
            return
        delay = due - self.clock()
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _update_idle(self) -> None:
        self.health.board.idle = (
            self.mode is Mode.OUTAGE and self._clients() == 0 and self.failures == 0
        )

    def _failed(self, error: RestError, now: float) -> None:
        self.failures += 1
        if isinstance(error, Unauthorized):
            self.failures = max(self.failures, self.cfg.max_retries)
            if not self._unauthorized_logged:
                self._unauthorized_logged = True
                log.error("poll.unauthorized", error=str(error))
        else:
            log.warning(
                "poll.failed", error=str(error), endpoint=error.endpoint, failures=self.failures
            )
        delay = self._backoff.next_delay()
        if self.failures >= self.cfg.max_retries:
            delay = max(delay, self._backoff.cap)
        if isinstance(error, RestRetryable) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        self._retry_at = now + delay
        self._update_idle()
        if self.failures == self.cfg.max_retries:
            log.error("poll.down", failures=self.failures, error=str(error))
        self.health.poll_result(self.failures, str(error), now)

    def _succeeded(self, now: float) -> None:
        if self.failures:
            log.info("poll.recovered", after_failures=self.failures)
        self.failures = 0
        self._backoff.reset()
        self._retry_at = None
        self._unauthorized_logged = False
        self._update_idle()
        self.health.poll_result(0, "", now)
