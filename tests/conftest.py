"""Shared fixtures: payload fixtures, configuration factory, fresh metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.metrics import Metrics


FIXTURES = Path(__file__).parent / "fixtures" / "chatwoot"


def load_fixture(relative: str) -> Any:
    """A JSON payload fixture, by path under tests/fixtures/chatwoot."""
    return json.loads((FIXTURES / relative).read_text())


@pytest.fixture
def metrics() -> Metrics:
    """A Metrics object on its own registry."""
    return Metrics.create(CollectorRegistry(), "test")


@pytest.fixture
def make_config() -> Callable[..., config.Config]:
    """Build a Config from variables, with test-friendly defaults."""

    def make(**values: str) -> config.Config:
        env = {
            "CHATWOOT_URL": "http://127.0.0.1:9",
            "CHATWOOT_API_TOKEN": "test-api-token",
            "BRIDGE_LISTEN": "127.0.0.1:0",
        }
        env.update(values)
        return config.load(env)

    return make
