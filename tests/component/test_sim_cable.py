"""The simulator's ActionCable server over real loopback sockets (chatwoot.md §1, §2.2, §6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bridge.simulator import SimConfig, Simulator, build_app


PROTOCOLS = ("actioncable-v1-json", "actioncable-unsupported")
ADMIN_TOKEN = "sim-pubsub-token"
# A window long enough for many 0.05 s pings: "nothing arrived" is then meaningful.
SILENCE = 0.4
Frame = dict[str, Any]


def identifier(
    token: str = ADMIN_TOKEN, account_id: int | None = 1, user_id: int | None = 1
) -> str:
    """The dashboard's identifier string (key order of BaseActionCableConnector.js)."""
    params: dict[str, Any] = {"channel": "RoomChannel", "pubsub_token": token}
    if account_id is not None:
        params["account_id"] = account_id
    if user_id is not None:
        params["user_id"] = user_id
    return json.dumps(params, separators=(",", ":"))


@pytest.fixture
async def sim_client(aiohttp_client: AiohttpClient) -> tuple[TestClient[Any, Any], Simulator]:
    """A simulator with fast pings and no generated traffic."""
    app, sim = build_app(SimConfig(port=0, rate=0, ping_interval=0.05, conversations_per_account=2))
    return await aiohttp_client(app), sim


async def connect(client: TestClient[Any, Any]) -> aiohttp.ClientWebSocketResponse:
    """Open /cable and consume the welcome frame."""
    ws = await client.ws_connect("/cable", protocols=PROTOCOLS)
    assert json.loads(await ws.receive_str()) == {"type": "welcome"}
    return ws


async def send(ws: aiohttp.ClientWebSocketResponse, command: str, ident: str, **extra: Any) -> None:
    """Send one ActionCable command."""
    await ws.send_str(json.dumps({"command": command, "identifier": ident, **extra}))


async def next_frame(
    ws: aiohttp.ClientWebSocketResponse, match: Callable[[Frame], bool], timeout: float = 3.0
) -> Frame:
    """The first frame satisfying ``match`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            frame: Frame = json.loads(msg.data)
            if match(frame):
                return frame


async def frames_during(
    ws: aiohttp.ClientWebSocketResponse, window: float = SILENCE
) -> list[Frame]:
    """Every text frame received during a bounded window."""
    out: list[Frame] = []
    try:
        async with asyncio.timeout(window):
            while True:
                msg = await ws.receive()
                if msg.type is not WSMsgType.TEXT:
                    break
                out.append(json.loads(msg.data))
    except TimeoutError:
        pass
    return out


def not_ping(frame: Frame) -> bool:
    """Anything but a ping."""
    return frame.get("type") != "ping"


def event_name(frame: Frame) -> str | None:
    """The event of a broadcast frame (pings carry an int ``message``)."""
    message = frame.get("message")
    return message.get("event") if isinstance(message, dict) else None


def event(name: str) -> Callable[[Frame], bool]:
    """Matches a broadcast of event ``name``."""
    return lambda frame: event_name(frame) == name


async def subscribed(client: TestClient[Any, Any], ident: str) -> aiohttp.ClientWebSocketResponse:
    """A socket with a confirmed subscription and its presence frame consumed."""
    ws = await connect(client)
    await send(ws, "subscribe", ident)
    assert await next_frame(ws, not_ping) == {"identifier": ident, "type": "confirm_subscription"}
    await next_frame(ws, event("presence.update"))
    return ws


async def test_welcome_protocol_and_pings(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """The server picks actioncable-v1-json, welcomes, then pings with an int timestamp."""
    client, _ = sim_client
    ws = await connect(client)
    assert ws.protocol == "actioncable-v1-json"
    ping = await next_frame(ws, lambda f: True)
    assert ping["type"] == "ping"
    assert isinstance(ping["message"], int)


async def test_plain_get_is_rails_404(sim_client: tuple[TestClient[Any, Any], Simulator]) -> None:
    """A non-upgrade GET /cable answers 404 "Page not found" like Rails."""
    client, _ = sim_client
    response = await client.get("/cable")
    assert response.status == 404
    assert await response.text() == "Page not found"


async def test_any_origin_is_accepted(sim_client: tuple[TestClient[Any, Any], Simulator]) -> None:
    """Forgery protection is off: a foreign Origin still gets a welcome."""
    client, _ = sim_client
    ws = await client.ws_connect(
        "/cable", protocols=PROTOCOLS, headers={"Origin": "https://evil.example"}
    )
    assert json.loads(await ws.receive_str()) == {"type": "welcome"}


async def test_confirm_then_presence(sim_client: tuple[TestClient[Any, Any], Simulator]) -> None:
    """A valid subscribe is confirmed, then presence.update arrives on the token stream."""
    client, sim = sim_client
    ident = identifier()
    ws = await connect(client)
    await send(ws, "subscribe", ident)
    assert await next_frame(ws, not_ping) == {"identifier": ident, "type": "confirm_subscription"}
    presence = await next_frame(ws, not_ping)
    assert presence["identifier"] == ident
    assert presence["message"]["event"] == "presence.update"
    assert presence["message"]["data"]["users"] == {"1": "online"}
    assert sim.state()["subscriptions"] == {"confirmed": 1, "failed": 0}


@pytest.mark.parametrize(
    "ident",
    [
        identifier(token="wrong-token"),
        identifier(user_id=None),  # agent token looked up as a contact token
        identifier(token="sim-agent-pubsub-token", account_id=2, user_id=2),  # not a member
        identifier(account_id=None),
    ],
    ids=["bad-token", "no-user-id", "non-member-account", "no-account"],
)
async def test_failed_subscription_is_silent(
    sim_client: tuple[TestClient[Any, Any], Simulator], ident: str
) -> None:
    """A failing subscribe gets neither confirm nor reject; the socket keeps pinging."""
    client, sim = sim_client
    ws = await connect(client)
    await send(ws, "subscribe", ident)
    frames = await frames_during(ws)
    assert frames, "pings should keep flowing"
    assert all(f["type"] == "ping" for f in frames), frames
    assert sim.state()["subscriptions"] == {"confirmed": 0, "failed": 1}
    # The failed subscription stays stored, so a retry on the same socket is ignored too.
    await send(ws, "subscribe", ident)
    assert all(f["type"] == "ping" for f in await frames_during(ws, 0.2))


async def test_duplicate_subscribe_is_ignored(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """Subscribing twice with the same identifier yields a single confirm."""
    client, _ = sim_client
    ident = identifier()
    ws = await subscribed(client, ident)
    await send(ws, "subscribe", ident)
    assert [f for f in await frames_during(ws) if not_ping(f)] == []


async def test_identifier_is_matched_byte_for_byte(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """A re-spaced identifier is a different subscription: both get confirmed separately."""
    client, _ = sim_client
    ident = identifier()
    spaced = json.dumps(json.loads(ident))
    ws = await subscribed(client, ident)
    await send(ws, "subscribe", spaced)
    confirm = await next_frame(ws, not_ping)
    assert confirm == {"identifier": spaced, "type": "confirm_subscription"}


async def test_broadcast_frame_shape(sim_client: tuple[TestClient[Any, Any], Simulator]) -> None:
    """A new message arrives as {identifier, message:{event, data}} with account_id."""
    client, sim = sim_client
    ident = identifier()
    ws = await subscribed(client, ident)
    payload = sim.create_message(1, 1, content="hello")
    frame = await next_frame(ws, event("message.created"))
    assert set(frame) == {"identifier", "message"}
    assert frame["identifier"] == ident
    assert frame["message"]["data"] == payload
    assert frame["message"]["data"]["account_id"] == 1


async def test_other_accounts_events_arrive_on_token_stream(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """Subscribed for account 1, an admin of both still receives account 2's events."""
    client, sim = sim_client
    ws = await subscribed(client, identifier(account_id=1))
    sim.create_message(2, 1, content="other account")
    frame = await next_frame(ws, event("message.created"))
    assert frame["message"]["data"]["account_id"] == 2


async def test_account_stream_is_per_subscription(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """contact.updated goes to account_<id>: only the account-2 subscription receives it."""
    client, sim = sim_client
    ident1, ident2 = identifier(account_id=1), identifier(account_id=2)
    ws = await subscribed(client, ident1)
    await send(ws, "subscribe", ident2)
    await next_frame(ws, lambda f: f.get("type") == "confirm_subscription")
    sim.create_message(2, 1, content="ping from account 2")
    frame = await next_frame(ws, event("contact.updated"))
    assert frame["identifier"] == ident2
    # contact.updated is sent once, on account_2 only, so no copy for the account-1 identifier.
    copies = [f for f in await frames_during(ws, 0.3) if event_name(f) == "contact.updated"]
    assert copies == []


async def test_contact_subscription(sim_client: tuple[TestClient[Any, Any], Simulator]) -> None:
    """A widget token subscribes with only pubsub_token; it never sees private notes."""
    client, sim = sim_client
    conv = sim.world.conversation(1, 1)
    token = sim.world.contact_inbox(conv.contact_inbox_id).pubsub_token
    ident = json.dumps({"channel": "RoomChannel", "pubsub_token": token})
    ws = await subscribed(client, ident)
    sim.create_message(1, 1, content="secret", message_type="outgoing", private=True)
    public = sim.create_message(1, 1, content="public", message_type="outgoing")
    frame = await next_frame(ws, event("message.created"))
    assert frame["message"]["data"]["id"] == public["id"]


async def test_update_presence_rebroadcasts(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """The update_presence action answers only with a fresh presence.update broadcast."""
    client, _ = sim_client
    ident = identifier()
    ws = await subscribed(client, ident)
    await send(ws, "message", ident, data=json.dumps({"action": "update_presence"}))
    frame = await next_frame(ws, not_ping)
    assert frame["message"]["event"] == "presence.update"


async def test_unsubscribe_stops_delivery(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """After unsubscribe no broadcast arrives for that identifier."""
    client, sim = sim_client
    ident = identifier()
    ws = await subscribed(client, ident)
    await send(ws, "unsubscribe", ident)
    # Commands run in order: once this second subscription is confirmed, the first is gone.
    spaced = json.dumps(json.loads(ident))
    await send(ws, "subscribe", spaced)
    await next_frame(ws, lambda f: f.get("type") == "confirm_subscription")
    sim.create_message(1, 1, content="after unsubscribe")
    frame = await next_frame(ws, event("message.created"))
    assert frame["identifier"] == spaced
    assert [f for f in await frames_during(ws, 0.2) if f.get("identifier") == ident] == []


async def test_stop_pings_silences_the_socket(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """stop_pings: the socket stays open but nothing at all arrives, until switched off."""
    client, sim = sim_client
    ws = await subscribed(client, identifier())
    sim.set_faults(stop_pings=True)
    sim.create_message(1, 1, content="lost in the silence")
    assert await frames_during(ws) == []
    assert not ws.closed
    sim.set_faults(stop_pings=False)
    assert (await next_frame(ws, lambda f: True))["type"] == "ping"


async def test_drop_broadcasts_keeps_pings(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """drop_broadcasts: pings continue, broadcasts vanish, the message still exists."""
    client, sim = sim_client
    ws = await subscribed(client, identifier())
    sim.set_faults(drop_broadcasts=True)
    payload = sim.create_message(1, 1, content="dropped")
    frames = await frames_during(ws)
    assert frames
    assert all(f["type"] == "ping" for f in frames)
    assert payload["id"] in sim.ground_truth(1, 1)["conversations"][0]["message_ids"]
    assert sim.state()["broadcasts"]["dropped"] >= 1


async def test_drop_connections_abruptly(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """An abrupt drop closes the client's socket without a close frame."""
    client, sim = sim_client
    ws = await connect(client)
    assert sim.drop_connections() == 1
    async with asyncio.timeout(3):
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSE)
    assert ws.close_code != 1000


async def test_drop_connections_with_close_frame(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """A polite drop sends close 1001 (going away)."""
    client, sim = sim_client
    ws = await connect(client)
    sim.drop_connections(abrupt=False)
    async with asyncio.timeout(3):
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1001


async def test_refused_connections_get_503(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """While refusing, upgrades fail with 503; switching back accepts them again."""
    client, sim = sim_client
    sim.drop_connections(refuse_for=60)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/cable", protocols=PROTOCOLS)
    assert info.value.status == 503
    sim.faults.refuse_until = 0.0
    await connect(client)


async def test_disconnect_frame_then_close(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """disconnect sends Rails' disconnect frame, then closes with 1000."""
    client, sim = sim_client
    ws = await connect(client)
    sim.server_restart()
    frame = await next_frame(ws, not_ping)
    assert frame == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
    msg = await ws.receive()
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1000


async def test_commands_that_fail_are_ignored(
    sim_client: tuple[TestClient[Any, Any], Simulator],
) -> None:
    """Junk, unknown commands and unknown channels get no reply and keep the socket open."""
    client, _ = sim_client
    ws = await connect(client)
    await ws.send_str("not json")
    await send(ws, "dance", identifier())
    await send(ws, "subscribe", json.dumps({"channel": "OtherChannel"}))
    await send(ws, "unsubscribe", identifier())
    frames = await frames_during(ws, 0.2)
    assert frames
    assert all(f["type"] == "ping" for f in frames)
