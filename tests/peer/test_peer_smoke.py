"""Smoke tests proving the Rails peer speaks ActionCable exactly like Chatwoot's RoomChannel.

They use a bare ``websockets`` client, no bridge code, so a failure here is a peer problem.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from .rails_peer import SUBPROTOCOL, RailsPeer


pytestmark = pytest.mark.peer

Frame = dict[str, Any]


@asynccontextmanager
async def cable(
    peer: RailsPeer, origin: str | None = "http://chatwoot.example"
) -> AsyncIterator[ClientConnection]:
    """Open a socket to the peer's ``/cable`` offering the ActionCable subprotocol."""
    async with connect(
        peer.cable_url,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        origin=None if origin is None else Origin(origin),
        open_timeout=5,
    ) as ws:
        yield ws


async def recv_frame(ws: ClientConnection, within: float = 5.0) -> Frame:
    """Receive one JSON frame within ``within`` seconds."""
    async with asyncio.timeout(within):
        raw = await ws.recv()
    frame: Frame = json.loads(raw)
    return frame


async def recv_until(
    ws: ClientConnection, predicate: Callable[[Frame], bool], within: float = 5.0
) -> tuple[Frame, list[Frame]]:
    """Receive until a frame matches; return it and the frames skipped before it."""
    skipped: list[Frame] = []
    async with asyncio.timeout(within):
        while True:
            frame: Frame = json.loads(await ws.recv())
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)


def is_ping(frame: Frame) -> bool:
    """ActionCable heartbeat frame."""
    return frame.get("type") == "ping"


def is_presence(frame: Frame) -> bool:
    """A presence.update data frame (RoomChannel broadcasts one on every subscribe)."""
    message = frame.get("message")
    return isinstance(message, dict) and message.get("event") == "presence.update"


def is_data(frame: Frame) -> bool:
    """Any frame except pings and presence.update (the ones a test is waiting for)."""
    return not is_ping(frame) and not is_presence(frame)


async def frames_during(
    ws: ClientConnection, seconds: float, keep: Callable[[Frame], bool]
) -> list[Frame]:
    """Collect the frames matching ``keep`` for ``seconds`` (a bounded window of silence)."""
    frames: list[Frame] = []
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame: Frame = json.loads(await ws.recv())
                if keep(frame):
                    frames.append(frame)
    return frames


async def subscribe(ws: ClientConnection, identifier: str) -> None:
    """Send an ActionCable subscribe command."""
    await ws.send(json.dumps({"command": "subscribe", "identifier": identifier}))


async def perform(ws: ClientConnection, identifier: str, action: str) -> None:
    """Send an ActionCable message command calling a channel action."""
    data = json.dumps({"action": action})
    await ws.send(json.dumps({"command": "message", "identifier": identifier, "data": data}))


async def welcome_and_subscribe(ws: ClientConnection, identifier: str) -> None:
    """Consume the welcome, subscribe and wait for the confirmation.

    The presence.update that RoomChannel broadcasts while subscribing can arrive BEFORE the
    confirmation (the confirm waits for both stream registrations, the broadcast does not),
    after it, or not at all; only pings and presence frames may precede the confirm.
    """
    assert await recv_frame(ws) == {"type": "welcome"}
    await subscribe(ws, identifier)
    confirm, skipped = await recv_until(ws, is_data)
    assert confirm == {"identifier": identifier, "type": "confirm_subscription"}
    assert all(is_ping(f) or is_presence(f) for f in skipped), skipped


async def test_subprotocol_negotiated_and_welcome_first(rails_peer: RailsPeer) -> None:
    """The server picks actioncable-v1-json, accepts any Origin and sends welcome first."""
    async with cable(rails_peer, origin="https://evil.example") as ws:
        assert ws.subprotocol == SUBPROTOCOL
        assert await recv_frame(ws) == {"type": "welcome"}
    async with cable(rails_peer, origin=None) as ws:
        assert await recv_frame(ws) == {"type": "welcome"}


async def test_plain_http_to_cable_is_404(rails_peer: RailsPeer) -> None:
    """A non-WebSocket request to /cable gets 404 and the Rails 'Failed to upgrade' log line."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{rails_peer.url}/cable") as response,
    ):
        assert response.status == 404
        assert await response.text() == "Page not found"
    await rails_peer.wait_for_log("Failed to upgrade to WebSocket")


async def test_ping_arrives_with_unix_time(rails_peer: RailsPeer) -> None:
    """A ping frame with an int unix timestamp arrives within the 3 s beat (bounded to 5 s)."""
    async with cable(rails_peer) as ws:
        assert await recv_frame(ws) == {"type": "welcome"}
        ping, skipped = await recv_until(ws, is_ping, within=5.0)
        assert skipped == []
        assert isinstance(ping["message"], int)
        assert abs(ping["message"] - time.time()) < 5


async def test_good_subscribe_is_confirmed(rails_peer: RailsPeer) -> None:
    """A valid (pubsub_token, user_id, account_id) subscribe gets confirm_subscription."""
    identifier = rails_peer.identifier()
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        stats = await rails_peer.wait_confirmed(1)
        assert stats["connections"] == 1
        assert stats["details"][0]["confirmed"] == [identifier]


async def test_duplicate_subscribe_is_ignored(rails_peer: RailsPeer) -> None:
    """A second subscribe with the same identifier on the same socket gets no reply at all."""
    identifier = rails_peer.identifier()
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await subscribe(ws, identifier)
        assert await frames_during(ws, 1.0, keep=is_data) == []
        stats = await rails_peer.connections()
        assert stats["subscriptions"] == 1
        assert stats["confirmations_total"] == 1


async def test_bad_subscribes_are_silent(rails_peer: RailsPeer) -> None:
    """Bad token, foreign account or missing user_id: no confirm, no reject, only a log line."""
    bad = [
        rails_peer.identifier(pubsub_token="wrong-token"),
        rails_peer.identifier(account_id=99),
        json.dumps({"channel": "RoomChannel", "pubsub_token": rails_peer.pubsub_token}),
    ]
    async with cable(rails_peer) as ws:
        assert await recv_frame(ws) == {"type": "welcome"}
        for identifier in bad:
            await subscribe(ws, identifier)
        await rails_peer.wait_for(lambda s: s["failed_subscribes_total"] == len(bad))
        await rails_peer.wait_for_log("Could not execute command", count=len(bad))
        # Rails keeps the failed subscription in the map, so a retry on this socket is a no-op.
        await subscribe(ws, bad[0])
        assert await frames_during(ws, 2.0, keep=lambda f: not is_ping(f)) == []
    log = rails_peer.log_text()
    assert "ActiveRecord::RecordNotFound - Couldn't find User" in log
    assert "Couldn't find Account with 'id'=99" in log
    assert "Couldn't find ContactInbox" in log
    stats = await rails_peer.connections()
    assert stats["failed_subscribes_total"] == len(bad)
    assert stats["confirmations_total"] == 0


async def test_broadcasts_arrive_with_identifier(rails_peer: RailsPeer) -> None:
    """Broadcasts to the pubsub token and to account_1 both arrive wrapped with the identifier."""
    identifier = rails_peer.identifier(account_id=1)
    to_token = {"event": "message.created", "data": {"id": 7, "account_id": 2}}
    to_account = {"event": "contact.updated", "data": {"id": 3, "account_id": 1}}
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await rails_peer.broadcast(rails_peer.pubsub_token, to_token)
        await rails_peer.broadcast("account_1", to_account)
        received: list[Frame] = []
        while len(received) < 2:
            frame, _ = await recv_until(ws, is_data)
            received.append(frame)
    expected = [{"identifier": identifier, "message": m} for m in (to_token, to_account)]
    # The worker pool may reorder two broadcasts to one socket, like real ActionCable.
    assert sorted(received, key=json.dumps) == sorted(expected, key=json.dumps)


async def test_update_presence_rebroadcasts_presence(rails_peer: RailsPeer) -> None:
    """Each update_presence action broadcasts presence.update to the user's token stream."""
    identifier = rails_peer.identifier(account_id=2)
    expected = {
        "identifier": identifier,
        "message": {
            "event": "presence.update",
            "data": {"account_id": 2, "users": {"1": "online"}, "contacts": {}},
        },
    }
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await perform(ws, identifier, "update_presence")
        await perform(ws, identifier, "update_presence")
        # The subscribe's own presence frame may or may not be delivered (see
        # welcome_and_subscribe), so two frames prove at least one came from update_presence.
        for _ in range(2):
            frame, _skipped = await recv_until(ws, is_presence)
            assert frame == expected
    await rails_peer.wait_for(lambda s: s["presence_updates_total"] == 2)
    assert rails_peer.log_text().count("RoomChannel#update_presence") == 2


async def test_restart_sends_server_restart_disconnect(rails_peer: RailsPeer) -> None:
    """ActionCable.server.restart sends disconnect server_restart reconnect:true, then closes."""
    identifier = rails_peer.identifier()
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await rails_peer.restart_cable()
        frame, _ = await recv_until(ws, is_data)
        assert frame == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
        with pytest.raises(ConnectionClosed):
            await recv_frame(ws)
    await rails_peer.wait_connections(0)
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)


async def test_profile_200_and_401(rails_peer: RailsPeer) -> None:
    """GET /api/v1/profile returns Chatwoot's user JSON for the token and 401 otherwise."""
    status, body = await rails_peer.profile()
    assert status == 200
    assert body["id"] == rails_peer.user_id
    assert body["pubsub_token"] == rails_peer.pubsub_token
    assert body["account_id"] == rails_peer.account_ids[0]
    assert [a["id"] for a in body["accounts"]] == list(rails_peer.account_ids)
    assert {a["status"] for a in body["accounts"]} == {"active"}
    assert body["type"] == "SuperAdmin"
    status, body = await rails_peer.profile(token="nope")
    assert (status, body) == (401, {"error": "Invalid Access Token"})
    status, body = await rails_peer.profile(token="")
    assert (status, body) == (401, {"error": "Invalid Access Token"})


async def test_stop_kill_and_start_on_same_port(rails_peer: RailsPeer) -> None:
    """stop() and kill() drop open sockets; start() comes back on the same port."""
    port = rails_peer.port
    identifier = rails_peer.identifier()
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await rails_peer.stop()
        with pytest.raises(ConnectionClosed):
            await recv_until(ws, lambda f: False)
    assert not rails_peer.running
    with pytest.raises(ConnectionRefusedError):
        await connect(rails_peer.cable_url, open_timeout=5)
    await rails_peer.start()
    assert rails_peer.port == port
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
        await rails_peer.kill()
        with pytest.raises(ConnectionClosed):
            await recv_until(ws, lambda f: False)
    await rails_peer.start()
    async with cable(rails_peer) as ws:
        await welcome_and_subscribe(ws, identifier)
    assert rails_peer.log_text().count("=== rails peer start") == 3
