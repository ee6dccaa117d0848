"""The chaos test: no message lost or doubled while the upstream drops, stalls and loses events."""

from __future__ import annotations

import os

import pytest

from .chaos import run_chaos


SEED = int(os.environ.get("CHAOS_SEED", "20261125"))


@pytest.mark.slow
async def test_every_message_exactly_once_and_latest_status_under_chaos():
    """1,000+ messages across 20 conversations while the socket is dropped, silenced and lossy.

    Four clients with different filters (one leaves and resumes with since) each get every
    matching message.created exactly once and end with every conversation's latest status.
    """
    report = await run_chaos(seed=SEED, messages=1000)
    print(report.text())
    assert report.ok, report.text()
    kinds = {kind for _, kind, _ in report.faults}
    assert kinds == {"drop", "silence", "lose_broadcasts"}, report.faults
    assert report.metrics["gap_outage"] + report.metrics["gap_reconnect"] > 0
    assert report.metrics["gap_reconcile"] > 0
    assert report.status_changes > 10
