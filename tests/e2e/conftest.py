"""The simulator, in-process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bridge.simulator import SimConfig, Simulator, running


@dataclass
class RunningSim:
    """A simulator serving on loopback, with its in-process control object."""

    sim: Simulator
    url: str
    cfg: SimConfig

    def bridge_env(self, **extra: str) -> dict[str, str]:
        return {"CHATWOOT_URL": self.url, "CHATWOOT_API_TOKEN": self.cfg.api_token, **extra}


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSim]:
    """The Chatwoot simulator with no generated traffic and fast pings."""
    cfg = SimConfig(port=0, rate=0, ping_interval=0.2, seed=7)
    async with running(cfg) as (sim, url):
        yield RunningSim(sim, url, cfg)
