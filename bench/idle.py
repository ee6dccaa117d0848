"""Idle clients: the daemon's memory per connected client, the connection setup rate, and
10,000 clients at once (issue 7: ≤ 16 KiB per idle client, 10,000 served).

The daemon runs as its own process (``python -m bridge run``) on the simulator (no traffic);
clients are plain WebSocket connections opened by worker processes, so the figures are the
daemon's alone. Each level adds clients to those already connected; memory per client is
the growth of the daemon's RSS over its RSS with no client, divided by the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import Row
from bridge.simulator import SimConfig, build_app


WORKERS = 2


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _worker(url: str, conn: Connection) -> None:
    """Open the number of clients asked for, report, repeat; close all on None."""
    raise_fd_limit()
    asyncio.run(_work(url, conn))


async def _work(url: str, conn: Connection) -> None:
    import websockets  # noqa: PLC0415

    sockets: list[Any] = []
    limit = asyncio.Semaphore(100)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        async with limit:
            ws = await websockets.connect(url, max_size=None, open_timeout=30, ping_interval=None)
            await ws.recv()  # the welcome: admitted and served
            sockets.append(ws)

    while True:
        count = await loop.run_in_executor(None, conn.recv)
        if count is None:
            break
        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        conn.send(
            {"opened": count - failed, "failed": failed, "seconds": time.perf_counter() - started}
        )
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()


@contextlib.asynccontextmanager
async def simulator() -> AsyncIterator[tuple[str, str]]:
    cfg = SimConfig(port=0, rate=0, seed=7)
    app, _ = build_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", cfg.api_token
    finally:
        await runner.cleanup()


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, timeout: float = 20.0) -> None:
    """Until ``/readyz`` answers 200 (upstream live), bounded."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            try:
                async with http.get(base + "/readyz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def run(levels: tuple[int, ...] = (1000, 5000, 10_000)) -> dict[str, Any]:
    raise_fd_limit()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows: list[Row] = []
    async with simulator() as (sim_url, token):
        # asyncio's debug mode is on for any value of PYTHONASYNCIODEBUG, even "0"
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"},
            "CHATWOOT_URL": sim_url,
            "CHATWOOT_API_TOKEN": token,
            "BRIDGE_LISTEN": f"127.0.0.1:{port}",
            "BRIDGE_MAX_CLIENTS": "20000",
            "BRIDGE_MAX_CLIENTS_PER_IP": "20000",
            "BRIDGE_LOG_LEVEL": "warning",
            "BRIDGE_RECONCILE_MS": "0",
        }
        bridge = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "bridge", "run"], env=env, stdout=subprocess.DEVNULL
        )
        ctx = mp.get_context("spawn")
        pipes, workers = [], []
        try:
            await wait_ready(base)
            await asyncio.sleep(1.0)
            base_rss = rss_kib(bridge.pid)
            for _ in range(WORKERS):
                mine, theirs = ctx.Pipe()
                worker = ctx.Process(
                    target=_worker, args=(base.replace("http", "ws") + "/ws", theirs)
                )
                worker.start()
                pipes.append(mine)
                workers.append(worker)
            connected = 0
            loop = asyncio.get_running_loop()
            for level in levels:
                add = level - connected
                for pipe in pipes:
                    pipe.send(add // WORKERS)
                answers = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
                opened = sum(a["opened"] for a in answers)
                failed = sum(a["failed"] for a in answers)
                seconds = max(a["seconds"] for a in answers)
                connected += opened
                await asyncio.sleep(1.0)
                rss = rss_kib(bridge.pid)
                rows.append(
                    Row(
                        f"{level} idle clients",
                        {
                            "connected": connected,
                            "failed": failed,
                            "setup_per_s": round(opened / seconds) if seconds else None,
                            "rss_mib": round(rss / 1024, 1),
                            "kib_per_client": round((rss - base_rss) / connected, 1),
                        },
                    )
                )
        finally:
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send(None)
            for worker in workers:
                worker.join(20)
            bridge.terminate()
            bridge.wait(20)
    rows.insert(0, Row("no client", {"rss_mib": round(base_rss / 1024, 1)}))
    per_client = rows[-1].figures["kib_per_client"]
    rows[-1].note = "target ≤ 16 KiB per idle client: " + ("met" if per_client <= 16 else "NOT met")
    return {"rows": rows}
