"""The daemon under hostile clients: a stalled reader, and a flood of garbage and oversized frames.

The daemon runs as a subprocess (its memory is measured from /proc); the simulator, the
well-behaved clients and the attackers run in the test process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from websockets.frames import Frame, Opcode

from bridge.simulator import Simulator
from tests.helpers import LocalClient
from tests.secrets import SCANNER

from .chaos import simulator


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    url: str

    def rss(self) -> int:
        """Resident memory, bytes (VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def metric(self, name: str, **labels: str) -> float:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + "/metrics") as response,
        ):
            text = await response.text()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.asynccontextmanager
async def daemon(sim: Simulator, sim_url: str, **env: str) -> AsyncIterator[Daemon]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHATWOOT_", "BRIDGE_"))}
    base.update(
        {
            "CHATWOOT_URL": sim_url,
            "CHATWOOT_API_TOKEN": sim.cfg.api_token,
            "BRIDGE_LISTEN": "127.0.0.1:0",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_LOG_LEVEL": "warning",
            "PYTHONASYNCIODEBUG": "0",
            **env,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--log-level",
        "info",
        env=base,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    url = None
    async with asyncio.timeout(15):
        while url is None:
            line = json.loads(await proc.stderr.readline())
            if line["event"] == "bridge.listening":
                url = line["url"]
    drain = asyncio.ensure_future(proc.stderr.read())  # keep the pipe from filling up
    try:
        yield Daemon(proc, url)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
        SCANNER.check((await asyncio.wait_for(drain, 15)).decode(errors="replace"), "log daemon")


async def raw_ws(
    url: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake by hand: the test controls every byte afterwards."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    assert b" 101 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer


def client_frame(opcode: Opcode, data: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3), built by websockets."""
    return Frame(opcode, data).serialize(mask=True)


async def test_a_stalled_client_is_dropped_while_the_others_stay_on_time():
    """A stalled reader gets 4029; the others get every message on time; memory is bounded."""
    async with (
        simulator(11, 3) as (sim, sim_url),
        daemon(
            sim, sim_url, BRIDGE_CLIENT_BUFFER_BYTES="262144", BRIDGE_REPLAY_MAX_BYTES="8388608"
        ) as d,
        contextlib.AsyncExitStack() as stack,
    ):
        good = [
            await stack.enter_async_context(LocalClient.connect(d.url, "events=message.created"))
            for _ in range(3)
        ]
        await good[0].wait_status("live")
        _reader, writer = await raw_ws(d.url, rcvbuf=4096)  # handshake done, never reads again
        rss_before = d.rss()
        peak = rss_before
        body = "x" * 20_000
        created: dict[int, float] = {}
        received: list[dict[int, float]] = [{} for _ in good]

        async def read(i: int, client: LocalClient) -> None:
            while len(received[i]) < 2000:
                frame = await client.next_frame(timeout=30)
                if frame.get("type") == "event":
                    received[i][frame["data"]["id"]] = time.time()

        readers = [asyncio.ensure_future(read(i, c)) for i, c in enumerate(good)]
        buffered = 0.0
        for n in range(2000):
            mid = sim.create_message(1 + n % 2, 1 + n % 3, content=f"{n} {body}")["id"]
            created[mid] = sim.world.messages[mid].created_at
            if n % 100 == 0:
                peak = max(peak, d.rss())
                buffered = max(buffered, await d.metric("chatwoot_bridge_client_buffered_bytes"))
                await asyncio.sleep(0.05)  # the workload's pace: 40 MB in a few seconds
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        peak = max(peak, d.rss())
        slow = 0.0

        async def dropped() -> bool:
            nonlocal slow
            slow = await d.metric(
                "chatwoot_bridge_client_disconnects_total", reason="slow_consumer"
            )
            return slow == 1

        async with asyncio.timeout(15):
            while not await dropped():  # the close handshake with a stalled peer times out first
                await asyncio.sleep(0.1)
        writer.close()
    delays = sorted(got[m] - created[m] for got in received for m in created)
    p99 = delays[int(len(delays) * 0.99)]
    growth = (peak - rss_before) / 1e6
    print(
        f"stalled client: dropped={slow:g}; others p99 {p99 * 1000:.0f} ms; "
        f"max bytes buffered for all clients {buffered / 1e6:.2f} MB; RSS growth {growth:.1f} MB "
        "for 40 MB sent"
    )
    assert slow == 1
    assert all(len(got) == 2000 for got in received)
    assert p99 < 2.0
    # what the daemon holds for its clients stays within their limits (4 x 256 KiB) ...
    assert buffered <= 4 * 262_144 + 64_000
    # ... and its memory does not follow the 40 MB that went through (the stalled socket
    # alone would have held it): the 8 MiB replay buffer plus the allocator's slack
    assert growth < 64


async def test_a_flood_of_garbage_leaves_the_daemon_serving_well_behaved_clients():
    """Garbage, oversized, binary, deep and malformed frames and half-open handshakes do not
    stop well-behaved clients from getting every message."""
    rng = random.Random(3)
    async with (
        simulator(12, 3) as (sim, sim_url),
        daemon(
            sim, sim_url, BRIDGE_HANDSHAKE_TIMEOUT_MS="1000", BRIDGE_CLIENT_FRAMES_PER_SECOND="50"
        ) as d,
        LocalClient.connect(d.url, "events=message.created") as good,
    ):
        await good.wait_status("live")

        def frames(kind: str) -> bytes:
            if kind == "garbage":
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
                return client_frame(Opcode.TEXT, payload)
            if kind == "oversized":
                return client_frame(Opcode.TEXT, b"[" * 70_000)
            if kind == "binary":
                return client_frame(Opcode.BINARY, os.urandom(100))
            if kind == "deep":
                deep = b'{"type":"subscribe","events":' + b"[" * 5000 + b"]" * 5000 + b"}"
                return client_frame(Opcode.TEXT, deep)
            return os.urandom(500)  # "noise": not even WebSocket framing

        async def attacker(kind: str) -> None:
            host, port = d.url.removeprefix("http://").split(":")
            writer = None
            try:
                if kind == "slowloris":
                    _, writer = await asyncio.open_connection(host, int(port))
                    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
                    await writer.drain()
                    await asyncio.sleep(3)  # holds the half-open request past the timeout
                    return
                reader, writer = await raw_ws(d.url)
                for _ in range(300):
                    writer.write(frames(kind))
                    await writer.drain()
                await asyncio.wait_for(reader.read(), 10)
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                pass  # the daemon cut us off: the point
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError, ConnectionError):
                        await writer.wait_closed()

        kinds = (
            ["garbage"] * 6
            + ["oversized"] * 3
            + ["binary"] * 3
            + ["deep"] * 3
            + ["noise"] * 3
            + ["slowloris"] * 10
        )
        attack = asyncio.gather(*(attacker(k) for k in kinds))
        ids = []
        for n in range(200):
            ids.append(sim.create_message(1, 1 + n % 3, content=f"during the flood {n}")["id"])
            await asyncio.sleep(0.01)
        await asyncio.wait_for(attack, 30)
        await good.wait_for(
            lambda f: f.get("type") == "event" and f["data"]["id"] == ids[-1], timeout=20
        )
        got = [f["data"]["id"] for f in good.events("message.created")]
        assert got == ids
        async with (
            aiohttp.ClientSession() as session,
            session.get(d.url + "/healthz") as response,
        ):
            assert response.status == 200
        assert d.proc.returncode is None
        assert (
            await d.metric("chatwoot_bridge_client_disconnects_total", reason="frame_too_big") >= 1
        )
        assert (
            await d.metric("chatwoot_bridge_client_disconnects_total", reason="rate_limited") >= 1
        )
        assert await d.metric("chatwoot_bridge_handshakes_refused_total", reason="timeout") >= 5
        assert await d.metric("chatwoot_bridge_client_errors_total", code="bad_request") >= 1


@pytest.mark.parametrize("n", [1])
def test_client_frames_are_masked(n):
    """Sanity for the helper: client frames carry the mask bit."""
    assert client_frame(Opcode.TEXT, b"x")[1] & 0x80
