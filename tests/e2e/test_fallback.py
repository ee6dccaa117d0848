"""REST fallback as a user meets it: misbehaving REST during an outage, and politeness."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from tests.helpers import LocalClient, eventually, running_bridge

from .conftest import RunningSim


FALLBACK_ENV = {
    "BRIDGE_STALE_AFTER_MS": "500",
    "BRIDGE_RECONNECT_BACKOFF_MS": "100,200",
    "BRIDGE_POLL_ACTIVE_MS": "200",
    "BRIDGE_POLL_INACTIVE_MS": "1000",
    "BRIDGE_POLL_MAX_RETRIES": "3",
    "BRIDGE_POLL_BACKOFF_MS": "100,200,400",
    "BRIDGE_REQUEST_TIMEOUT_MS": "400",
    "BRIDGE_GAP_MARGIN_MS": "3000",
}


def list_requests(sim: RunningSim) -> list[dict]:
    return [r for r in sim.sim.request_log() if r["path"].endswith("/conversations")]


async def test_misbehaving_rest_during_an_outage_backs_off_reports_down_and_catches_up(
    simulator: RunningSim,
):
    """500s, 429s, hangs and malformed JSON: the daemon keeps going, goes down, then catches up."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env(**FALLBACK_ENV)) as (bridge, url),
        LocalClient.connect(
            url, "conversations=1:1&events=message.created,conversation.*"
        ) as client,
    ):
        await client.wait_status("live")
        at = client.mark()
        sim.set_faults(rest_mode="error500", refuse_connections=True)
        sim.drop_connections(abrupt=True)
        await client.wait_status("polling", after=at)
        down = await client.wait_status("down", after=at)
        assert "REST failing" in down["reason"]
        lost = [sim.create_message(1, 1, content="during the REST outage")["id"]]
        outcomes = bridge.metrics.poll_requests
        for mode, outcome in (
            ("error429", "rate_limited"),
            ("hang", "timeout"),
            ("malformed", "malformed"),
            ("wrong_types", "malformed"),
        ):
            counter = outcomes.labels(endpoint="conversations", outcome=outcome)
            before = counter._value.get()
            sim.set_faults(rest_mode=mode)
            await eventually(lambda c=counter, b=before: c._value.get() > b)
            lost.append(sim.create_message(1, 1, content=f"during {mode}")["id"])
        assert client.upstream == "down"
        at = client.mark()
        sim.set_faults(rest_mode="ok")
        await client.wait_status("polling", after=at)
        for mid in lost:
            await client.wait_for(
                lambda f, mid=mid: f.get("event") == "message.created" and f["data"]["id"] == mid
            )
        sim.set_faults(refuse_connections=False)
        await client.wait_status("live", after=at, timeout=15)
        tail = sim.create_message(1, 1, content="live again")["id"]
        await client.wait_for(
            lambda f: f.get("event") == "message.created" and f["data"]["id"] == tail
        )
        ids = [f["data"]["id"] for f in client.events("message.created")]
        assert ids.count(tail) == 1
        assert all(ids.count(m) == 1 for m in lost)
        assert [
            f["source"] for f in client.events("message.created") if f["data"]["id"] in lost
        ] == ["poll"] * 5
        # failures backed off: the gaps between failed list requests grew
        failed = [r["time"] for r in list_requests(simulator) if r["status"] not in (200, None)]
        gaps = [b - a for a, b in itertools.pairwise(failed)]
        assert max(gaps) >= 0.3
        m = bridge.metrics
        assert (
            m.poll_requests.labels(endpoint="conversations", outcome="server_error")._value.get()
            >= 3
        )
        assert (
            m.poll_requests.labels(endpoint="conversations", outcome="rate_limited")._value.get()
            >= 1
        )
        assert m.poll_requests.labels(endpoint="conversations", outcome="timeout")._value.get() >= 1
        assert (
            m.poll_requests.labels(endpoint="conversations", outcome="malformed")._value.get() >= 2
        )


@contextlib.asynccontextmanager
async def clients(url: str, count: int) -> AsyncIterator[list[LocalClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                LocalClient.connect(url, f"conversations=1:{i % 5 + 1},2:{i}")
            )
            for i in range(1, count + 1)
        ]


async def measure(sim: RunningSim, seconds: float) -> float:
    """REST requests per second to the simulator over ``seconds`` of steady traffic."""
    start = len(sim.sim.request_log())
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        sim.sim.create_message(1 + n % 2, 1 + n % 3, content=f"steady {n}")
        n += 1
        await asyncio.sleep(0.1)  # the workload's pace, not a synchronisation
    return (len(sim.sim.request_log()) - start) / seconds


async def test_request_rate_does_not_depend_on_the_number_of_clients(simulator: RunningSim):
    """During an outage, 100 clients cost Chatwoot what one client costs."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env(**FALLBACK_ENV)) as (bridge, url),
        LocalClient.connect(url, "conversations=1:1") as one,
    ):
        await one.wait_status("live")
        sim.set_faults(refuse_connections=True)
        sim.drop_connections(abrupt=True)
        await one.wait_status("polling")
        rate_one = await measure(simulator, 3.0)
        async with clients(url, 99) as many:
            assert len(many) + 1 == 100
            assert len(bridge.hub) == 100
            rate_hundred = await measure(simulator, 3.0)
    print(
        f"REST requests/s during an outage: 1 client {rate_one:.1f}, 100 clients {rate_hundred:.1f}"
    )
    # one list per account per 200 ms pass (10/s) plus the changed conversations' messages
    assert rate_one > 5
    assert rate_hundred <= rate_one * 1.3 + 2


async def test_sources_can_be_switched_off(simulator: RunningSim):
    """BRIDGE_SOURCES=poll: no cable at all, events come from REST; cable only: no polling."""
    sim = simulator.sim
    env = simulator.bridge_env(**FALLBACK_ENV, BRIDGE_SOURCES="poll")
    async with (
        running_bridge(env) as (_, url),
        LocalClient.connect(url, "events=message.created") as client,
    ):
        await client.wait_status("polling")
        mid = sim.create_message(1, 1, content="REST only")["id"]
        frame = await client.wait_for(lambda f: f.get("type") == "event" and f["data"]["id"] == mid)
        assert frame["source"] == "poll"
        assert sim.cable.connection_count == 0
        assert not any(r["path"] == "/cable" for r in sim.request_log())
    sim.clear_request_log()
    env = simulator.bridge_env(**FALLBACK_ENV, BRIDGE_SOURCES="cable")
    async with (
        running_bridge(env) as (_, url),
        LocalClient.connect(url, "events=message.created") as client,
    ):
        await client.wait_status("live")
        sim.set_faults(drop_broadcasts=True)
        sim.create_message(1, 1, content="lost, and nothing polls for it")
        sim.set_faults(drop_broadcasts=False)
        mid = sim.create_message(1, 1, content="after")["id"]
        frame = await client.wait_for(lambda f: f.get("type") == "event" and f["data"]["id"] == mid)
        assert [f["data"]["id"] for f in client.events("message.created")] == [mid]
        assert frame["source"] == "cable"
        assert not any(r["path"].endswith("/conversations") for r in sim.request_log())
