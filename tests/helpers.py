"""Helpers shared by end-to-end tests: run a whole Bridge in-process, talk to its socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge import config
from bridge.app import Bridge
from tests.secrets import observe_frame


FAST = {
    "BRIDGE_LISTEN": "127.0.0.1:0",
    "BRIDGE_SUBSCRIBE_TIMEOUT_MS": "1000",
    "BRIDGE_STALE_AFTER_MS": "1000",
    "BRIDGE_RECONNECT_BACKOFF_MS": "50,100,200",
    "BRIDGE_RECONNECT_REFUSED_MS": "500",
    "BRIDGE_REQUEST_TIMEOUT_MS": "2000",
    "BRIDGE_SHUTDOWN_GRACE_MS": "2000",
}


@contextlib.asynccontextmanager
async def running_bridge(
    env: Mapping[str, str], *, file_values: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Bridge, str]]:
    """Run a Bridge until the block ends; yields it and its base URL."""
    cfg = config.load({**FAST, **env}, file_values=file_values)
    bridge = Bridge(cfg)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(bridge.run(stop, on_ready=ready.set_result))
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the startup error
    url = await asyncio.wait_for(ready, 10)
    try:
        yield bridge, url
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


class LocalClient:
    """A local socket client with helpers to await frames (no sleeps)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, base_url: str, query: str = "") -> AsyncIterator[LocalClient]:
        url = base_url.replace("http", "ws", 1) + "/ws" + (f"?{query}" if query else "")
        async with connect(url, max_size=None, open_timeout=5) as ws:
            client = cls(ws)
            client.welcome = await client.next_frame()
            assert client.welcome["type"] == "welcome", client.welcome
            yield client

    async def next_frame(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            text = await self.ws.recv()
        observe_frame(text)
        frame = json.loads(text)
        self.frames.append(frame)
        return frame

    def mark(self) -> int:
        """A position in the frames received so far, for ``wait_for(after=…)``."""
        return len(self.frames)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, *, after: int = 0
    ) -> dict[str, Any]:
        """The first frame after position ``after`` (already received or next) that matches."""
        for frame in self.frames[after:]:
            if predicate(frame):
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame(timeout)
                if predicate(frame):
                    return frame

    @property
    def upstream(self) -> str | None:
        """The latest upstream state seen (welcome or status frames)."""
        states = [f["upstream"] for f in self.frames if f.get("type") in ("welcome", "status")]
        return states[-1] if states else None

    async def wait_status(
        self, state: str, timeout: float = 10.0, *, after: int = 0
    ) -> dict[str, Any]:
        """Wait until the upstream is ``state``, per a welcome or status frame after ``after``."""
        return await self.wait_for(
            lambda f: f.get("type") in ("welcome", "status") and f.get("upstream") == state,
            timeout,
            after=after,
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("type") == "event" and (name is None or f["event"] == name)
        ]

    async def closed_code(self, timeout: float = 10.0) -> int | None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


async def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.02
) -> None:
    """Wait until ``predicate()`` holds, for state that has no event to await (metrics,
    another component's counters). Bounded; raises TimeoutError."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(every)
