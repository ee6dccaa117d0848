"""The whole daemon against a real Rails ActionCable server (tests/peer/actioncable_app)."""

from __future__ import annotations

import pytest

from tests.helpers import LocalClient, running_bridge

from .rails_peer import RailsPeer


def bridge_env(peer: RailsPeer, **extra: str) -> dict[str, str]:
    return {"CHATWOOT_URL": peer.url, "CHATWOOT_API_TOKEN": peer.api_token, **extra}


def message(n: int, account: int = 1, conversation: int = 42) -> dict:
    return {
        "id": 1000 + n,
        "content": f"hello {n}",
        "account_id": account,
        "conversation_id": conversation,
        "message_type": 0,
        "created_at": 1795586400 + n,
        "updated_at": "2026-11-25T06:00:00.000Z",
        "conversation": {"contact_inbox": {"source_id": "x", "pubsub_token": "LEAK"}},
    }


async def test_broadcasts_reach_filtered_local_clients(rails_peer: RailsPeer):
    """Token-stream and account-stream broadcasts arrive; other accounts' events are filtered."""
    async with (
        running_bridge(bridge_env(rails_peer, CHATWOOT_ACCOUNT_IDS="1")) as (bridge, url),
        LocalClient.connect(url, "events=message.*") as messages,
        LocalClient.connect(url) as everything,
    ):
        await everything.wait_status("live")
        await rails_peer.wait_confirmed(1)
        await rails_peer.broadcast_event("message.created", message(1))
        # account 2 is the user's too, but not bridged: must be dropped (chatwoot.md §2.2)
        await rails_peer.broadcast_event("message.created", message(2, account=2))
        await rails_peer.broadcast(
            "account_1", {"event": "contact.updated", "data": {"account_id": 1, "id": 17}}
        )
        frame = await messages.wait_for(lambda f: f.get("type") == "event")
        assert (frame["event"], frame["account_id"], frame["conversation_id"]) == (
            "message.created",
            1,
            42,
        )
        assert frame["data"]["content"] == "hello 1"
        assert "pubsub_token" not in str(frame["data"])
        assert frame["source"] == "cable"
        await everything.wait_for(lambda f: f.get("event") == "contact.updated")
        assert [f["data"]["id"] for f in everything.events("message.created")] == [1001]
        assert bridge.metrics.events_dropped.labels(reason="not_bridged")._value.get() >= 1


async def test_server_side_disconnect_and_restart_are_survived(rails_peer: RailsPeer):
    """ActionCable.server.restart (disconnect frame) and a killed puma both lead back to live."""
    async with (
        running_bridge(bridge_env(rails_peer)) as (bridge, url),
        LocalClient.connect(url, "events=message.*") as client,
    ):
        await client.wait_status("live")
        stats = await rails_peer.wait_confirmed(2)
        at = client.mark()
        await rails_peer.restart_cable()
        await client.wait_status("polling", after=at)
        await client.wait_status("live", after=at)
        await rails_peer.broadcast_event("message.created", message(1))
        await client.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == 1001)

        at = client.mark()
        await rails_peer.kill()
        await client.wait_status("polling", after=at)
        await rails_peer.start()
        await client.wait_status("live", after=at, timeout=15)
        await rails_peer.broadcast_event("message.created", message(2))
        await client.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == 1002)
        assert bridge.metrics.upstream_reconnects._value.get() >= 2
        assert stats["confirmations_total"] >= 2


async def test_rotated_pubsub_token_is_recovered_through_the_profile(rails_peer: RailsPeer):
    """A token that stopped working meets silence; the bridge re-reads the profile, new socket."""
    async with (
        running_bridge(bridge_env(rails_peer, CHATWOOT_ACCOUNT_IDS="1")) as (_, url),
        LocalClient.connect(url) as client,
    ):
        await client.wait_status("live")
        at = client.mark()
        # a password change rotates the token: the old one is met with silence (chatwoot.md §4.2)
        await rails_peer.kill()
        rails_peer.pubsub_token = "rotated-token-2"
        await rails_peer.start()
        await rails_peer.wait_for_log("Could not execute command", within=10)
        await client.wait_status("live", after=at, timeout=15)
        await rails_peer.broadcast_event("message.created", message(3))
        frame = await client.wait_for(lambda f: f.get("event") == "message.created")
        assert frame["data"]["id"] == 1003


async def test_wrong_api_token_fails_fast_with_a_clear_error(rails_peer: RailsPeer):
    """A 401 at startup is fatal and explains which token to use."""
    from bridge.errors import Unauthorized  # noqa: PLC0415

    with pytest.raises(Unauthorized, match="User access token"):
        async with running_bridge({"CHATWOOT_URL": rails_peer.url, "CHATWOOT_API_TOKEN": "wrong"}):
            pass
