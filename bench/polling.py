"""The seed plan's polling, priced in server CPU per delivered message.

The seed's phase 1 has every frontend poll its open conversation's messages every 3 s. Its
cost lands on Chatwoot; here the bundled simulator stands in for Chatwoot, as its own
process, so its CPU is measured alone. The simulator answers a poll far more cheaply than
Rails would (no database, no ActiveRecord), so these figures are a *floor* for the real cost.

For each message rate: the simulator's CPU while messages are created at that rate (through
its control API) without pollers, then with ``frontends`` pollers; the difference divided by
the messages the pollers received is the CPU per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bench.common import Row, cpu_seconds, free_port
from bridge.simulator import SimConfig


CONVERSATIONS = 10  # per account; two accounts
POLL_EVERY = 3.0


@contextlib.asynccontextmanager
async def simulator() -> AsyncIterator[tuple[int, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    env["BRIDGE_LOG_LEVEL"] = "warning"
    command = [sys.executable, "-m", "bridge", "simulate", "--port", str(port), "--rate", "0"]
    command += ["--conversations", str(CONVERSATIONS)]
    proc = subprocess.Popen(  # noqa: ASYNC220
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(20):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/_sim/state") as answer:
                        if answer.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield proc.pid, base
    finally:
        proc.terminate()
        proc.wait(20)


def conversation(i: int) -> tuple[int, int]:
    return 1 + i % 2, 1 + (i // 2) % CONVERSATIONS


async def create(http: aiohttp.ClientSession, base: str, rate: float, seconds: float) -> int:
    """Messages at ``rate`` per second over every conversation; how many."""
    loop = asyncio.get_running_loop()
    start, count = loop.time(), 0
    while loop.time() - start < seconds:
        account, display = conversation(count)
        body = {"account_id": account, "conversation_id": display, "content": "poll bench"}
        async with http.post(base + "/_sim/messages", json=body) as answer:
            answer.raise_for_status()
        count += 1
        await asyncio.sleep(max(0.0, start + count / rate - loop.time()))
    return count


async def frontend(
    http: aiohttp.ClientSession, base: str, token: str, i: int, seen: list[int], rng: random.Random
) -> None:
    """One seed-plan frontend: its conversation's new messages every 3 s."""
    account, display = conversation(i)
    path = f"{base}/api/v1/accounts/{account}/conversations/{display}/messages"
    headers = {"api_access_token": token}
    async with http.get(path, headers=headers) as answer:
        cursor = max((m["id"] for m in (await answer.json())["payload"]), default=0)
    await asyncio.sleep(rng.uniform(0, POLL_EVERY))
    while True:
        async with http.get(path, params={"after": str(cursor)}, headers=headers) as answer:
            rows = (await answer.json())["payload"]
        seen[0] += len(rows)
        cursor = max([cursor, *(row["id"] for row in rows)])
        await asyncio.sleep(POLL_EVERY)


async def run(
    rates: tuple[float, ...] = (1, 5, 20, 50, 200), frontends: int = 1000, seconds: float = 9.0
) -> dict[str, Any]:
    """Server CPU per delivery of the seed's polling at each message rate."""
    out: dict[str, Any] = {"frontends": frontends, "poll_every_s": POLL_EVERY, "rates": {}}
    token = SimConfig().api_token  # the simulator's public demo token
    connector = aiohttp.TCPConnector(limit=200)
    async with simulator() as (pid, base), aiohttp.ClientSession(connector=connector) as http:
        for rate in rates:
            # Both windows run on for one more poll round, so every message is polled.
            cpu0 = cpu_seconds(pid)
            await create(http, base, rate, seconds)
            await asyncio.sleep(POLL_EVERY + 0.5)
            alone = cpu_seconds(pid) - cpu0
            seen = [0]
            rng = random.Random(7)
            pollers = [
                asyncio.ensure_future(frontend(http, base, token, i, seen, rng))
                for i in range(frontends)
            ]
            await asyncio.sleep(POLL_EVERY + 0.5)  # every frontend has its cursor
            seen[0] = 0
            cpu0 = cpu_seconds(pid)
            await create(http, base, rate, seconds)
            await asyncio.sleep(POLL_EVERY + 0.5)
            polled = cpu_seconds(pid) - cpu0
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            extra = max(0.0, polled - alone)
            out["rates"][rate] = {
                "deliveries": seen[0],
                "requests_per_min": round(frontends / POLL_EVERY * 60),
                "cpu_us_per_delivery": round(extra / seen[0] * 1e6, 1) if seen[0] else None,
            }
    return out


def compare_rows(bridge: dict[str, Any], polling: dict[str, Any]) -> list[Row]:
    """CPU per delivery at each rate: the bridge with and without coalescing, and the seed."""
    table = []
    for rate, on in bridge["on"].items():
        off = bridge["off"].get(rate, {})
        seed = polling["rates"].get(rate, {})
        ours, theirs = on.get("cpu_us_per_delivery"), seed.get("cpu_us_per_delivery")
        table.append(
            Row(
                f"{rate:g} events/s",
                {
                    "coalesced µs/delivery": ours,
                    "not coalesced µs/delivery": off.get("cpu_us_per_delivery"),
                    "seed polling µs/delivery": theirs,
                    "p50 ms coalesced": on.get("p50_ms"),
                    "p99 ms coalesced": on.get("p99_ms"),
                    "p50 ms not coalesced": off.get("p50_ms"),
                    "p99 ms not coalesced": off.get("p99_ms"),
                },
                ""
                if ours is None or theirs is None
                else (
                    "below the seed's polling" if ours < theirs else "NOT below the seed's polling"
                ),
            )
        )
    return table
