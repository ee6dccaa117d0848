"""The load generator: raw WebSocket clients in a worker process, light enough not to be
the bottleneck (its CPU is reported with every step).

A client does the HTTP upgrade by hand, then only *counts* event frames: each event the
emitter sends carries ``MARK`` followed by its send time, once per frame, so ``bytes.count``
(C speed, no frame parsing) counts deliveries. A *sampler* worker's clients also read the
send times, as soon as frames arrive, to sample the end-to-end latency; other workers'
clients pause reading after each read until the next :data:`TICK`, so that each read takes
what arrived meanwhile (the kernel buffers it), which keeps the generator's CPU per delivery
well below the server's. Server pings (``\\x89\\x00``: aiohttp's
heartbeat sends them empty) are answered with a masked pong.

The worker obeys commands from the harness over a pipe:
``("ensure", [(index, path)])`` opens every listed client not open (filters in the query string),
``("reset",)`` zeroes the counters, ``("read",)`` returns them, ``None`` closes all and exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

from websockets.frames import Frame, Opcode


MARK = b"~ts="
STAMP_LEN = 17  # f"{time.time():.6f}"
SAMPLE_EVERY = 10  # one client in SAMPLE_EVERY belongs to the sampler worker
TICK = 0.050
PING = b"\x89\x00"
PONG = Frame(Opcode.PONG, b"").serialize(mask=True)


def stamp() -> str:
    """The send-time text that follows ``MARK`` in an event."""
    return f"{time.time():.6f}"


class Stats:
    """What one worker's clients saw since the last reset."""

    __slots__ = ("frames", "latencies", "lost", "paused")

    def __init__(self) -> None:
        self.frames = 0
        self.latencies: list[float] = []
        self.lost = 0
        # Transports paused until the next tick.
        self.paused: list[asyncio.Transport] = []

    async def resume_every_tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            paused, self.paused = self.paused, []
            for transport in paused:
                if not transport.is_closing():
                    transport.resume_reading()


class Client(asyncio.Protocol):
    __slots__ = ("_request", "open", "partial", "sampled", "stats", "tail", "transport", "upgraded")

    def __init__(self, stats: Stats, sampled: bool, request: bytes) -> None:
        self.stats = stats
        self.sampled = sampled
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.partial = b""
        self.upgraded = False
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            data = self.tail + data
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                self.tail = data[-8192:]
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._fail(head.split(b"\r\n", 1)[0].decode("latin-1"))
                return
            self.upgraded, self.tail, data = True, b"", rest
            if not self.open.done():
                self.open.set_result(None)  # the welcome frame follows
        chunk = self.tail + data
        self.stats.frames += chunk.count(MARK)
        # A ping split across reads is seen whole here (one seen twice gets two pongs:
        # unsolicited pongs are allowed, RFC 6455 §5.5.3).
        ping = PING in chunk
        # Carried over: too short to hold a whole marker (so none is counted twice), long
        # enough to complete one split across reads.
        self.tail = chunk[-(len(MARK) - 1) :]
        if self.sampled:
            self._sample(data)
        transport = self.transport
        if transport is not None:
            if ping:
                transport.write(PONG)
            if not self.sampled:
                transport.pause_reading()
                self.stats.paused.append(transport)

    def _sample(self, data: bytes) -> None:
        """Latency of each event in ``data``, completing a send time split across reads."""
        text = self.partial + data
        self.partial = text[-(len(MARK) - 1) :]
        now = time.time()
        at = text.find(MARK)
        while at >= 0:
            start = at + len(MARK)
            stamp = text[start : start + STAMP_LEN]
            if len(stamp) < STAMP_LEN:
                self.partial = text[at:]  # finished by the next read
                break
            self.stats.latencies.append(now - float(stamp))
            at = text.find(MARK, start)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upgraded:
            self.stats.lost += 1
        self.transport = None
        self._fail("connection lost")

    def _fail(self, why: str) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def worker(host: str, port: int, conn: Connection, sampler: bool) -> None:
    """Process entry point."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_serve(host, port, conn, sampler))


async def _serve(host: str, port: int, conn: Connection, sampler: bool) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: dict[int, Client] = {}
    limit = asyncio.Semaphore(200)
    ticker = asyncio.ensure_future(stats.resume_every_tick())

    async def one(index: int, path: str) -> None:
        async with limit:
            client = Client(stats, sampler, upgrade_request(host, port, path))
            clients[index] = client
            await loop.create_connection(lambda: client, host, port)
            async with asyncio.timeout(30):
                await client.open

    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command is None:
            break
        match command[0]:
            case "ensure":
                todo = [
                    (i, p)
                    for i, p in command[1]
                    if i not in clients or clients[i].transport is None
                ]
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(one(i, p) for i, p in todo), return_exceptions=True
                )
                failed = [r for r in results if isinstance(r, BaseException)]
                conn.send(
                    {
                        "opened": len(todo) - len(failed),
                        "failed": len(failed),
                        "error": repr(failed[0]) if failed else None,
                        "seconds": time.perf_counter() - started,
                    }
                )
            case "reset":
                stats.frames, stats.latencies, stats.lost = 0, [], 0
                conn.send(time.process_time())
            case "read":
                conn.send(
                    {
                        "frames": stats.frames,
                        "latencies": stats.latencies,
                        "lost": stats.lost,
                        "cpu": time.process_time(),
                        "open": sum(1 for c in clients.values() if c.transport is not None),
                    }
                )
            case other:
                conn.send({"error": f"unknown command {other!r}"})
    ticker.cancel()
    for client in clients.values():
        if client.transport is not None:
            with contextlib.suppress(Exception):
                client.transport.abort()


def read_all(pipes: list[Connection]) -> dict[str, Any]:
    """Counters summed over workers (blocking; call from an executor)."""
    for pipe in pipes:
        pipe.send(("read",))
    answers = [pipe.recv() for pipe in pipes]
    return {
        "frames": sum(a["frames"] for a in answers),
        "latencies": [x for a in answers for x in a["latencies"]],
        "lost": sum(a["lost"] for a in answers),
        "cpu": [a["cpu"] for a in answers],
        "open": sum(a["open"] for a in answers),
    }
