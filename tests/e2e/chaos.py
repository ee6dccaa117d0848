"""The chaos scenario: traffic on the simulator while the upstream misbehaves at random.

Used by ``test_chaos.py`` (asserts no loss and no duplicate) and by the gap-fill
benchmark (measures delivery delays). Seeded: the same seed gives the same traffic and
the same fault schedule (the exact moments still depend on the scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge.simulator import SimConfig, Simulator, running
from tests.helpers import running_bridge
from tests.secrets import observe_frame


# The bridge tuned for a test that compresses minutes of trouble into seconds.
CHAOS_ENV = {
    "BRIDGE_STALE_AFTER_MS": "500",
    "BRIDGE_SUBSCRIBE_TIMEOUT_MS": "1000",
    "BRIDGE_RECONNECT_BACKOFF_MS": "50,100,200",
    "BRIDGE_POLL_ACTIVE_MS": "250",
    "BRIDGE_POLL_INACTIVE_MS": "1000",
    "BRIDGE_POLL_BACKOFF_MS": "100,200,400",
    "BRIDGE_RECONCILE_MS": "700",
    "BRIDGE_RECONCILE_SETTLE_MS": "300",
    "BRIDGE_GAP_MARGIN_MS": "3000",
}


@dataclass
class ClientSpec:
    """A local client of the scenario and the filter it uses."""

    name: str
    accounts: frozenset[int] | None = None
    conversations: frozenset[tuple[int, int]] | None = None
    # Disconnects in the middle of the traffic and resumes with since.
    resumes: bool = False

    def query(self) -> str:
        parts = []
        if self.accounts is not None:
            parts.append("accounts=" + ",".join(map(str, sorted(self.accounts))))
        if self.conversations is not None:
            parts.append(
                "conversations=" + ",".join(f"{a}:{c}" for a, c in sorted(self.conversations))
            )
        parts.append("events=message.created,conversation.*")
        return "&".join(parts)

    def wants(self, account: int, conversation: int) -> bool:
        if self.accounts is not None and account not in self.accounts:
            return False
        return self.conversations is None or (account, conversation) in self.conversations


DEFAULT_CLIENTS = (
    ClientSpec("everything"),
    ClientSpec("account-1", accounts=frozenset({1})),
    ClientSpec(
        "five-conversations", conversations=frozenset({(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)})
    ),
    ClientSpec("account-2-resumer", accounts=frozenset({2}), resumes=True),
)


@dataclass
class Collector:
    """A client that reads in the background and can reconnect with ``since``."""

    spec: ClientSpec
    base_url: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    received_at: dict[int, float] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    resume: str | None = None
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    resets: int = 0

    async def start(self) -> None:
        url = self.base_url.replace("http", "ws", 1) + "/ws?" + self.spec.query()
        if self.resume:
            url += f"&since={self.resume}"
        self.ws = await connect(url, max_size=None, open_timeout=10)
        self.task = asyncio.ensure_future(self._read(self.ws))

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                observe_frame(text)
                frame = json.loads(text)
                now = time.time()
                async with self.changed:
                    self.frames.append(frame)
                    kind = frame.get("type")
                    if kind == "event":
                        self.resume = f"{frame['epoch']}:{frame['seq']}"
                        if frame["event"] == "message.created":
                            self.received_at.setdefault(frame["data"]["id"], now)
                    elif kind in ("welcome", "reset") and (kind == "reset" or self.resume is None):
                        self.resets += kind == "reset"
                        self.resume = f"{frame['epoch']}:{frame['seq']}"
                    self.changed.notify_all()

    def message_counts(self) -> Counter[int]:
        return Counter(
            f["data"]["id"]
            for f in self.frames
            if f.get("type") == "event" and f["event"] == "message.created"
        )

    def latest_status(self) -> dict[tuple[int, int], str]:
        status: dict[tuple[int, int], str] = {}
        for f in self.frames:
            if (
                f.get("type") == "event"
                and f["event"].startswith("conversation.")
                and "status" in f["data"]
            ):
                status[(f["account_id"], f["conversation_id"])] = f["data"]["status"]
        return status

    async def wait(self, predicate: Any, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            return False
        return True


@dataclass
class ClientReport:
    """What one client got, against the ground truth."""

    name: str
    expected: int
    missing: list[int]
    duplicates: list[int]
    unexpected: list[int]
    wrong_status: dict[str, tuple[str | None, str]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected or self.wrong_status)

    def line(self) -> str:
        return (
            f"{self.name:<20} expected {self.expected:>5}  lost {len(self.missing):>3}  "
            f"duplicated {len(self.duplicates):>3}  unexpected {len(self.unexpected):>3}  "
            f"wrong status {len(self.wrong_status):>3}"
        )


@dataclass
class ChaosReport:
    """The scenario's outcome."""

    seed: int
    messages: int
    status_changes: int
    faults: list[tuple[float, str, float]]
    clients: list[ClientReport]
    delays: list[float]
    metrics: dict[str, float]
    duration: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.clients)

    def text(self) -> str:
        lines = [
            f"chaos seed={self.seed}: {self.messages} messages, "
            f"{self.status_changes} status changes, "
            f"{len(self.faults)} faults in {self.duration:.1f} s",
            "faults: "
            + ", ".join(f"{kind}@{at:.2f}s/{length:.1f}s" for at, kind, length in self.faults),
            *("  " + c.line() for c in self.clients),
            "bridge: " + ", ".join(f"{k}={v:g}" for k, v in sorted(self.metrics.items())),
        ]
        return "\n".join(lines)


def simulator(
    seed: int, per_account: int
) -> contextlib.AbstractAsyncContextManager[tuple[Simulator, str]]:
    """The simulator on a free loopback port, no generated traffic, fast pings."""
    return running(
        SimConfig(
            port=0, rate=0, ping_interval=0.1, seed=seed, conversations_per_account=per_account
        )
    )


async def _traffic(
    sim: Simulator,
    rng: random.Random,
    messages: int,
    per_account: int,
    rate: float,
    on_progress: Any,
) -> int:
    status_changes = 0
    statuses = ["open", "resolved", "pending", "open"]
    for i in range(messages):
        account = rng.choice((1, 2))
        conversation = rng.randint(1, per_account)
        kind = rng.choice(("incoming", "incoming", "outgoing"))
        sim.create_message(
            account,
            conversation,
            content=f"chaos message {i}",
            message_type=kind,
            private=kind == "outgoing" and rng.random() < 0.05,
            user_id=1 if kind == "outgoing" else None,
        )
        if rng.random() < 0.04:
            sim.set_status(account, rng.randint(1, per_account), rng.choice(statuses), user_id=1)
            status_changes += 1
        await on_progress(i)
        # pacing the workload (not synchronisation): about ``rate`` messages per second
        await asyncio.sleep(rng.expovariate(rate))
    return status_changes


KINDS = ("drop", "silence", "lose_broadcasts")


async def _faults(
    sim: Simulator, rng: random.Random, stop: asyncio.Event, started: float, live: Any
) -> list[tuple[float, str, float]]:
    """Inject faults until ``stop``; every kind comes once among the first three."""
    timeline: list[tuple[float, str, float]] = []
    first = list(KINDS)
    rng.shuffle(first)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.uniform(0.3, 1.0)):
                await stop.wait()
        if stop.is_set():
            break
        kind = first.pop(0) if first else rng.choice(KINDS)
        if kind == "lose_broadcasts":
            await live()  # losing broadcasts on a *connected* socket is the point
        length = 0.0 if kind == "drop" else rng.uniform(0.6, 1.5)
        timeline.append((time.time() - started, kind, length))
        if kind == "drop":
            sim.drop_connections(abrupt=True)
            continue
        switch = "stop_pings" if kind == "silence" else "drop_broadcasts"
        sim.set_faults(**{switch: True})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(length):
                await stop.wait()
        sim.set_faults(**{switch: False})
    return timeline


async def run_chaos(
    *,
    seed: int = 1,
    messages: int = 1000,
    per_account: int = 10,
    rate: float = 150.0,
    clients: tuple[ClientSpec, ...] = DEFAULT_CLIENTS,
    settle_timeout: float = 30.0,
) -> ChaosReport:
    """Run the scenario and compare what every client got with the simulator's truth."""
    traffic_rng, fault_rng = random.Random(seed), random.Random(seed + 1)
    started = time.time()
    async with (
        simulator(seed, per_account) as (sim, sim_url),
        running_bridge(
            {"CHATWOOT_URL": sim_url, "CHATWOOT_API_TOKEN": sim.cfg.api_token, **CHAOS_ENV}
        ) as (bridge, url),
    ):
        collectors = [Collector(spec, url) for spec in clients]
        for c in collectors:
            await c.start()
        live = [
            await c.wait(lambda c=c: any(f.get("upstream") == "live" for f in c.frames), 15)
            for c in collectors
        ]
        assert all(live), "the bridge never went live"
        baseline = max(sim.world.messages, default=0)
        created_at: dict[int, float] = {}
        resumer = next((c for c in collectors if c.spec.resumes), None)

        async def progress(i: int) -> None:
            if resumer is not None and i == messages * 2 // 5:
                await resumer.stop()
            if resumer is not None and i == messages * 3 // 5:
                await resumer.start()

        stop_faults = asyncio.Event()

        async def bridge_live() -> None:
            """Until the bridge is live again (bounded): state without an event to await."""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while bridge.status.current.state != "live":
                        await asyncio.sleep(0.02)

        faults_task = asyncio.ensure_future(
            _faults(sim, fault_rng, stop_faults, started, bridge_live)
        )
        try:
            before = set(sim.world.messages)
            changes = await _traffic(sim, traffic_rng, messages, per_account, rate, progress)
        finally:
            stop_faults.set()
            timeline = await faults_task
            sim.set_faults(stop_pings=False, drop_broadcasts=False)
        for mid, message in sim.world.messages.items():
            if mid not in before:
                created_at[mid] = message.created_at
        truth = sim.ground_truth()["conversations"]
        expected_by_conv = {
            (c["account_id"], c["id"]): [m for m in c["message_ids"] if m > baseline] for c in truth
        }
        status_truth = {(c["account_id"], c["id"]): c["status"] for c in truth}

        def expected_for(spec: ClientSpec) -> set[int]:
            return {m for key, ids in expected_by_conv.items() if spec.wants(*key) for m in ids}

        def converged(c: Collector) -> bool:
            counts = c.message_counts()
            statuses = c.latest_status()
            return expected_for(c.spec) <= set(counts) and all(
                statuses.get(key) == status
                for key, status in status_truth.items()
                if c.spec.wants(*key)
            )

        for c in collectors:
            await c.wait(lambda c=c: converged(c), settle_timeout)
        reports = []
        delays: list[float] = []
        for c in collectors:
            counts = c.message_counts()
            expected = expected_for(c.spec)
            statuses = c.latest_status()
            received = {m for m in counts if m > baseline}
            reports.append(
                ClientReport(
                    name=c.spec.name,
                    expected=len(expected),
                    missing=sorted(expected - received),
                    duplicates=sorted(m for m, n in counts.items() if n > 1),
                    unexpected=sorted(received - expected),
                    wrong_status={
                        f"{a}:{i}": (statuses.get((a, i)), status)
                        for (a, i), status in status_truth.items()
                        if c.spec.wants(a, i) and statuses.get((a, i)) != status
                    },
                )
            )
            if not c.spec.resumes:
                delays += [
                    c.received_at[m] - created_at[m]
                    for m in expected
                    if m in c.received_at and m in created_at
                ]
            await c.stop()
        m = bridge.metrics
        metric_values = {
            "reconnects": m.upstream_reconnects._value.get(),
            "gap_outage": m.gap_events.labels(reason="outage")._value.get(),
            "gap_reconnect": m.gap_events.labels(reason="reconnect")._value.get(),
            "gap_reconcile": m.gap_events.labels(reason="reconcile")._value.get(),
            "dedup_poll": m.events_deduplicated.labels(source="poll")._value.get(),
            "stale_dropped": m.events_stale_dropped._value.get(),
            "rest_requests": sum(
                s.value
                for metric in m.poll_requests.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            ),
        }
        return ChaosReport(
            seed=seed,
            messages=messages,
            status_changes=changes,
            faults=timeline,
            clients=reports,
            delays=delays,
            metrics=metric_values,
            duration=time.time() - started,
        )
