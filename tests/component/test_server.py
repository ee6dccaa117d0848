"""The local endpoint over real loopback: /ws protocol, resume, health, metrics."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from bridge.config import ServerConfig
from bridge.eventlog import MemoryEventLog
from bridge.events import AccountId, ConversationId, Event
from bridge.hub import Hub
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.ports import LocalEventStore
from bridge.server import LocalServer
from bridge.status import StatusBoard


@dataclass
class Rig:
    client: TestClient
    server: LocalServer
    pipeline: Pipeline
    status: StatusBoard
    metrics: Metrics
    clock: list[float]

    async def publish(
        self, n: int, *, account: int = 1, conv: int = 42, name: str = "message.created"
    ) -> None:
        await self.pipeline.publish(
            Event(
                name,
                AccountId(account),
                ConversationId(conv),
                "cable",
                1000.0,
                1000.0 + n,
                {"n": n},
                f"{name}:{account}:{n}",
            )
        )


@pytest.fixture
async def rig(aiohttp_client, metrics: Metrics) -> Rig:
    clock = [2000.0]
    store = LocalEventStore(MemoryEventLog("ep1", 5))
    status = StatusBoard(clock[0])
    hub = Hub()
    pipeline = Pipeline(store, hub, metrics, clock=lambda: clock[0])
    pipeline.accounts = frozenset({1, 2})
    server = LocalServer(
        ServerConfig(port=0), hub, store, status, metrics, poll_window=30.0, clock=lambda: clock[0]
    )
    client = await aiohttp_client(server.build_app())
    return Rig(client, server, pipeline, status, metrics, clock)


async def recv(ws) -> dict:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_welcome_first_then_filtered_live_events(rig: Rig):
    """welcome comes first; only matching events follow, each exactly once."""
    await rig.publish(1)
    ws = await rig.client.ws_connect("/ws?accounts=1&events=message.*")
    welcome = await recv(ws)
    assert welcome == {
        "type": "welcome",
        "protocol": 1,
        "epoch": "ep1",
        "seq": 1,
        "upstream": "connecting",
        "replayed": 0,
        "accounts": [],
        "client": {
            "name": "anonymous",
            "commands": ["conversations.read", "history", "messages.create", "typing"],
        },
    }
    await rig.publish(2, account=2)
    await rig.publish(3, name="conversation.updated")
    await rig.publish(4)
    frame = await recv(ws)
    assert frame["type"] == "event"
    assert (frame["seq"], frame["event"], frame["account_id"], frame["conversation_id"]) == (
        4,
        "message.created",
        1,
        42,
    )
    assert frame["data"] == {"n": 4}
    assert frame["occurred_at"] == "1970-01-01T00:16:40.000Z"
    assert frame["source"] == "cable"
    await ws.close()


async def test_subscribe_frame_replaces_the_filter(rig: Rig):
    """subscribe answers subscribed and applies the new filter from then on."""
    ws = await rig.client.ws_connect("/ws?conversations=1")
    await recv(ws)
    await ws.send_str(json.dumps({"type": "subscribe", "ref": "r1", "conversations": ["1:42"]}))
    assert await recv(ws) == {
        "type": "subscribed",
        "ref": "r1",
        "filter": {"accounts": None, "conversations": ["1:42"], "events": None},
    }
    await rig.publish(1, account=2)
    await rig.publish(2, account=1)
    assert (await recv(ws))["seq"] == 2
    await ws.close()


async def test_ping_pong_and_error_frames_keep_the_connection(rig: Rig):
    """Bad client frames get error frames; the connection carries on."""
    ws = await rig.client.ws_connect("/ws")
    await recv(ws)
    await ws.send_str("not json")
    assert (await recv(ws))["code"] == "bad_request"
    await ws.send_str('{"type":"dance","ref":"d"}')
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("unsupported", "d")
    await ws.send_bytes(b"\x00\x01")
    assert (await recv(ws))["code"] == "bad_request"
    await ws.send_str('{"type":"subscribe","ref":"s","accounts":["x"]}')
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("bad_request", "s")
    await ws.send_str('{"type":"ping"}')
    assert await recv(ws) == {"type": "pong"}
    assert rig.metrics.client_errors.labels(code="bad_request")._value.get() == 3


async def test_bad_query_closes_with_an_error(rig: Rig):
    """A malformed filter is explained in an error frame, then the socket closes with 4000."""
    ws = await rig.client.ws_connect("/ws?accounts=abc")
    error = await recv(ws)
    assert error["type"] == "error"
    assert error["code"] == "bad_request"
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 4000


async def test_resume_replays_exactly_the_missed_matching_events(rig: Rig):
    """since=<epoch>:<seq> replays the missed events that match, then goes live."""
    for n in range(1, 4):
        await rig.publish(n, account=1 if n != 2 else 2)
    ws = await rig.client.ws_connect("/ws?accounts=1&since=ep1:1")
    welcome = await recv(ws)
    assert (welcome["seq"], welcome["replayed"]) == (3, 1)
    assert (await recv(ws))["seq"] == 3
    await rig.publish(4)
    assert (await recv(ws))["seq"] == 4
    await ws.close()


@pytest.mark.parametrize(("since", "reason"), [("other:1", "unknown_epoch"), ("ep1:1", "too_old")])
async def test_resume_outside_the_window_resets(rig: Rig, since: str, reason: str):
    """Another epoch or a point older than the buffer gives reset after welcome."""
    for n in range(1, 9):  # buffer holds 5: seqs 4..8
        await rig.publish(n)
    ws = await rig.client.ws_connect(f"/ws?since={since}")
    welcome = await recv(ws)
    assert welcome["replayed"] == 0
    assert await recv(ws) == {"type": "reset", "reason": reason, "epoch": "ep1", "seq": 8}
    await rig.publish(9)
    assert (await recv(ws))["seq"] == 9


async def test_events_published_during_replay_are_neither_lost_nor_doubled(rig: Rig):
    """A burst racing the replay arrives once, in order."""
    for n in range(1, 5):
        await rig.publish(n)
    ws_task = asyncio.ensure_future(rig.client.ws_connect("/ws?since=ep1:0"))
    for n in range(5, 9):
        await rig.publish(n)
        await asyncio.sleep(0)
    ws = await ws_task
    frames = []
    welcome = await recv(ws)
    seqs: list[int] = []
    while not seqs or seqs[-1] < 8:
        frames.append(await recv(ws))
        seqs.append(frames[-1]["seq"])
    assert welcome["replayed"] + welcome["seq"] >= 4
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == 8
    assert seqs[0] > 8 - 5 - 1  # nothing older than the buffer


async def test_status_frames_follow_the_upstream_state(rig: Rig):
    """Every state change reaches connected clients as a status frame."""
    ws = await rig.client.ws_connect("/ws?accounts=2")
    await recv(ws)
    rig.status.set("live", "subscribed", 2001.0)
    assert await recv(ws) == {
        "type": "status",
        "upstream": "live",
        "since": "1970-01-01T00:33:21.000Z",
        "reason": "subscribed",
    }
    rig.status.set("live", "again", 2002.0)
    rig.status.set("down", "401", 2003.0)
    assert (await recv(ws))["upstream"] == "down"


async def test_health_and_readiness(rig: Rig):
    """/healthz always 200; /readyz 200 only when live or polling successfully."""
    assert (await rig.client.get("/healthz")).status == 200
    response = await rig.client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert (body["ready"], body["upstream"]) == (False, "connecting")
    rig.status.set("live", "subscribed", 2000.0)
    assert (await rig.client.get("/readyz")).status == 200
    rig.status.set("polling", "cable lost", 2000.0)
    assert (await rig.client.get("/readyz")).status == 503
    rig.status.last_poll_ok = 1990.0
    assert (await rig.client.get("/readyz")).status == 200
    rig.clock[0] = 2100.0
    assert (await rig.client.get("/readyz")).status == 503


async def test_metrics_endpoint_serves_the_registry(rig: Rig):
    """/metrics is Prometheus text with the bridge's metrics."""
    ws = await rig.client.ws_connect("/ws")
    await recv(ws)
    await rig.publish(1)
    await recv(ws)
    response = await rig.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'chatwoot_bridge_events_published_total{event="message.created"} 1.0' in text
    assert 'chatwoot_bridge_clients_connected{transport="ws"} 1.0' in text
    assert "chatwoot_bridge_fanout_latency_seconds_bucket" in text


async def test_close_clients_sends_1001(rig: Rig):
    """Shutdown closes clients with 1001 and the server sees them go."""
    ws = await rig.client.ws_connect("/ws")
    await recv(ws)
    rig.server.close_clients()
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 1001
    await asyncio.wait_for(rig.server.wait_no_clients(), 5)
    assert rig.metrics.client_disconnects.labels(reason="shutdown")._value.get() == 1


async def test_oversized_client_frame_closes_with_1009(aiohttp_client, metrics):
    """A client frame above the limit closes the connection with 1009."""
    store = LocalEventStore(MemoryEventLog("ep", 5))
    status = StatusBoard(0.0)
    server = LocalServer(
        ServerConfig(port=0, client_max_frame_bytes=1024),
        Hub(),
        store,
        status,
        metrics,
        poll_window=1,
    )
    client = await aiohttp_client(server.build_app())
    ws = await client.ws_connect("/ws")
    await recv(ws)
    await ws.send_str("x" * 5000)
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_client_vanishing_during_replay_is_harmless(rig: Rig):
    """A client that drops mid-replay is cleaned up; the server keeps serving others."""
    for n in range(1, 6):
        await rig.pipeline.publish(
            Event(
                "message.created",
                AccountId(1),
                ConversationId(1),
                "cable",
                None,
                0.0,
                {"blob": "x" * 200_000, "n": n},
            )
        )
    ws = await rig.client.ws_connect("/ws?since=ep1:0")
    await recv(ws)
    ws._response.connection.transport.abort()  # no close frame, mid-replay
    await asyncio.wait_for(rig.server.wait_no_clients(), 5)
    async with rig.client.ws_connect("/ws") as other:
        assert (await recv(other))["type"] == "welcome"


class HangingCommands:
    """Answers each request once released; records how each answer ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.ended: list[str] = []

    async def handle(self, identity, request) -> dict:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        self.ended.append("answered")
        return {}


TYPING = json.dumps({"type": "typing", "ref": 1, "account_id": 1, "conversation_id": 1})


async def test_a_session_ends_only_once_its_requests_in_flight_have(rig: Rig):
    """A client gone while a request is being answered: its session waits for the answer
    (the request's task is the session's), then ends."""
    commands = HangingCommands()
    rig.server.commands = commands  # type: ignore[assignment]
    # Served like the daemon serves: aiohttp does not cancel a handler whose client went.
    runner = web.AppRunner(rig.server.build_app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"http://{host}:{port}/ws")
            await recv(ws)
            await ws.send_str(TYPING)
            await asyncio.wait_for(commands.started.wait(), 5)
            await ws.close()
            await asyncio.sleep(0.2)
            assert len(rig.server.clients) == 1
            commands.release.set()
            await asyncio.wait_for(rig.server.wait_no_clients(), 5)
            assert commands.ended == ["answered"]
    finally:
        await runner.cleanup()


async def test_a_cancelled_session_cancels_its_requests_in_flight(rig: Rig):
    """A handler cancelled by aiohttp (the test server cancels those whose client went):
    the session's tasks are cancelled and waited for; the client is accounted for."""
    commands = HangingCommands()
    rig.server.commands = commands  # type: ignore[assignment]
    ws = await rig.client.ws_connect("/ws")
    await recv(ws)
    await ws.send_str(TYPING)
    await asyncio.wait_for(commands.started.wait(), 5)
    await ws.close()
    await asyncio.wait_for(rig.server.wait_no_clients(), 5)
    assert commands.ended == ["cancelled"]
