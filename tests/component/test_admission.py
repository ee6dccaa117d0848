"""Admission to /ws over real loopback: origins, credentials, scopes, limits."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import aiohttp
import jwt
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from bridge import clientproto as cp
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


SECRET = "a-signing-key-of-at-least-32-characters!"
STATIC = "static-client-token-abc"


@dataclass
class Rig:
    client: TestClient
    server: LocalServer
    pipeline: Pipeline
    metrics: Metrics
    http: TestServer


async def make_rig(aiohttp_server, aiohttp_client, metrics, **limits) -> Rig:
    store = LocalEventStore(MemoryEventLog("ep", 20_000))
    hub = Hub()
    pipeline = Pipeline(store, hub, metrics)
    auth = Authenticator(
        ("token", "jwt"),
        (
            ClientToken(
                "dash",
                bytes.fromhex(token_digest(STATIC)),
                Scope.make(accounts=[1], events=["message.*"]),
            ),
        ),
        jwt_secret=SECRET,
        jwt_max_ttl=600,
    )
    server = LocalServer(
        ServerConfig(port=0),
        hub,
        store,
        StatusBoard(0.0),
        metrics,
        poll_window=30,
        limits=LimitsConfig(**limits),
        authenticator=auth,
        allowed_origins=("https://app.example.com", "https://*.example.org"),
    )
    # like the daemon (AppRunner(access_log=None)): tokens in query strings stay out of logs
    http = await aiohttp_server(server.build_app(), access_log=None)
    assert http.runner is not None
    assert http.runner.server is not None
    server.watch_connections(http.runner.server)
    client = await aiohttp_client(http)
    return Rig(client, server, pipeline, metrics, http)


@pytest.fixture
async def rig(aiohttp_server, aiohttp_client, metrics) -> Rig:
    return await make_rig(aiohttp_server, aiohttp_client, metrics)


def mint(exp_in: float = 300, **claims) -> str:
    return jwt.encode({"exp": int(time.time() + exp_in), **claims}, SECRET, algorithm="HS256")


async def closed(ws) -> int | None:
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code


async def frames_until_close(ws) -> list[dict]:
    out = []
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                return out
            out.append(json.loads(msg.data))


async def test_cross_origin_browser_handshake_is_refused_before_the_upgrade(rig: Rig):
    """A foreign Origin gets 403 and no WebSocket."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await rig.client.ws_connect(
            "/ws?token=" + STATIC, headers={"Origin": "https://evil.example.net"}
        )
    assert info.value.status == 403
    assert rig.metrics.handshakes_refused.labels(reason="origin")._value.get() == 1


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://eu.example.org", None])
async def test_good_origin_with_good_token_works(rig: Rig, origin):
    """Allowed origins (exact and wildcard) and non-browser clients get in with a valid token."""
    headers = {"Origin": origin} if origin else {}
    ws = await rig.client.ws_connect(
        "/ws", headers={**headers, "Authorization": f"Bearer {STATIC}"}
    )
    welcome = json.loads((await ws.receive()).data)
    assert welcome["type"] == "welcome"
    await ws.close()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing"),
        ("token=not-a-token", "invalid"),
        (
            "token=" + jwt.encode({"exp": int(time.time()) - 100}, SECRET, algorithm="HS256"),
            "expired",
        ),
        (
            "token="
            + jwt.encode(
                {"exp": int(time.time()) + 60},
                "forged-key-that-is-32-characters-xx",
                algorithm="HS256",
            ),
            "invalid",
        ),
    ],
)
async def test_missing_invalid_expired_and_forged_tokens_close_with_4001(rig: Rig, query, reason):
    """An error frame says why, then close 4001; the failure is counted."""
    ws = await rig.client.ws_connect("/ws?" + query)
    frames = await frames_until_close(ws)
    assert frames[0]["type"] == "error"
    assert frames[0]["code"] == "unauthorized"
    assert ws.close_code == 4001
    assert rig.metrics.auth_failures.labels(reason=reason)._value.get() == 1


async def test_filter_outside_the_scope_is_forbidden(rig: Rig):
    """A token scoped to account 1 asking for account 2 gets forbidden and 4003."""
    ws = await rig.client.ws_connect(f"/ws?token={mint(accounts=[1])}&accounts=2")
    frames = await frames_until_close(ws)
    assert frames[0]["code"] == "forbidden"
    assert ws.close_code == 4003


async def test_subscribe_cannot_widen_the_scope(rig: Rig):
    """A subscribe frame outside the scope is refused with forbidden; the filter stays."""
    ws = await rig.client.ws_connect(f"/ws?token={mint(accounts=[1])}")
    await ws.receive()
    await ws.send_str(json.dumps({"type": "subscribe", "ref": "w", "accounts": [1, 2]}))
    error = json.loads((await ws.receive()).data)
    assert (error["type"], error["code"], error["ref"]) == ("error", "forbidden", "w")
    await ws.send_str(json.dumps({"type": "subscribe", "ref": "n", "conversations": ["1:5"]}))
    assert json.loads((await ws.receive()).data)["type"] == "subscribed"
    await ws.close()


async def test_scoped_clients_never_see_an_out_of_scope_event(rig: Rig):
    """Thousands of mixed events: each scoped client gets exactly its scope, nothing else."""
    rng = random.Random(5)
    scopes = {
        "account-1": {"accounts": [1]},
        "inbox-3": {"accounts": [1, 2], "inboxes": [3]},
        "two-conversations": {"conversations": ["1:1", "2:2"]},
        "messages-only": {"events": ["message.*"]},
    }
    sockets = {}
    for name, claims in scopes.items():
        sockets[name] = await rig.client.ws_connect(f"/ws?token={mint(sub=name, **claims)}")
        await sockets[name].receive()
    names = [
        "message.created",
        "conversation.updated",
        "conversation.typing_on",
        "presence.update",
        "contact.updated",
    ]
    events = []
    for n in range(3000):
        name = rng.choice(names)
        conv = None if name in ("presence.update", "contact.updated") else rng.randint(1, 3)
        event = Event(
            name,
            AccountId(rng.randint(1, 2)),
            ConversationId(conv) if conv else None,
            "cable",
            None,
            0.0,
            {"n": n},
            inbox_id=None if conv is None else rng.choice((3, 4)),
        )
        events.append(event)
        await rig.pipeline.publish(event)
    await rig.pipeline.publish(
        Event(
            "message.created",
            AccountId(1),
            ConversationId(1),
            "cable",
            None,
            0.0,
            {"n": "end"},
            inbox_id=3,
        )
    )
    for name, claims in scopes.items():
        ws = sockets[name]
        got = []
        async with asyncio.timeout(10):
            while True:
                frame = json.loads((await ws.receive()).data)
                if frame["data"]["n"] == "end":
                    break
                got.append(frame["data"]["n"])
        scope = rig.server.authenticator.authenticate(mint(**claims), time.time()).scope
        expected = [e.data["n"] for e in events if scope.allows(e)]
        assert got == expected, name
        assert 0 < len(got) < len(events)
        for n in got:
            assert scope.allows(events[n])
        await ws.close()


async def test_flooding_client_is_closed_with_4029(aiohttp_server, aiohttp_client, metrics):
    """Above the frame rate (burst twice the rate) the client is closed with 4029."""
    rig = await make_rig(aiohttp_server, aiohttp_client, metrics, frames_per_second=5.0)
    ws = await rig.client.ws_connect(f"/ws?token={STATIC}")
    await ws.receive()
    for _ in range(40):
        await ws.send_str('{"type":"ping"}')
    assert await closed(ws) == 4029
    await asyncio.wait_for(_until(lambda: not rig.server.clients), 5)
    assert metrics.client_disconnects.labels(reason="rate_limited")._value.get() == 1


async def test_subscribe_churn_is_rate_limited(aiohttp_server, aiohttp_client, metrics):
    """Filter changes past the burst get rate_limited error frames; the client stays."""
    rig = await make_rig(aiohttp_server, aiohttp_client, metrics, subscribes_per_minute=6.0)
    ws = await rig.client.ws_connect(f"/ws?token={STATIC}")
    await ws.receive()
    answers = []
    for i in range(12):
        await ws.send_str(
            json.dumps({"type": "subscribe", "ref": i, "events": ["message.created"]})
        )
        answers.append(json.loads((await ws.receive()).data))
    kinds = [a["type"] if a["type"] == "subscribed" else a["code"] for a in answers]
    assert kinds[:10] == ["subscribed"] * 10
    assert kinds[10:] == ["rate_limited", "rate_limited"]
    await ws.send_str('{"type":"ping"}')
    assert json.loads((await ws.receive()).data) == {"type": "pong"}


async def test_total_and_per_address_limits(aiohttp_server, aiohttp_client, metrics):
    """Past max_clients_per_ip: 429; past max_clients: 503; both before the upgrade."""
    rig = await make_rig(
        aiohttp_server, aiohttp_client, metrics, max_clients=3, max_clients_per_ip=2
    )
    first = [await rig.client.ws_connect(f"/ws?token={STATIC}") for _ in range(2)]
    for ws in first:
        await ws.receive()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await rig.client.ws_connect(f"/ws?token={STATIC}")
    assert info.value.status == 429
    rig.server.limits = LimitsConfig(max_clients=2, max_clients_per_ip=10)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await rig.client.ws_connect(f"/ws?token={STATIC}")
    assert info.value.status == 503
    await first[0].close()
    await asyncio.wait_for(_until(lambda: len(rig.server.clients) == 1), 5)
    ws = await rig.client.ws_connect(f"/ws?token={STATIC}")
    assert json.loads((await ws.receive()).data)["type"] == "welcome"


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_slow_handshake_is_cut(aiohttp_server, aiohttp_client, metrics):
    """A connection that sends no complete request within the timeout is cut (slow-loris)."""
    rig = await make_rig(aiohttp_server, aiohttp_client, metrics, handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection(rig.http.host, rig.http.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert metrics.handshakes_refused.labels(reason="timeout")._value.get() == 1
    writer.close()


async def test_jwt_expiry_closes_the_connection_with_4001(rig: Rig):
    """When the token expires the client is told and closed; it reconnects with a new one."""
    ws = await rig.client.ws_connect(f"/ws?token={mint(exp_in=1)}")
    await ws.receive()
    frames = await frames_until_close(ws)
    assert frames[-1] == {
        "type": "error",
        "code": "unauthorized",
        "message": "token expired",
        "ref": None,
    }
    assert ws.close_code == 4001


async def test_idle_client_is_detected_with_pings(aiohttp_server, aiohttp_client, metrics):
    """A client that answers no WebSocket ping is dropped as idle."""
    rig = await make_rig(aiohttp_server, aiohttp_client, metrics, ping_interval=0.2)
    ws = await rig.client.ws_connect(f"/ws?token={STATIC}", autoping=False)
    await ws.receive()
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.PING:
                break
    await asyncio.wait_for(_until(lambda: not rig.server.clients), 5)
    assert metrics.client_disconnects.labels(reason="idle")._value.get() == 1


def test_error_frame_shape():
    """Sanity: the frames used above are protocol frames."""
    assert json.loads(cp.error_frame("forbidden", "x")) == {
        "type": "error",
        "code": "forbidden",
        "message": "x",
        "ref": None,
    }
