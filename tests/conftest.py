"""Shared fixtures: payload fixtures, configuration factory, fresh metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.metrics import Metrics
from tests.secrets import SCANNER


FIXTURES = Path(__file__).parent / "fixtures" / "chatwoot"


def _route_logs_to_the_scanner() -> None:
    """structlog renders to stdlib logging; the root logger hands every record to SCANNER."""
    root = logging.getLogger()
    if SCANNER not in root.handlers:
        root.addHandler(SCANNER)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )


@pytest.fixture(scope="session", autouse=True)
def no_secret_anywhere():
    """After the whole suite: no configured secret in any log line or received frame."""
    _route_logs_to_the_scanner()
    yield
    assert SCANNER.violations == [], "\n".join(SCANNER.violations)


@pytest.fixture(autouse=True)
def _keep_scanning():
    """Tests that reconfigure logging (test_logs) must not switch the scanner off."""
    _route_logs_to_the_scanner()


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
