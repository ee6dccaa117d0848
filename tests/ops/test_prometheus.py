"""A real Prometheus (Debian's `prometheus`) scrapes a running bridge; promtool checks the rules."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.tools import require

from .conftest import free_port
from .promql import ROOT


INSTALL = "apt-get install prometheus"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def test_promtool_checks_the_rules():
    """promtool check rules accepts deploy/prometheus/alerts.yml."""
    promtool = require("promtool", INSTALL)
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass():
    """promtool test rules runs the alert unit tests (firing and not firing cases)."""
    promtool = require("promtool", INSTALL)
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_scrape_config_is_valid(tmp_path: Path):
    """deploy/prometheus/prometheus.yml passes promtool check config (rule path adjusted)."""
    promtool = require("promtool", INSTALL)
    text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/chatwoot-bridge-alerts.yml", str(ALERTS)))
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def test_real_prometheus_scrapes_the_bridge(bridge_on_sim, tmp_path: Path):
    """Prometheus scrapes /metrics on loopback; its API returns bridge metrics and the rules."""
    binary = require("prometheus", INSTALL)
    _, url = bridge_on_sim
    target = url.removeprefix("http://")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: chatwoot-bridge\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(  # noqa: ASYNC220  (a server, waited for below)
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        found = await query(
                            session, base, 'chatwoot_bridge_build_info{job="chatwoot-bridge"}'
                        )
                        if found:
                            break
                    await asyncio.sleep(0.2)  # Prometheus scrapes on its own schedule
            assert found[0]["metric"]["version"]
            up = await query(session, base, 'up{job="chatwoot-bridge"}')
            assert up[0]["value"][1] == "1"
            live = await query(session, base, 'chatwoot_bridge_upstream_state{state="live"}')
            assert live[0]["value"][1] == "1"
            async with session.get(f"{base}/api/v1/rules") as response:
                rules = (await response.json())["data"]["groups"][0]["rules"]
            assert len(rules) == 8
            assert {r["health"] for r in rules} <= {"ok", "unknown"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    if proc.returncode not in (0, -15):
        pytest.fail((tmp_path / "prometheus.log").read_text()[-2000:])
