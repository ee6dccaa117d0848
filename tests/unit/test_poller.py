"""The poller's policy: modes, cadence, pause, windows, failures and the combined state."""

from __future__ import annotations

import asyncio
import random

import pytest

from bridge.config import PollerConfig
from bridge.errors import RestRetryable, Unauthorized
from bridge.metrics import Metrics
from bridge.poller import Mode, Poller
from bridge.status import StatusBoard, UpstreamHealth
from bridge.sync import PassResult
from bridge.upstream import CableState


class FakeSyncer:
    """Records passes; fails while ``errors`` holds exceptions."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, float]] = []
        self.errors: list[Exception] = []
        self.published = 0
        self.called = asyncio.Event()

    async def sync_account(self, account_id: int, since: float, until: float) -> PassResult:
        self.calls.append((account_id, since, until))
        self.called.set()
        if self.errors:
            raise self.errors.pop(0)
        return PassResult(published=self.published)


class Rig:
    def __init__(self, metrics: Metrics, **cfg) -> None:
        self.now = 1000.0
        self.clients = 1
        self.active = False
        self.last_frame: float | None = None
        self.board = StatusBoard(self.now)
        defaults = {
            "active_interval": 3.0,
            "inactive_interval": 30.0,
            "max_retries": 3,
            "backoff": (1.0, 2.0, 5.0),
            "reconcile_interval": 60.0,
            "gap_margin": 30.0,
            "reconcile_settle": 10.0,
        }
        defaults.update(cfg)
        self.cfg = PollerConfig(**defaults)
        self.health = UpstreamHealth(self.board, self.cfg.max_retries)
        self.syncer = FakeSyncer()
        self.metrics = metrics
        self.poller = Poller(
            self.cfg,
            self.syncer,  # type: ignore[arg-type]
            self.health,
            metrics,
            accounts=lambda: (1, 2),
            clients=lambda: self.clients,
            any_active=lambda now: self.active,
            last_frame_at=lambda: self.last_frame,
            clock=lambda: self.now,
            rng=random.Random(1),
        )

    def cable(self, state: CableState, reason: str = "r") -> None:
        self.poller.cable_state(state, reason)


@pytest.fixture
def rig(metrics: Metrics) -> Rig:
    return Rig(metrics)


def test_first_confirm_starts_coverage_and_reconciliation(rig: Rig):
    """STARTING → LIVE: coverage starts now, the first reconciliation is one interval away."""
    assert rig.poller._due_at() == rig.now + 15.0  # startup grace
    rig.cable(CableState.LIVE, "subscribed")
    assert rig.poller.mode is Mode.LIVE
    assert rig.poller.coverage_start == 1000.0
    assert rig.poller._due_at() == 1060.0
    assert rig.board.current.state == "live"


async def test_reconcile_pass_uses_settle_and_covers_from_the_start(rig: Rig):
    """A reconciliation leaves the last `settle` seconds for the cable and reaches back a margin."""
    rig.cable(CableState.LIVE)
    rig.now = 1060.0
    await rig.poller.run_pass()
    # since is clamped at the start of coverage (minus a second), until leaves 10 s settle
    assert rig.syncer.calls == [(1, 999.0, 1050.0), (2, 999.0, 1050.0)]
    rig.now = 1120.0
    await rig.poller.run_pass()
    assert rig.syncer.calls[-1] == (2, 1020.0, 1110.0)


def test_loss_switches_to_polling_at_once(rig: Rig):
    """Losing the cable engages the fallback: state polling, first pass due now."""
    rig.cable(CableState.LIVE)
    states = []
    rig.board.subscribe(lambda s: states.append(s.state))
    rig.cable(CableState.CONNECTING, "no ping for 6 s")
    assert rig.poller.mode is Mode.OUTAGE
    assert states == ["polling"]  # no "connecting" flash in between
    assert rig.board.current.reason == "cable: no ping for 6 s; polling REST"
    assert rig.poller._due_at() == rig.now


def test_cadence_follows_activity_and_pauses_without_clients(rig: Rig):
    """Active conversations: every active interval; otherwise inactive; none without clients."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.poller.last_pass_at = rig.now
    assert rig.poller._due_at() == rig.now + 30.0
    rig.active = True
    assert rig.poller._due_at() == rig.now + 3.0
    rig.clients = 0
    assert rig.poller._due_at() is None


async def test_paused_time_is_covered_by_the_next_pass(rig: Rig):
    """The window reaches back to where the last successful pass ended, however long ago."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.now = 1100.0
    await rig.poller.run_pass()
    rig.now = 5000.0  # an hour with no clients
    await rig.poller.run_pass()
    assert rig.syncer.calls[-1] == (2, 1100.0 - 30.0, 5000.0)


async def test_failures_back_off_then_report_down_then_recover(rig: Rig):
    """Consecutive failures back off; at max_retries the state is down; a success recovers."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.syncer.errors = [RestRetryable("500", endpoint="conversations", outcome="server_error")] * 6
    delays = []
    for _ in range(3):
        await rig.poller.run_pass()
        delays.append(rig.poller._due_at() - rig.now)
        assert rig.syncer.calls  # it did try
    assert rig.board.current.state == "down"
    assert "REST failing" in rig.board.current.reason
    assert delays[0] < delays[1] < delays[2]
    assert delays[2] >= 5.0  # at the longest step once down
    rig.syncer.errors = []
    await rig.poller.run_pass()
    assert rig.board.current.state == "polling"
    assert rig.board.last_poll_ok == rig.now
    assert rig.metrics.poll_passes.labels(mode="outage", outcome="error")._value.get() == 3


async def test_401_is_down_at_once_and_logged_once(rig: Rig):
    """A refused token is reported once and never hot-loops."""
    from structlog.testing import capture_logs  # noqa: PLC0415

    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.syncer.errors = [Unauthorized("401", endpoint="conversations", status=401)] * 10
    with capture_logs() as logs:
        for _ in range(3):
            await rig.poller.run_pass()
    assert rig.board.current.state == "down"
    assert [e["event"] for e in logs].count("poll.unauthorized") == 1
    assert rig.poller._due_at() - rig.now >= 5.0


async def test_retry_after_is_honoured(rig: Rig):
    """A Retry-After (when a proxy sends one) lengthens the wait."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.syncer.errors = [
        RestRetryable("429", endpoint="conversations", status=429, retry_after=42.0)
    ]
    await rig.poller.run_pass()
    assert rig.poller._due_at() - rig.now == pytest.approx(42.0)


async def test_reconnect_fills_the_gap_then_goes_live(rig: Rig):
    """OUTAGE → confirm → GAP_FILL (due now) → one successful pass → LIVE."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    rig.cable(CableState.LIVE)
    assert rig.poller.mode is Mode.GAP_FILL
    assert rig.board.current.state == "live"
    assert rig.poller._due_at() == rig.now
    rig.syncer.published = 4
    await rig.poller.run_pass()
    assert rig.poller.mode is Mode.LIVE
    assert rig.metrics.gap_events.labels(reason="reconnect")._value.get() == 8


async def test_without_reconciliation_the_cable_is_trusted_to_its_last_frame(metrics):
    """reconcile off: on loss, coverage jumps to the cable's last frame."""
    rig = Rig(metrics, reconcile_interval=0.0)
    rig.cable(CableState.LIVE)
    assert rig.poller._due_at() is None
    rig.last_frame = 1500.0
    rig.now = 1506.0
    rig.cable(CableState.CONNECTING)
    await rig.poller.run_pass()
    assert rig.syncer.calls[0] == (1, 1470.0, 1506.0)


def test_down_cable_with_working_rest_is_polling(rig: Rig):
    """The cable refused (reconnect:false) but REST works: polling, not down."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.DOWN, "disconnected, asked not to reconnect")
    assert rig.board.current.state == "polling"


async def test_run_loop_waits_for_a_client_then_polls(rig: Rig):
    """Paused without clients; a client arriving wakes the loop and a pass runs."""
    rig.cable(CableState.LIVE)
    rig.clients = 0
    rig.cable(CableState.CONNECTING)
    task = asyncio.ensure_future(rig.poller.run())
    try:
        await asyncio.sleep(0)
        assert not rig.syncer.called.is_set()
        rig.clients = 1
        rig.poller.clients_changed()
        await asyncio.wait_for(rig.syncer.called.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cable_never_live_at_startup_starts_the_fallback(metrics):
    """If the first confirm does not come within the grace, REST takes over."""
    rig = Rig(metrics)
    rig.poller.startup_grace = 0.0
    task = asyncio.ensure_future(rig.poller.run())
    try:
        await asyncio.wait_for(rig.syncer.called.wait(), 5)
        assert rig.poller.mode is Mode.OUTAGE
        assert rig.board.current.state == "polling"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_paused_fallback_stays_ready(rig: Rig):
    """No client connected: passes pause, /readyz stays ready unless REST was failing."""
    rig.cable(CableState.LIVE)
    rig.cable(CableState.CONNECTING)
    assert not rig.board.ready(rig.now, poll_window=30)  # no successful pass yet
    rig.clients = 0
    rig.poller.clients_changed()
    assert rig.board.ready(rig.now, poll_window=30)
    rig.clients = 1
    rig.poller.clients_changed()
    assert not rig.board.ready(rig.now, poll_window=30)
