"""Gap-fill benchmark: delivery delay and Chatwoot's REST load, bridge against the seed plan.

Three scenarios against the bundled simulator, with the same traffic (``rate`` messages
per second over 20 conversations) and ``clients`` frontends each watching a conversation:

* the bridge with its cable live (the reference);
* the bridge with its cable down, filling in from REST with the default policy
  (3 s active, 30 s inactive);
* the seed plan's phase 1: every frontend polls its conversation's messages every 3 s.

Reported: delay from a message's creation (Chatwoot's clock) to its delivery (p50, p99)
and REST requests per minute made to Chatwoot (cable upgrades excluded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from bench.common import Row, percentile
from bridge import config
from bridge.app import Bridge
from bridge.simulator import SimConfig, Simulator, running


PER_ACCOUNT = 10


def watched(i: int) -> tuple[int, int]:
    """The conversation frontend ``i`` has open: every conversation gets the same share."""
    return 1 + i % 2, 1 + (i // 2) % PER_ACCOUNT


@dataclass
class Outcome:
    """Delays (s) of delivered messages and REST requests made during the window."""

    delays: list[float] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    created: int = 0

    def row(self, scenario: str, clients: int, note: str = "") -> Row:
        return Row(
            scenario,
            {
                "clients": clients,
                "messages": self.created,
                "deliveries timed": len(self.delays),
                "p50 delay s": percentile(self.delays, 50),
                "p99 delay s": percentile(self.delays, 99),
                "REST req/min": round(self.requests / self.seconds * 60, 1)
                if self.seconds
                else None,
            },
            note,
        )


def simulator(seed: int) -> contextlib.AbstractAsyncContextManager[tuple[Simulator, str]]:
    return running(SimConfig(port=0, rate=0, seed=seed, conversations_per_account=PER_ACCOUNT))


def rest_requests(sim: Simulator, since: int) -> int:
    return sum(1 for r in sim.request_log()[since:] if r["path"].startswith("/api/"))


async def traffic(sim: Simulator, rate: float, seconds: float, rng: random.Random) -> list[int]:
    """Incoming messages at ``rate`` per second over every conversation; returns their ids."""
    ids = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        account, conversation = rng.choice((1, 2)), rng.randint(1, PER_ACCOUNT)
        ids.append(sim.create_message(account, conversation, content="bench")["id"])
        await asyncio.sleep(rng.expovariate(rate))  # the workload's pace
    return ids


async def bridge_scenario(
    *, cable_down: bool, clients: int, rate: float, seconds: float, seed: int
) -> Outcome:
    """The bridge with N clients; one more client records delivery times."""
    async with simulator(seed) as (sim, sim_url):
        cfg = config.load(
            {
                "CHATWOOT_URL": sim_url,
                "CHATWOOT_API_TOKEN": sim.cfg.api_token,
                "BRIDGE_LISTEN": "127.0.0.1:0",
            }
        )
        bridge = Bridge(cfg)
        stop = asyncio.Event()
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(bridge.run(stop, on_ready=ready.set_result))
        url = (await ready).replace("http", "ws", 1) + "/ws"
        received: dict[int, float] = {}
        live = asyncio.Event()
        polling = asyncio.Event()

        async def watcher() -> None:
            async with connect(url + "?events=message.created", max_size=None) as ws:
                async for text in ws:
                    frame = json.loads(text)
                    state = frame.get("upstream")
                    if state == "live":
                        live.set()
                    elif state == "polling":
                        polling.set()
                    if frame.get("type") == "event":
                        received.setdefault(frame["data"]["id"], time.time())

        async with contextlib.AsyncExitStack() as stack:
            for i in range(clients):
                account, conversation = watched(i)
                conv = f"{account}:{conversation}"
                await stack.enter_async_context(connect(f"{url}?conversations={conv}"))
            watch = asyncio.ensure_future(watcher())
            await asyncio.wait_for(live.wait(), 15)
            if cable_down:
                sim.set_faults(refuse_connections=True)
                sim.drop_connections(abrupt=True)
                await asyncio.wait_for(polling.wait(), 15)
            mark = len(sim.request_log())
            started = time.time()
            ids = await traffic(sim, rate, seconds, random.Random(seed))
            elapsed = time.time() - started
            requests = rest_requests(sim, mark)
            # let the last messages arrive (at most one inactive interval and a bit)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(35):
                    while not set(ids) <= set(received):
                        await asyncio.sleep(0.1)
            watch.cancel()
        stop.set()
        await task
        created = {m: sim.world.messages[m].created_at for m in ids}
        return Outcome(
            delays=[received[m] - created[m] for m in ids if m in received],
            requests=requests,
            seconds=elapsed,
            created=len(ids),
        )


async def seed_plan_scenario(*, clients: int, rate: float, seconds: float, seed: int) -> Outcome:
    """N frontends, each polling its conversation's messages every 3 s (phase 1 of the seed)."""
    async with simulator(seed) as (sim, sim_url), aiohttp.ClientSession() as session:
        headers = {"api_access_token": sim.cfg.api_token}
        # When each frontend saw each message: the delay is the frontend's own.
        seen: list[dict[int, float]] = [{} for _ in range(clients)]
        rng = random.Random(seed + 1)

        async def frontend(index: int, account: int, conversation: int) -> None:
            received = seen[index]
            path = f"{sim_url}/api/v1/accounts/{account}/conversations/{conversation}/messages"
            async with session.get(path, headers=headers) as response:
                cursor = max((m["id"] for m in (await response.json())["payload"]), default=0)
            await asyncio.sleep(rng.uniform(0, 3))
            while True:
                async with session.get(
                    path, params={"after": str(cursor)}, headers=headers
                ) as response:
                    rows = (await response.json())["payload"]
                now = time.time()
                for row in rows:
                    received.setdefault(row["id"], now)
                    cursor = max(cursor, row["id"])
                await asyncio.sleep(3.0)

        tasks = [asyncio.ensure_future(frontend(i, *watched(i))) for i in range(clients)]
        await asyncio.sleep(3.5)  # every frontend has its cursor
        mark = len(sim.request_log())
        started = time.time()
        ids = await traffic(sim, rate, seconds, random.Random(seed))
        elapsed = time.time() - started
        requests = rest_requests(sim, mark)
        await asyncio.sleep(3.5)  # the last poll round
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        created = {m: sim.world.messages[m].created_at for m in ids}
        return Outcome(
            delays=[got[m] - created[m] for got in seen for m in ids if m in got],
            requests=requests,
            seconds=elapsed,
            created=len(ids),
        )


async def run(
    *, clients: int = 100, rate: float = 2.0, seconds: float = 30.0, seed: int = 7
) -> dict[str, Any]:
    """All three scenarios; returns rows for the table and raw figures for the JSON."""
    live = await bridge_scenario(
        cable_down=False, clients=clients, rate=rate, seconds=seconds, seed=seed
    )
    down = await bridge_scenario(
        cable_down=True, clients=clients, rate=rate, seconds=seconds, seed=seed
    )
    seed_plan = await seed_plan_scenario(clients=clients, rate=rate, seconds=seconds, seed=seed)
    rows = [
        live.row("bridge, cable live", clients, "reference: ActionCable push"),
        down.row(
            "bridge, cable down (REST fallback)",
            clients,
            "defaults: 3 s active / 30 s inactive; cost independent of clients",
        ),
        seed_plan.row(
            "seed plan: every frontend polls every 3 s",
            clients,
            "cost grows with clients (N/3 per s)",
        ),
    ]
    return {
        "rows": rows,
        "params": {"clients": clients, "rate": rate, "seconds": seconds, "seed": seed},
    }
