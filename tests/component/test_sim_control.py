"""The simulator's /_sim control API, generated traffic and ``serve`` lifecycle."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bridge.simulator import SimConfig, Simulator, build_app, serve


Client = TestClient[Any, Any]
IDENT = json.dumps(
    {"channel": "RoomChannel", "pubsub_token": "sim-pubsub-token", "account_id": 1, "user_id": 1},
    separators=(",", ":"),
)


@pytest.fixture
async def control(aiohttp_client: AiohttpClient) -> tuple[Client, Simulator]:
    """A simulator with fast pings and paused traffic."""
    app, sim = build_app(SimConfig(port=0, rate=0, ping_interval=0.05, conversations_per_account=2))
    return await aiohttp_client(app), sim


async def post(client: Client, path: str, body: Any = None, status: int = 200) -> Any:
    """POST JSON to a control endpoint and return the JSON answer."""
    response = await client.post(path, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def subscribed_socket(client: Client) -> aiohttp.ClientWebSocketResponse:
    """A socket subscribed as the admin for account 1, confirm consumed."""
    ws = await client.ws_connect("/cable", protocols=("actioncable-v1-json",))
    await ws.send_str(json.dumps({"command": "subscribe", "identifier": IDENT}))
    await next_event(ws, lambda f: f.get("type") == "confirm_subscription")
    return ws


async def next_event(ws: aiohttp.ClientWebSocketResponse, match: Any, timeout: float = 3.0) -> Any:
    """The first JSON frame matching ``match``."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if match(frame):
                return frame


def is_event(name: str) -> Any:
    """Matches broadcast frames of event ``name``."""
    return lambda f: isinstance(f.get("message"), dict) and f["message"]["event"] == name


async def test_state_reports_counts_and_switches(control: tuple[Client, Simulator]) -> None:
    """GET /_sim/state has counts, switches, connections and confirmed subscriptions."""
    client, _ = control
    await subscribed_socket(client)
    state = await (await client.get("/_sim/state")).json()
    assert state["accounts"] == [1, 2]
    assert state["conversations"] == 4
    assert state["connections"] == 1
    assert state["subscriptions"]["confirmed"] == 1
    assert state["faults"]["rest_mode"] == "ok"


async def test_faults_endpoint_toggles_and_validates(control: tuple[Client, Simulator]) -> None:
    """POST /_sim/faults flips switches and rejects unknown modes or wrong types."""
    client, sim = control
    result = await post(client, "/_sim/faults", {"drop_broadcasts": True, "rest_mode": "error429"})
    assert result["drop_broadcasts"] is True
    assert sim.faults.rest_mode == "error429"
    await post(client, "/_sim/faults", {"rest_mode": "explode"}, status=400)
    await post(client, "/_sim/faults", {"stop_pings": "yes"}, status=400)
    await post(client, "/_sim/faults", {"rest_fault_ratio": 2}, status=400)
    assert (await post(client, "/_sim/faults", {"rest_fault_ratio": 1}))["rest_fault_ratio"] == 1.0


async def test_messages_endpoint_and_ground_truth(control: tuple[Client, Simulator]) -> None:
    """POST /_sim/messages returns the push payload (new conversation when none given)."""
    client, _ = control
    ws = await subscribed_socket(client)
    payload = await post(
        client,
        "/_sim/messages",
        {"account_id": 1, "content": "brand new", "message_type": "incoming"},
    )
    assert payload["conversation_id"] == 3
    assert payload["message_type"] == 0
    frame = await next_event(ws, is_event("message.created"))
    assert frame["message"]["data"] == payload
    truth = await (await client.get("/_sim/messages?account_id=1&conversation_id=3")).json()
    assert truth["conversations"] == [
        {
            "account_id": 1,
            "id": 3,
            "status": "open",
            "assignee_id": None,
            "updated_at": truth["conversations"][0]["updated_at"],
            "last_activity_at": payload["created_at"],
            "message_ids": [payload["id"]],
        }
    ]
    await post(
        client, "/_sim/messages", {"account_id": 1, "conversation_id": 99, "content": "x"}, 404
    )
    await post(client, "/_sim/messages", {"content": "x"}, status=400)


async def test_status_assignee_and_typing_endpoints(control: tuple[Client, Simulator]) -> None:
    """Status, assignee and typing endpoints emit their Chatwoot events."""
    client, _ = control
    ws = await subscribed_socket(client)
    conv = await post(client, "/_sim/conversations/1/1/status", {"status": "resolved"})
    assert conv["status"] == "resolved"
    assert (await next_event(ws, is_event("conversation.status_changed")))["message"]["data"][
        "id"
    ] == 1
    await post(client, "/_sim/conversations/1/1/assignee", {"assignee_id": 2})
    changed = await next_event(ws, is_event("assignee.changed"))
    assert changed["message"]["data"]["meta"]["assignee"]["id"] == 2
    await post(
        client, "/_sim/typing", {"account_id": 1, "conversation_id": 1, "typing_status": "on"}
    )
    typing = await next_event(ws, is_event("conversation.typing_on"))
    assert typing["message"]["data"]["user"]["type"] == "contact"
    await post(client, "/_sim/conversations/1/1/status", {"status": "closed"}, status=400)


async def test_message_status_endpoint(control: tuple[Client, Simulator]) -> None:
    """POST /_sim/messages/{id}/status emits message.updated with previous_changes."""
    client, sim = control
    ws = await subscribed_socket(client)
    created = sim.create_message(1, 1, content="out", message_type="outgoing")
    await post(client, f"/_sim/messages/{created['id']}/status", {"status": "read"})
    frame = await next_event(ws, is_event("message.updated"))
    assert frame["message"]["data"]["previous_changes"]["status"] == ["sent", "read"]


async def test_drop_and_disconnect_endpoints(control: tuple[Client, Simulator]) -> None:
    """/_sim/drop cuts sockets; /_sim/disconnect sends the disconnect frame first."""
    client, _ = control
    ws = await subscribed_socket(client)
    assert await post(client, "/_sim/disconnect", {"reason": "remote", "reconnect": False}) == {
        "disconnected": 1
    }
    frame = await next_event(ws, lambda f: f.get("type") == "disconnect")
    assert frame == {"type": "disconnect", "reason": "remote", "reconnect": False}
    ws2 = await subscribed_socket(client)
    assert (await post(client, "/_sim/drop", {"abrupt": False}))["dropped"] >= 1
    async with asyncio.timeout(3):
        while (msg := await ws2.receive()).type is WSMsgType.TEXT:
            pass
    assert msg.type is WSMsgType.CLOSE


async def test_traffic_rate_generates_events(control: tuple[Client, Simulator]) -> None:
    """Setting a rate starts generated traffic; rate 0 pauses it again."""
    client, sim = control
    ws = await subscribed_socket(client)
    assert await post(client, "/_sim/traffic", {"rate": 200}) == {"rate": 200.0}
    await next_event(ws, is_event("message.created"))
    await post(client, "/_sim/traffic", {"rate": 0})
    assert sim.traffic.rate == 0
    await post(client, "/_sim/traffic", {"rate": -1}, status=400)


async def test_burst_endpoint(control: tuple[Client, Simulator]) -> None:
    """POST /_sim/burst creates the requested number of messages."""
    client, sim = control
    result = await post(client, "/_sim/burst", {"messages": 50, "conversations": 6})
    assert len(result["message_ids"]) == 50
    assert len(sim.world.conversations) == 6


async def test_request_log_endpoints(control: tuple[Client, Simulator]) -> None:
    """GET /_sim/requests lists REST calls and upgrades (not control calls); DELETE clears it."""
    client, _ = control
    await client.get("/api/v1/profile", headers={"api_access_token": "sim-api-token"})
    await subscribed_socket(client)
    log = (await (await client.get("/_sim/requests")).json())["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/api/v1/profile", 200),
        ("GET", "/cable", 101),
    ]
    await client.delete("/_sim/requests")
    assert (await (await client.get("/_sim/requests")).json())["requests"] == []


async def test_serve_reports_real_port_and_stops() -> None:
    """serve() on port 0 reports the bound URL, answers, and returns once stop is set."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(SimConfig(port=0, rate=5, ping_interval=0.05), stop, on_ready=ready.set_result)
    )
    async with asyncio.timeout(5):
        waiters: list[asyncio.Future[Any]] = [ready, task]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # surfaces a start-up failure
        url = ready.result()
        assert not url.endswith(":0")
        async with aiohttp.ClientSession() as session, session.get(url + "/_sim/state") as response:
            assert response.status == 200
        stop.set()
        await task
    assert task.done()
    assert task.exception() is None
