"""Per-message deflate, the opt-in (BRIDGE_CLIENT_COMPRESSION): a real client's inflater
reads what aiohttp compresses (welcome, replay) and the shared uncompressed live frames in
between; with the default, nothing is negotiated."""

from __future__ import annotations

import pytest

from tests.helpers import LocalClient, running_bridge

from .conftest import RunningSim


def negotiated(client: LocalClient) -> str:
    assert client.ws.response is not None
    return client.ws.response.headers.get("Sec-WebSocket-Extensions", "")


def is_message(mid: int):
    return lambda f: f.get("type") == "event" and f["data"].get("id") == mid


@pytest.mark.parametrize("setting", ["on", "off"])
async def test_compressed_replay_and_uncompressed_live_frames_mix(
    simulator: RunningSim, setting: str
):
    """On: deflate negotiated; a resume's replay (compressed) then live events (not) arrive
    whole and in order. Off (the default): the offer is declined."""
    sim = simulator.sim
    env = simulator.bridge_env(BRIDGE_CLIENT_COMPRESSION=setting)
    async with running_bridge(env) as (_, url):
        async with LocalClient.connect(url, "events=message.created") as first:
            assert ("permessage-deflate" in negotiated(first)) is (setting == "on")
            await first.wait_status("live")
            before = sim.create_message(1, 1, content="before")["id"]
            last = await first.wait_for(is_message(before))
            resume = f"{last['epoch']}:{last['seq']}"
        missed = [sim.create_message(1, 2, content=f"missed {i} " * 50)["id"] for i in range(5)]
        async with LocalClient.connect(url, f"events=message.created&since={resume}") as again:
            assert ("permessage-deflate" in negotiated(again)) is (setting == "on")
            assert again.welcome is not None
            assert again.welcome["replayed"] == len(missed)
            await again.wait_for(is_message(missed[-1]))
            live = [sim.create_message(1, 3, content=f"live {i}")["id"] for i in range(3)]
            await again.wait_for(is_message(live[-1]))
            ids = [f["data"]["id"] for f in again.events("message.created")]
            assert ids == [*missed, *live]
