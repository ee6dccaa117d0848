"""A small Server-Sent Events reader for tests (the parsing rules of the HTML standard)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.secrets import observe_frame


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


class SseStream:
    """Reads dispatched events from an open ``text/event-stream`` response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_event_id: str | None = None
        self.events: list[SseEvent] = []

    async def next(self, timeout: float = 5.0) -> SseEvent:
        event, data, event_id = "", [], None
        async with asyncio.timeout(timeout):
            while True:
                try:
                    raw = await self.response.content.readline()
                except (aiohttp.ClientPayloadError, ConnectionError):
                    raw = b""  # cut (an aborted transport)
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if not data and not event:
                        continue
                    if event_id is not None:
                        self.last_event_id = event_id
                    found = SseEvent(event or "message", "\n".join(data), event_id)
                    observe_frame(found.data)
                    self.events.append(found)
                    return found
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
                elif name == "retry" and value.isdigit():
                    self.retry = int(value)

    async def until(self, predicate, timeout: float = 5.0) -> SseEvent:
        async with asyncio.timeout(timeout):
            while True:
                found = await self.next(timeout)
                if predicate(found):
                    return found

    async def ended(self, timeout: float = 5.0) -> bool:
        """True once the server ends the stream (events meanwhile are kept)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.next(timeout)
        except EOFError:
            return True
