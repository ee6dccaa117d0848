"""systemd integration: the unit's security rating, sd_notify messages, signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.simulator import Simulator
from tests.e2e.chaos import simulator
from tests.helpers import LocalClient
from tests.secrets import SCANNER
from tests.tools import require

from .promql import ROOT


UNIT = ROOT / "deploy" / "chatwoot-bridge.service"


def test_unit_is_rated_1_5_or_lower():
    """systemd-analyze security --offline=true rates the shipped unit 1.5 or lower."""
    analyze = require("systemd-analyze", "apt-get install systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(
        r"Overall exposure level for chatwoot-bridge.service: ([0-9.]+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5
    assert f"rates it {match.group(1)}" in UNIT.read_text()  # the figure in the docs is current


def test_unit_has_the_required_settings():
    """Type=notify with a watchdog, the hardening the issue names, an EnvironmentFile."""
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        "EnvironmentFile=/etc/chatwoot-bridge/chatwoot-bridge.env",
    ):
        assert line in text, line
    assert (ROOT / "deploy" / "chatwoot-bridge.env.example").exists()


class Daemon:
    """``chatwoot-bridge run`` as a subprocess with JSON logs on stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []

    async def wait_log(self, event: str, timeout: float = 15) -> dict:
        assert self.proc.stderr is not None
        for line in self.lines:
            if line.get("event") == event:
                return line
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"daemon exited before {event}")
                SCANNER.check(raw.decode(), "log daemon")
                line = json.loads(raw)
                self.lines.append(line)
                if line.get("event") == event:
                    return line


async def start(env: dict[str, str], *args: str) -> Daemon:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHATWOOT_", "BRIDGE_"))}
    base.update({"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_LOG_FORMAT": "json", **env})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        *args,
        env=base,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Daemon(proc)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator(5, 3) as (running, url):
        running.url = url  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def sim_env(sim: Simulator) -> dict[str, str]:
    return {"CHATWOOT_URL": sim.url, "CHATWOOT_API_TOKEN": sim.cfg.api_token}  # type: ignore[attr-defined]


async def test_notifications_arrive_in_order(sim_env, tmp_path: Path):
    """READY=1 (listening, profile read), WATCHDOG=1 from the loop, STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    daemon = await start({**sim_env, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
    messages: list[str] = []

    async def until(prefix: str) -> None:
        async with asyncio.timeout(15):
            while not any(m.startswith(prefix) for m in messages):
                messages.extend((await loop.sock_recv(sock, 4096)).decode().splitlines())

    try:
        await until("READY=1")
        await until("STATUS=upstream live")
        await until("WATCHDOG=1")
        await daemon.wait_log("bridge.listening")
        daemon.proc.send_signal(signal.SIGTERM)
        await until("STOPPING=1")
        assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
        sock.close()
    order = [m for m in messages if m in ("READY=1", "WATCHDOG=1", "STOPPING=1")]
    assert order[0] == "READY=1"
    assert order.index("WATCHDOG=1") > 0
    assert order[-1] == "STOPPING=1"
    assert order.count("WATCHDOG=1") >= 1
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert any("listening on http://127.0.0.1:" in s for s in statuses)
    assert any(s.startswith("STATUS=upstream live") for s in statuses)


async def test_sighup_reloads_the_log_level_without_dropping_clients(sim, sim_env, tmp_path: Path):
    """SIGHUP re-reads the config file: debug lines start, the connected client stays."""
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\nlog_level = "info"\n')
    daemon = await start(sim_env, "--config", str(config))
    try:
        listening = await daemon.wait_log("bridge.listening")
        async with LocalClient.connect(listening["url"]) as client:
            await client.wait_status("live")
            config.write_text('[bridge]\nlog_level = "debug"\n')
            daemon.proc.send_signal(signal.SIGHUP)
            reloaded = await daemon.wait_log("bridge.reloaded")
            assert reloaded["log_level"] == "debug"
            await client.ws.send('{"type":"ping"}')
            assert await client.wait_for(lambda f: f.get("type") == "pong")
            sim.create_message(1, 1, content="after the reload")
            await daemon.wait_log("event.received")  # a debug line, off before the reload
            assert not any(
                line.get("level") == "debug"
                for line in daemon.lines[: daemon.lines.index(reloaded)]
            )
            # the reload did not drop the client: it was still connected afterwards
            assert not any(line.get("event") == "client.disconnected" for line in daemon.lines)
        daemon.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def test_second_signal_forces_the_exit(sim_env):
    """While a stuck client holds up the graceful stop, a second SIGTERM exits at once."""
    daemon = await start({**sim_env, "BRIDGE_SHUTDOWN_GRACE_MS": "10000"})
    try:
        listening = await daemon.wait_log("bridge.listening")
        host, port = listening["url"].removeprefix("http://").split(":")
        # a client that completes the handshake, then never reads nor answers the close
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await writer.drain()
        assert b"101" in await reader.readline()
        await daemon.wait_log("client.connected")
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.wait_log("bridge.stopping")
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.proc.wait(), 5)
        assert code == 130
        assert time.monotonic() - started < 2
        writer.close()
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
