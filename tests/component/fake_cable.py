"""A scripted ActionCable server on loopback for upstream driver tests.

Speaks just enough Rails ActionCable (welcome, pings, confirm) and lets each test
decide how to misbehave: stay silent on subscribe, stop pinging, reject, disconnect,
or refuse the subprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers


@dataclass
class Behaviour:
    """What the fake does; tests change it between connections."""

    confirm: bool = True
    reject: bool = False
    ping_interval: float | None = 0.05
    subprotocol: str | None = "actioncable-v1-json"
    welcome: bool = True


@dataclass
class Connection:
    """One accepted socket, as seen by the test."""

    ws: ServerConnection
    headers: Headers
    received: list[dict[str, Any]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    identifiers: list[str] = field(default_factory=list)
    performed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))


class FakeCable:
    """``async with FakeCable() as cable`` serves on 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.connections: list[Connection] = []
        self.new_connection = asyncio.Condition()
        self.url = ""
        self._server: Any = None
        self._pingers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeCable:
        def select(_: ServerConnection, offered: list[str]) -> str | None:
            wanted = self.behaviour.subprotocol
            if wanted is None:
                return None
            return wanted if wanted in offered or wanted == "other" else None

        self._server = await serve(
            self._handle, "127.0.0.1", 0, select_subprotocol=select, compression=None
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/cable"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._pingers:
            task.cancel()
        self._server.close()
        await self._server.wait_closed()

    async def wait_connections(self, count: int) -> Connection:
        """Wait until ``count`` sockets have been accepted; return the last one."""
        async with self.new_connection:
            await self.new_connection.wait_for(lambda: len(self.connections) >= count)
        return self.connections[count - 1]

    async def broadcast(self, payload: dict[str, Any], conn: Connection | None = None) -> None:
        """Send a broadcast on every subscription of ``conn`` (default: the last socket)."""
        target = conn or self.connections[-1]
        for identifier in target.identifiers:
            await target.send({"identifier": identifier, "message": payload})

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, ws.request.headers if ws.request else Headers())
        async with self.new_connection:
            self.connections.append(conn)
            self.new_connection.notify_all()
        behaviour = self.behaviour
        pinger = None
        try:
            if behaviour.welcome:
                await conn.send({"type": "welcome"})
            if behaviour.ping_interval:
                pinger = asyncio.ensure_future(self._ping(conn, behaviour.ping_interval))
                self._pingers.add(pinger)
            async for text in ws:
                frame = json.loads(text)
                conn.received.append(frame)
                if frame.get("command") == "subscribe":
                    conn.identifiers.append(frame["identifier"])
                    if behaviour.reject:
                        await conn.send(
                            {"identifier": frame["identifier"], "type": "reject_subscription"}
                        )
                    elif behaviour.confirm:
                        await conn.send(
                            {"identifier": frame["identifier"], "type": "confirm_subscription"}
                        )
                    conn.subscribed.set()
                elif frame.get("command") == "message":
                    conn.performed.set()
        except Exception:  # noqa: S110  (a test server: the client went away)
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
                self._pingers.discard(pinger)
            conn.closed.set()

    async def _ping(self, conn: Connection, interval: float) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(interval)
                await conn.send({"type": "ping", "message": 1795586400})
