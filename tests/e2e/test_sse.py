"""/events against the whole daemon: a stream cut mid-traffic resumes from Last-Event-ID
and, with the part before the cut, has every message exactly once. The cut is noticed at
once (the keep-alive is 15 s away), so the stream does not hold a client slot."""

from __future__ import annotations

import aiohttp

from tests.helpers import eventually, running_bridge
from tests.sse import SseStream

from .conftest import RunningSim


async def next_message(stream: SseStream) -> int:
    found = await stream.until(lambda e: e.event == "message.created")
    return found.json["data"]["id"]


async def test_last_event_id_resume_misses_nothing(simulator: RunningSim):
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env()) as (bridge, url),
        aiohttp.ClientSession() as http,
    ):
        first = SseStream(await http.get(f"{url}/events?events=message.created"))
        welcome = await first.next()
        assert welcome.event == "welcome"
        if welcome.json["upstream"] != "live":
            await first.until(lambda e: e.event == "status" and e.json["upstream"] == "live")
        created = [sim.create_message(1, 1 + i % 3, content=f"a{i}")["id"] for i in range(10)]
        got = [await next_message(first) for _ in range(5)]
        first.response.close()
        await eventually(lambda: not bridge.server.clients)
        created += [sim.create_message(2, 1, content=f"b{i}")["id"] for i in range(10)]
        await eventually(
            lambda: (
                bridge.metrics.events_published.labels(event="message.created")._value.get() >= 20
            )
        )
        again = SseStream(
            await http.get(
                f"{url}/events?events=message.created",
                headers={"Last-Event-ID": first.last_event_id or ""},
            )
        )
        welcome = await again.next()
        assert welcome.json["replayed"] == 15
        got += [await next_message(again) for _ in range(15)]
        assert got == created
        tail = sim.create_message(1, 1, content="live")["id"]
        assert await next_message(again) == tail
        again.response.close()
