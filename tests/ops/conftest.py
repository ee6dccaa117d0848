"""Fixtures for the operations tests: a bridge on the simulator, its address, a free port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from bridge.app import Bridge
from tests.e2e.chaos import simulator
from tests.helpers import LocalClient, running_bridge


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def bridge_on_sim() -> AsyncIterator[tuple[Bridge, str]]:
    """A live bridge on the simulator that has published a message; yields it and its URL."""
    async with (
        simulator(3, 3) as (sim, sim_url),
        running_bridge({"CHATWOOT_URL": sim_url, "CHATWOOT_API_TOKEN": sim.cfg.api_token}) as (
            bridge,
            url,
        ),
    ):
        async with LocalClient.connect(url, "events=message.created") as client:
            await client.wait_status("live")
            mid = sim.create_message(1, 1, content="for the metrics")["id"]
            await client.wait_for(lambda f: f.get("type") == "event" and f["data"]["id"] == mid)
        yield bridge, url
