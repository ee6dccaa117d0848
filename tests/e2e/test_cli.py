"""The command line as a user runs it: run, check, tail, demo, and bad configuration."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
import websockets

from tests.helpers import LocalClient, running_bridge
from tests.secrets import SCANNER

from .conftest import RunningSim


SECRETS = ("sim-api-token", "sim-pubsub-token")


def env_for(**values: str) -> dict[str, str]:
    """A clean environment: no CHATWOOT_/BRIDGE_ variables leak in from the test runner."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHATWOOT_", "BRIDGE_"))}
    base.update(values)
    return base


async def cli(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    SCANNER.check(err.decode(), f"log {args[0]}")
    return proc.returncode, out.decode(), err.decode()


async def test_bad_configuration_exits_2_with_one_line_per_problem():
    """Missing and invalid variables are listed, each on its own line; secrets are not echoed."""
    code, out, err = await cli(
        "run", env=env_for(CHATWOOT_URL="https://u:hunter22@x", BRIDGE_POLL_ACTIVE_MS="soon")
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0] == "chatwoot-bridge: configuration error"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "CHATWOOT_URL",
        "CHATWOOT_API_TOKEN",
        "BRIDGE_POLL_ACTIVE_MS",
    ]
    assert "hunter22" not in err + out


async def test_check_reports_every_step(simulator: RunningSim):
    """check prints profile, cable and subscription results and exits 0."""
    code, out, _ = await cli("check", env=env_for(**simulator.bridge_env()))
    assert code == 0, out
    assert "profile    ok" in out
    assert "cable      ok" in out
    assert "subscribe  ok" in out
    assert not any(secret in out for secret in SECRETS)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"CHATWOOT_API_TOKEN": "sim-bot-token"}, "User access token"),
        (
            {
                "CHATWOOT_PUBSUB_TOKEN": "wrong-token",
                "CHATWOOT_USER_ID": "1",
                "CHATWOOT_ACCOUNT_IDS": "1",
            },
            "not confirmed",
        ),
        ({"CHATWOOT_ACCOUNT_IDS": "9"}, "not among this user's accounts"),
    ],
)
async def test_check_fails_clearly(simulator: RunningSim, extra, expected):
    """A bot token, a wrong pubsub token and a foreign account each fail with an explanation."""
    env = env_for(**{**simulator.bridge_env(), "BRIDGE_SUBSCRIBE_TIMEOUT_MS": "500", **extra})
    code, out, _ = await cli("check", env=env)
    assert code == 1
    assert "FAIL" in out
    assert expected in out
    assert "wrong-token" not in out


@pytest.fixture
async def daemon(simulator: RunningSim) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``chatwoot-bridge run`` as a subprocess on the simulator, JSON logs on stderr."""
    env = env_for(**simulator.bridge_env(BRIDGE_LISTEN="127.0.0.1:0", BRIDGE_LOG_FORMAT="json"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    url = None
    async with asyncio.timeout(15):
        while url is None:
            line = json.loads(await proc.stderr.readline())
            if line["event"] == "bridge.listening":
                url = line["url"]
    try:
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_serves_then_stops_on_sigterm_with_1001_and_exit_0(simulator: RunningSim, daemon):
    """The daemon bridges events; SIGTERM closes clients with 1001, exits 0; logs are JSON."""
    proc, url = daemon
    async with LocalClient.connect(url, "events=message.created") as client:
        await client.wait_status("live")
        mid = simulator.sim.create_message(1, 1, content="through the daemon")["id"]
        await client.wait_for(
            lambda f: f.get("event") == "message.created" and f["data"].get("id") == mid
        )
        proc.send_signal(signal.SIGTERM)
        assert await client.closed_code() == 1001
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    rest = (await proc.stderr.read()).decode()
    events = [json.loads(line)["event"] for line in rest.splitlines()]
    assert "bridge.stopped" in events
    assert not any(secret in rest for secret in SECRETS)


async def test_tail_prints_events(simulator: RunningSim):
    """tail connects to a running bridge and prints one line per event."""
    async with running_bridge(simulator.bridge_env()) as (_, url):
        async with LocalClient.connect(url) as watcher:
            await watcher.wait_status("live")
        task = asyncio.ensure_future(
            cli("tail", "--url", url, "--events", "message.created", "--count", "2", env=env_for())
        )
        # keep creating until tail has seen two (it may connect after the first)
        while not task.done():
            simulator.sim.create_message(1, 1, content="for tail")
            await asyncio.wait({task}, timeout=0.2)
        code, out, _ = task.result()
    assert code == 0
    lines = [line for line in out.splitlines() if "message.created" in line]
    assert len(lines) == 2
    assert "1/1" in lines[0]


async def test_demo_shows_live_events():
    """make demo's command prints the URLs and live events within seconds, then stops by itself."""
    code, out, _ = await cli(
        "demo",
        "--duration",
        "4",
        "--rate",
        "5",
        "--listen",
        "127.0.0.1:0",
        "--sim-listen",
        "127.0.0.1:0",
        env=env_for(),
    )
    assert code == 0
    assert "bridge socket:" in out
    assert "-- upstream live" in out
    assert out.count("message.created") >= 3


async def test_open_auth_is_refused_off_loopback():
    """BRIDGE_AUTH=none on a public address refuses to start, saying what to do."""
    code, _, err = await cli(
        "run",
        env=env_for(CHATWOOT_URL="http://x", CHATWOOT_API_TOKEN="t", BRIDGE_LISTEN="0.0.0.0:8765"),
    )
    assert code == 2
    assert "BRIDGE_AUTH: none is only allowed while BRIDGE_LISTEN is loopback" in err


async def test_static_tokens_from_the_config_file_and_minted_jwts(simulator: RunningSim, tmp_path):
    """`token` makes a [[bridge.clients]] entry that the daemon accepts with its scope;
    `jwt` mints a token the daemon accepts; a wrong token gets 4001."""
    code, entry, _ = await cli(
        "token", "--name", "acct-2", "--accounts", "2", "--events", "message.*", env=env_for()
    )
    assert code == 0
    token = entry.splitlines()[1].removeprefix("#").strip()
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\nauth = "token,jwt"\n' + "\n".join(entry.splitlines()[2:]) + "\n")
    secret = "jwt-signing-key-0123456789-abcdefghij"
    env = env_for(BRIDGE_JWT_SECRET=secret)
    code, minted, err = await cli("jwt", "--accounts", "1", "--ttl", "120", env=env)
    assert code == 0, err
    async with running_bridge(
        {**simulator.bridge_env(), "BRIDGE_JWT_SECRET": secret},
        file_values=config_file(config),
    ) as (_, url):
        async with (
            LocalClient.connect(url, f"token={token}") as by_token,
            LocalClient.connect(url, f"token={minted.strip()}") as by_jwt,
        ):
            await by_token.wait_status("live")
            one = simulator.sim.create_message(1, 1, content="account 1")["id"]
            two = simulator.sim.create_message(2, 1, content="account 2")["id"]
            await by_token.wait_for(lambda f: f.get("type") == "event" and f["data"]["id"] == two)
            await by_jwt.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == one)
            assert [f["data"]["id"] for f in by_token.events()] == [two]
            assert {f["account_id"] for f in by_jwt.events()} == {1}
        ws_url = url.replace("http", "ws", 1) + "/ws?token=wrong"
        async with websockets.connect(ws_url) as refused:
            error = json.loads(await refused.recv())
            with pytest.raises(websockets.ConnectionClosed) as info:
                await refused.recv()
        assert (error["type"], error["code"]) == ("error", "unauthorized")
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4001


def config_file(path):
    from bridge import config  # noqa: PLC0415

    return config.read_file(path)
