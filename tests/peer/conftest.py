"""Fixtures for tests that run against a real Rails ActionCable peer (puma + actioncable gem)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .rails_peer import INSTALL_HINT, RailsPeer, availability_problem


PEER_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/peer with ``pytest.mark.peer``."""
    for item in items:
        if item.path.is_relative_to(PEER_DIR):
            item.add_marker(pytest.mark.peer)


def require_rails_peer() -> None:
    """Skip when the Rails peer is not installed; fail instead when running in CI (``CI`` set)."""
    problem = availability_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"Rails ActionCable peer required in CI but unavailable: {problem}")
    pytest.skip(f"Rails ActionCable peer not installed: {INSTALL_HINT}")


@pytest.fixture
async def rails_peer(tmp_path: Path) -> AsyncIterator[RailsPeer]:
    """A started ``RailsPeer`` on a free loopback port; stopped (no orphan puma) afterwards.

    The puma log lives in ``tmp_path``; its tail is printed at teardown, so it shows up in
    pytest's report of a failing test.
    """
    require_rails_peer()
    peer = RailsPeer(log_dir=tmp_path)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.close()
        print(f"--- rails peer log ({peer.log_path}), tail ---\n{peer.log_tail(60)}")
