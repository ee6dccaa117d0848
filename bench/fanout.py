"""Fan-out: the bridge against the reference relay (``bench/relay.py``), same load, same run.

* Upstream: the bundled simulator's ActionCable server in this process, emitting
  Chatwoot-shaped ``message.created`` frames at a set rate, each with its send time
  (``loadgen.MARK``) in ``content``, spread over 10 conversations.
* Target: the bridge (``python -m bridge run``) or the relay, as its own process, so its CPU
  and RSS are its own.
* Clients: ``loadgen`` worker processes with raw WebSocket clients. A quarter filter on
  events (``events=message.created``: every event), a quarter on one conversation (a tenth
  of the events), the rest take everything.

First, in a fresh target with no traffic, RSS per idle client and the connection setup
rate at 1,000, 5,000 and 10,000 clients. Then for each client count N: latency p50/p99 at
50 events/s; the highest event rate whose deliveries all arrive (≥ 99 %, p99 ≤ 250 ms, no
client cut) in a ramp of 1.3x steps, reported as deliveries/s; latency at half that rate;
server CPU per delivery throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench import loadgen
from bench.common import (
    Row,
    cpu_seconds,
    free_port,
    percentile,
    raise_fd_limit,
    rss_kib,
    wait_ready,
)
from bridge.simulator import SimConfig, Simulator, running
from bridge.simulator.entities import Broadcast


BULK_WORKERS = 2  # plus one sampler worker
CONVERSATIONS = 10
STEP_SECONDS = 3.0
LATENCY_SECONDS = 10.0
RAMP = 1.3
SUSTAINED_SHARE = 0.99
SUSTAINED_P99 = 0.250


def client_path(i: int) -> str:
    """Client ``i``'s URL path: filters for half of the clients."""
    if i % 4 == 0:
        return f"/ws?events=message.created&i={i}"
    if i % 4 == 1:
        return f"/ws?conversations=1:{1 + (i // 4) % CONVERSATIONS}&i={i}"
    return f"/ws?i={i}"


def expected(n: int, per_conversation: list[int]) -> int:
    """Deliveries owed to the first ``n`` clients for the events sent per conversation."""
    total = sum(per_conversation)
    owed = 0
    for i in range(n):
        if i % 4 == 1:
            owed += per_conversation[(i // 4) % CONVERSATIONS]
        else:
            owed += total
    return owed


class Emitter:
    """``message.created`` broadcasts shaped like the simulator's own, with send times."""

    def __init__(self, sim: Simulator) -> None:
        captured: list[Broadcast] = []
        publish = sim.cable.publish
        sim.cable.publish = captured.extend  # type: ignore[method-assign]
        try:
            sim.create_message(1, 1, content="template")
        finally:
            sim.cable.publish = publish  # type: ignore[method-assign]
        template = next(b for b in captured if b.event == "message.created")
        self._streams = template.streams
        self._data = dict(template.data, processed_message_content="bench")
        self._publish = publish
        self._next_id = 10_000_000

    def emit(self, conversation: int) -> None:
        self._next_id += 1
        data = dict(
            self._data,
            id=self._next_id,
            conversation_id=conversation,
            content=loadgen.MARK.decode() + loadgen.stamp(),
            created_at=int(time.time()),
        )
        self._publish([Broadcast(self._streams, "message.created", data)])

    async def run(self, rate: float, seconds: float) -> list[int]:
        """Emit at ``rate`` per second for ``seconds``; events sent per conversation."""
        sent = [0] * CONVERSATIONS
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = 0
        while (elapsed := loop.time() - start) < seconds:
            due = min(int(elapsed * rate) + 1, int(seconds * rate)) - count
            for _ in range(due):
                index = count % CONVERSATIONS
                self.emit(1 + index)
                sent[index] += 1
                count += 1
            await asyncio.sleep(max(0.0, start + count / rate - loop.time()))
        return sent


@dataclass
class Step:
    """One traffic step's outcome."""

    rate: float
    emitting: float
    deliveries: int
    owed: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    loadgen_cpu: float
    lost: int
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        p99 = percentile(self.latencies, 99)
        return (
            self.deliveries >= SUSTAINED_SHARE * self.owed
            and self.lost == 0
            and p99 is not None
            and p99 <= SUSTAINED_P99
        )

    def summary(self) -> dict[str, Any]:
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        return {
            "events_per_s": round(self.rate, 1),
            "deliveries_per_s": round(self.deliveries / self.emitting),
            "delivered_pct": round(100 * self.deliveries / self.owed, 2) if self.owed else None,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "cpu_us_per_delivery": round(self.server_cpu / self.deliveries * 1e6, 2)
            if self.deliveries
            else None,
            "server_cpu_pct": round(100 * self.server_cpu / self.seconds),
            "loadgen_cpu_pct": round(100 * self.loadgen_cpu / self.seconds),
            "clients_cut": self.lost,
        }


def mine(worker: int, n: int) -> list[int]:
    """The clients (of the first ``n``) worker ``worker`` runs; worker 0 is the sampler."""
    if worker == 0:
        return list(range(0, n, loadgen.SAMPLE_EVERY))
    bulk = [i for i in range(n) if i % loadgen.SAMPLE_EVERY]
    return bulk[worker - 1 :: BULK_WORKERS]


class Rig:
    """The load generator workers plus the target they connect to."""

    def __init__(self, emitter: Emitter, pid: int, port: int) -> None:
        self.emitter = emitter
        self.pid = pid
        self.port = port
        self.pipes: list[Connection] = []
        self.workers: list[Any] = []
        self.clients = 0

    async def __aenter__(self) -> Rig:
        ctx = mp.get_context("spawn")
        for w in range(1 + BULK_WORKERS):
            mine, theirs = ctx.Pipe()
            worker = ctx.Process(
                target=loadgen.worker, args=("127.0.0.1", self.port, theirs, w == 0)
            )
            worker.start()
            self.pipes.append(mine)
            self.workers.append(worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for worker in self.workers:
            worker.join(20)
            if worker.is_alive():
                worker.kill()

    async def _ask(self, make: Callable[[int], Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        for w, pipe in enumerate(self.pipes):
            pipe.send(make(w))
        return [await loop.run_in_executor(None, pipe.recv) for pipe in self.pipes]

    async def ensure(self, n: int) -> dict[str, Any]:
        """Open clients 0..n-1 (those not open); the setup rate of those opened."""
        self.clients = n
        answers = await self._ask(lambda w: ("ensure", [(i, client_path(i)) for i in mine(w, n)]))
        opened = sum(a["opened"] for a in answers)
        seconds = max(a["seconds"] for a in answers)
        errors = [a["error"] for a in answers if a["error"]]
        return {
            "opened": opened,
            "failed": sum(a["failed"] for a in answers),
            "setup_per_s": round(opened / seconds) if opened and seconds else None,
            "error": errors[0] if errors else None,
        }

    async def read(self) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, loadgen.read_all, self.pipes)

    async def step(self, rate: float, seconds: float) -> Step:
        """Emit at ``rate`` for ``seconds``; count what arrives (waiting at most 10 s more)."""
        await self.ensure(self.clients)
        cpu0 = sum(await self._ask(lambda _w: ("reset",)))
        server0 = cpu_seconds(self.pid)
        started = time.perf_counter()
        sent = await self.emitter.run(rate, seconds)
        emitting = time.perf_counter() - started
        owed = expected(self.clients, sent)
        deadline = time.perf_counter() + 10.0  # an overloaded step drains before the next
        last, still = -1, 0
        while True:
            stats = await self.read()
            if stats["frames"] >= owed or time.perf_counter() > deadline:
                break
            still = still + 1 if stats["frames"] == last else 0
            if still >= 3:
                break  # nothing more is coming
            last = stats["frames"]
            await asyncio.sleep(0.1)
        wall = time.perf_counter() - started
        return Step(
            rate=rate,
            emitting=emitting,
            deliveries=stats["frames"],
            owed=owed,
            seconds=wall,
            latencies=stats["latencies"],
            server_cpu=cpu_seconds(self.pid) - server0,
            loadgen_cpu=sum(stats["cpu"]) - cpu0,
            lost=stats["lost"],
        )

    async def ramp(self, start: float, limit: int = 20) -> tuple[Step | None, list[Step]]:
        """Raise the rate by :data:`RAMP` until deliveries fall behind; the last sustained."""
        best, steps, rate = None, [], start
        for _ in range(limit):
            step = await self.step(rate, STEP_SECONDS)
            steps.append(step)
            if not step.sustained:
                break
            best, rate = step, rate * RAMP
        return best, steps


@contextlib.asynccontextmanager
async def emitter() -> AsyncIterator[tuple[Emitter, str, str]]:
    cfg = SimConfig(port=0, rate=0, seed=7, accounts=(1,), conversations_per_account=CONVERSATIONS)
    async with running(cfg) as (sim, url):
        yield Emitter(sim), url, cfg.api_token


@contextlib.asynccontextmanager
async def target(
    kind: str, sim_url: str, token: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[int, int]]:
    """Start the bridge or the relay; yields (pid, port) once it is subscribed upstream."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    if kind == "relay":
        command = [sys.executable, "-m", "bench.relay", "--chatwoot", sim_url, "--token", token]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, "-m", "bridge", "run"]
        env |= {
            "CHATWOOT_URL": sim_url,
            "CHATWOOT_API_TOKEN": token,
            "BRIDGE_LISTEN": f"127.0.0.1:{port}",
            "BRIDGE_MAX_CLIENTS": "20000",
            "BRIDGE_MAX_CLIENTS_PER_IP": "20000",
            "BRIDGE_LOG_LEVEL": "warning",
            "BRIDGE_RECONCILE_MS": "0",
            **(extra_env or {}),
        }
    proc = subprocess.Popen(  # noqa: ASYNC220
        command, env=env, stdout=subprocess.PIPE, stderr=None, text=True
    )
    try:
        loop = asyncio.get_running_loop()
        if kind == "relay":
            assert proc.stdout is not None
            async with asyncio.timeout(20):
                line = await loop.run_in_executor(None, proc.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"relay did not start: {line!r}")
        else:
            await wait_ready(f"http://127.0.0.1:{port}")
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


async def idle(
    kind: str, sim: Emitter, sim_url: str, token: str, levels: tuple[int, ...]
) -> dict[str, Any]:
    """Memory per idle client and setup rate, in a fresh target with no traffic: levels add
    clients to those connected; memory per client is RSS growth over RSS with none."""
    out: dict[str, Any] = {"levels": {}}
    async with target(kind, sim_url, token) as (pid, port), Rig(sim, pid, port) as rig:
        await asyncio.sleep(0.5)
        base_rss = rss_kib(pid)
        out["rss_mib_no_client"] = round(base_rss / 1024, 1)
        for n in levels:
            setup = await rig.ensure(n)
            if setup["failed"]:
                raise RuntimeError(f"{kind}: {setup['failed']} clients failed: {setup['error']}")
            await asyncio.sleep(1.0)
            rss = rss_kib(pid)
            out["levels"][n] = {
                "open": (await rig.read())["open"],
                "setup_per_s": setup["setup_per_s"],
                "rss_mib": round(rss / 1024, 1),
                "kib_per_idle_client": round((rss - base_rss) / n, 1),
            }
    return out


async def measure(
    kind: str,
    sim: Emitter,
    sim_url: str,
    token: str,
    levels: tuple[int, ...],
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The traffic figures for one target at each client count."""
    out: dict[str, Any] = {"levels": {}}
    async with target(kind, sim_url, token, extra_env) as (pid, port), Rig(sim, pid, port) as rig:
        for n in levels:
            level: dict[str, Any] = {}
            setup = await rig.ensure(n)
            if setup["failed"]:
                raise RuntimeError(f"{kind}: {setup['failed']} clients failed: {setup['error']}")
            await asyncio.sleep(1.0)
            level["at_50"] = (await rig.step(50.0, LATENCY_SECONDS)).summary()
            best, steps = await rig.ramp(start=max(2.0, 20_000 / n))
            level["ramp"] = [s.summary() for s in steps]
            level["max"] = best.summary() if best else None
            if best is not None:
                half = await rig.step(best.rate / 2, LATENCY_SECONDS)
                level["at_half_max"] = half.summary()
            out["levels"][n] = level
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    """The side-by-side table: one row per (N, target), then ratios; then idle clients."""
    table: list[Row] = []
    traffic = {kind: results[kind]["traffic"]["levels"] for kind in ("relay", "bridge")}
    plain = results.get("bridge_no_coalescing", {}).get("levels", {})
    for n in traffic["relay"]:
        shown = [("relay", traffic["relay"][n]), ("bridge", traffic["bridge"][n])]
        if n in plain:
            shown.append(("bridge, coalescing off", plain[n]))
        for name, level in shown:
            peak = level["max"] or {}
            half = level.get("at_half_max") or {}
            table.append(
                Row(
                    f"{n} clients, {name}",
                    {
                        "max deliveries/s": peak.get("deliveries_per_s"),
                        "at events/s": peak.get("events_per_s"),
                        "µs CPU/delivery": peak.get("cpu_us_per_delivery"),
                        "p50 ms @50/s": level["at_50"]["p50_ms"],
                        "p99 ms @50/s": level["at_50"]["p99_ms"],
                        "p50 ms @half": half.get("p50_ms"),
                        "p99 ms @half": half.get("p99_ms"),
                        "loadgen CPU % @max": peak.get("loadgen_cpu_pct"),
                    },
                )
            )
        r, b = traffic["relay"][n], traffic["bridge"][n]
        ratio_tp = _ratio(b["max"], r["max"], "deliveries_per_s")
        ratio_p99 = _ratio(b["at_50"], r["at_50"], "p99_ms")
        table.append(
            Row(
                f"{n} clients, bridge/relay",
                {"max deliveries/s": ratio_tp, "p99 ms @50/s": ratio_p99},
                _verdict(n, ratio_tp, ratio_p99),
            )
        )
    for kind in ("relay", "bridge"):
        for n, level in results[kind]["idle"]["levels"].items():
            table.append(
                Row(
                    f"{n} idle clients, {kind}",
                    {
                        "KiB/idle client": level["kib_per_idle_client"],
                        "RSS MiB": level["rss_mib"],
                        "setup/s": level["setup_per_s"],
                        "open": level["open"],
                    },
                    _memory_verdict(kind, n, level),
                )
            )
    return table


def _memory_verdict(kind: str, n: int, level: dict[str, Any]) -> str:
    if kind != "bridge" or n < 10_000:
        return ""
    served = "served" if level["open"] >= n else "NOT all served"
    met = "met" if level["kib_per_idle_client"] <= 16 else "NOT met"
    return f"targets: {n} clients {served}; ≤ 16 KiB per idle client {met}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return round(a[key] / b[key], 2)


def _verdict(n: int, tp: float | None, p99: float | None) -> str:
    if n != 1000:
        return ""
    return (
        f"targets: throughput ≥ 0.8x relay {'met' if tp and tp >= 0.8 else 'NOT met'}; "
        f"p99 @50/s ≤ 1.3x relay {'met' if p99 and p99 <= 1.3 else 'NOT met'}"
    )


NO_COALESCING = {"BRIDGE_COALESCE_MAX_MS": "0"}


async def run(
    levels: tuple[int, ...] = (100, 1000, 5000),
    idle_levels: tuple[int, ...] = (1000, 5000, 10_000),
) -> dict[str, Any]:
    """The relay and the bridge (idle, then traffic), and at 1,000 clients the bridge
    without coalescing."""
    raise_fd_limit()
    results: dict[str, Any] = {}
    async with emitter() as (sim, sim_url, token):
        for kind in ("relay", "bridge"):
            results[kind] = {
                "idle": await idle(kind, sim, sim_url, token, idle_levels),
                "traffic": await measure(kind, sim, sim_url, token, levels),
            }
        if 1000 in levels:
            results["bridge_no_coalescing"] = await measure(
                "bridge", sim, sim_url, token, (1000,), NO_COALESCING
            )
    return {"rows": rows(results), **results}


async def by_rate(rates: tuple[float, ...], clients: int = 1000) -> dict[str, Any]:
    """The bridge's CPU per delivery and latency at each event rate, with coalescing and
    without it (``BRIDGE_COALESCE_MAX_MS=0``)."""
    raise_fd_limit()
    out: dict[str, Any] = {"clients": clients, "on": {}, "off": {}}
    async with emitter() as (sim, sim_url, token):
        for label, env in (("on", {}), ("off", NO_COALESCING)):
            async with (
                target("bridge", sim_url, token, env) as (pid, port),
                Rig(sim, pid, port) as rig,
            ):
                setup = await rig.ensure(clients)
                if setup["failed"]:
                    raise RuntimeError(f"{setup['failed']} clients failed: {setup['error']}")
                await asyncio.sleep(1.0)
                for rate in rates:
                    out[label][rate] = (await rig.step(rate, LATENCY_SECONDS)).summary()
    return out
