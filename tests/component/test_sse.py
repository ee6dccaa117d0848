"""Server-Sent Events at /events over real loopback: framing, resume with Last-Event-ID,
keep-alives, admission, slow consumers and shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from bridge.auth import Authenticator, ClientToken, Scope, token_digest
from bridge.config import LimitsConfig, ServerConfig
from bridge.eventlog import MemoryEventLog
from bridge.events import AccountId, ConversationId, Event
from bridge.hub import Hub
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.ports import LocalEventStore
from bridge.server import LocalServer
from bridge.status import StatusBoard
from tests.helpers import eventually
from tests.sse import SseStream


TOKEN = "sse-client-token"


@dataclass
class Rig:
    client: TestClient
    server: LocalServer
    pipeline: Pipeline
    status: StatusBoard
    metrics: Metrics

    async def publish(
        self, n: int, *, account: int = 1, conv: int = 42, name: str = "message.created", size=0
    ) -> None:
        await self.pipeline.publish(
            Event(
                name,
                AccountId(account),
                ConversationId(conv),
                "cable",
                1000.0,
                1000.0 + n,
                {"n": n, "pad": "x" * size},
                f"{name}:{account}:{n}",
            )
        )

    async def open(self, query: str = "", **headers: str) -> SseStream:
        response = await self.client.get(
            "/events" + (f"?{query}" if query else ""), headers=headers
        )
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream"
        return SseStream(response)


async def make_rig(aiohttp_client, metrics, *, auth=None, buffer=1024 * 1024, **limits) -> Rig:
    store = LocalEventStore(MemoryEventLog("ep1", 50))
    status = StatusBoard(0.0)
    hub = Hub()
    pipeline = Pipeline(store, hub, metrics)
    pipeline.accounts = frozenset({1, 2})
    server = LocalServer(
        ServerConfig(port=0, client_buffer_bytes=buffer),
        hub,
        store,
        status,
        metrics,
        poll_window=30.0,
        limits=LimitsConfig(**limits),
        authenticator=auth,
    )
    server.accounts = lambda: (1, 2)
    client = await aiohttp_client(server.build_app())
    return Rig(client, server, pipeline, status, metrics)


@pytest.fixture
async def rig(aiohttp_client, metrics) -> Rig:
    return await make_rig(aiohttp_client, metrics)


async def test_events_are_framed_with_ids_and_names(rig: Rig):
    """retry, a welcome carrying the head's id, then filtered events as id/event/data."""
    await rig.publish(1)
    stream = await rig.open("accounts=1&events=message.*")
    welcome = await stream.next()
    assert (welcome.event, welcome.id) == ("welcome", "ep1:1")
    assert welcome.json["accounts"] == [1, 2]
    assert welcome.json["seq"] == 1
    assert stream.retry == 2000
    await rig.publish(2, account=2)
    await rig.publish(3, name="conversation.updated")
    await rig.publish(4)
    event = await stream.next()
    assert (event.event, event.id) == ("message.created", "ep1:4")
    assert event.json["data"] == {"n": 4, "pad": ""}
    assert event.json["type"] == "event"
    rig.status.set("polling", "cable down", 5.0)
    status = await stream.next()
    assert (status.event, status.id, status.json["upstream"]) == ("status", None, "polling")
    assert rig.metrics.clients_connected.labels(transport="sse")._value.get() == 1


async def test_last_event_id_resumes_without_losing_or_doubling(rig: Rig):
    """A stream cut after some events resumes from the browser's Last-Event-ID: exactly the
    missed matching events, then live ones."""
    for n in range(1, 4):
        await rig.publish(n)
    first = await rig.open()
    await first.next()  # welcome; the first three were before the connection
    await rig.publish(4)
    seen = await first.next()
    assert seen.json["data"]["n"] == 4
    first.response.close()
    await eventually(lambda: len(rig.server.clients) == 0)
    for n in range(5, 9):
        await rig.publish(n, conv=42 if n % 2 else 7)
    again = await rig.open("conversations=1:42", **{"Last-Event-ID": first.last_event_id})
    welcome = await again.next()
    assert welcome.id is None  # the replay moves the id on
    assert welcome.json["replayed"] == 2
    await rig.publish(9)
    got = [(await again.next()).json["data"]["n"] for _ in range(3)]
    assert got == [5, 7, 9]
    assert again.last_event_id == "ep1:9"


@pytest.mark.parametrize(
    ("last_id", "reason"), [("other:3", "unknown_epoch"), ("ep1:0", None), ("junk", "bad")]
)
async def test_unusable_last_event_id(rig: Rig, last_id: str, reason: str | None):
    """Another epoch resets (with the head's id, so the next reconnect resumes from there);
    a malformed id is a 400."""
    for n in range(1, 4):
        await rig.publish(n)
    if reason == "bad":
        response = await rig.client.get("/events", headers={"Last-Event-ID": last_id})
        assert response.status == 400
        assert (await response.json())["code"] == "bad_request"
        return
    stream = await rig.open(**{"Last-Event-ID": last_id})
    await stream.next()
    if reason is None:
        assert [(await stream.next()).json["seq"] for _ in range(3)] == [1, 2, 3]
        return
    reset = await stream.next()
    assert (reset.event, reset.id, reset.json["reason"]) == ("reset", "ep1:3", reason)


async def test_keepalive_comments(aiohttp_client, metrics):
    """A silent stream gets comments, which proxies see as traffic."""
    rig = await make_rig(aiohttp_client, metrics, sse_keepalive=0.05)
    stream = await rig.open()
    await stream.next()
    await rig.publish(1)
    await stream.next()
    async with asyncio.timeout(5):
        while len(stream.comments) < 2:
            line = await stream.response.content.readline()
            if line.startswith(b":"):
                stream.comments.append(line.decode())
    assert stream.comments[-2:] == [": keep-alive\n", ": keep-alive\n"]


async def test_credentials_and_scope(aiohttp_client, metrics):
    """No or a wrong token is a 401; a filter beyond the scope a 403; the token in the
    query (EventSource cannot send headers) works and confines the stream."""
    auth = Authenticator(
        ("token",),
        (ClientToken("feed", bytes.fromhex(token_digest(TOKEN)), Scope.make(accounts=[2])),),
    )
    rig = await make_rig(aiohttp_client, metrics, auth=auth)
    for query in ("", "token=wrong"):
        response = await rig.client.get(f"/events?{query}")
        assert response.status == 401
        assert (await response.json())["code"] == "unauthorized"
    response = await rig.client.get(f"/events?token={TOKEN}&accounts=1")
    assert response.status == 403
    stream = await rig.open(f"token={TOKEN}")
    welcome = (await stream.next()).json
    assert (welcome["accounts"], welcome["client"]) == ([2], {"name": "feed", "commands": []})
    await rig.publish(1, account=1)
    await rig.publish(2, account=2)
    assert (await stream.next()).json["account_id"] == 2


async def test_cross_origin_browser_is_refused(rig: Rig):
    response = await rig.client.get("/events", headers={"Origin": "https://evil.example"})
    assert response.status == 403


async def test_stalled_reader_is_dropped_with_bounded_memory(aiohttp_client, metrics):
    """A stream whose reader stopped is dropped once its queue passes the buffer limit;
    meanwhile what it holds stays below the limit (plus the socket's own buffers)."""
    rig = await make_rig(aiohttp_client, metrics, buffer=64 * 1024)
    stream = await rig.open()
    await stream.next()
    peak = 0
    for n in range(2000):
        await rig.publish(n, size=2000)
        peak = max(peak, rig.server.buffered_bytes())
        if rig.metrics.client_disconnects.labels(reason="slow_consumer")._value.get():
            break
    await asyncio.wait_for(rig.server.wait_no_clients(), 5)
    assert peak <= 64 * 1024 + 4 * 1024 * 1024  # the queue limit plus a kernel-sized buffer
    slow = rig.metrics.client_disconnects.labels(reason="slow_consumer")._value.get()
    assert slow == 1
    assert await stream.ended()


async def test_shutdown_ends_the_stream(rig: Rig):
    stream = await rig.open()
    await stream.next()
    rig.server.close_clients()
    assert await stream.ended()
    await rig.server.wait_no_clients()
    assert rig.metrics.client_disconnects.labels(reason="shutdown")._value.get() == 1
