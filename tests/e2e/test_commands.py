"""History and commands through the bridge (issue 6), against the simulator: what a
frontend without Chatwoot credentials can read and do, and what it cannot."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from tests.helpers import LocalClient, running_bridge

from .conftest import RunningSim


_refs = itertools.count(1)


async def ask(client: LocalClient, kind: str, **fields: Any) -> dict[str, Any]:
    """Send a request frame; return its ``result`` or ``error`` frame."""
    ref = f"r{next(_refs)}"
    mark = client.mark()
    await client.ws.send(json.dumps({"type": kind, "ref": ref, **fields}))
    return await client.wait_for(
        lambda f: f.get("type") in ("result", "error") and f.get("ref") == ref, after=mark
    )


def clients_env(*clients: dict[str, Any]) -> dict[str, str]:
    """Static-token clients (token ``<name>-token``) with the given scopes."""
    table = [
        {
            "token_sha256": hashlib.sha256(f"{c['name']}-token".encode()).hexdigest(),
            **c,
        }
        for c in clients
    ]
    return {"BRIDGE_AUTH": "token", "BRIDGE_CLIENTS": json.dumps(table)}


def message_ids(simulator: RunningSim, account_id: int, conversation_id: int) -> list[int]:
    return list(simulator.sim.world.conversation(account_id, conversation_id).message_ids)


def contents(simulator: RunningSim, account_id: int, conversation_id: int) -> list[str | None]:
    world = simulator.sim.world
    return [world.messages[i].content for i in message_ids(simulator, account_id, conversation_id)]


def counter(bridge: Any, metric: str, **labels: str) -> float:
    value = bridge.metrics.registry.get_sample_value(f"chatwoot_bridge_{metric}", labels)
    return value or 0.0


async def test_history_reads_through_rest_then_serves_from_the_cache(simulator: RunningSim):
    """The conversation list has unread counts; messages page back with ``before`` to the
    conversation's start; a page REST has vouched for is then a cache hit."""
    sim = simulator.sim
    for i in range(25):
        sim.create_message(1, 1, content=f"old {i}", message_type="incoming")
    truth = message_ids(simulator, 1, 1)
    async with (
        running_bridge(simulator.bridge_env()) as (bridge, url),
        LocalClient.connect(url) as client,
    ):
        assert client.welcome is not None
        assert client.welcome["accounts"] == [1, 2]
        listing = await ask(client, "conversations", account_id=1, status="all")
        conversations = listing["data"]["conversations"]
        assert {c["id"] for c in conversations} == {
            c.display_id for c in sim.world.conversations_in(1)
        }
        open_only = await ask(client, "conversations", account_id=1)
        assert {c["id"] for c in open_only["data"]["conversations"]} == {
            c.display_id for c in sim.world.conversations_in(1) if c.status == "open"
        }
        first = next(c for c in conversations if c["id"] == 1)
        assert first["unread_count"] > 0
        assert "channel" in first  # the push shape, whatever the source
        assert "pubsub_token" not in json.dumps(listing)

        latest = await ask(client, "messages", account_id=1, conversation_id=1)
        assert latest["data"]["source"] == "rest"
        ids = [m["id"] for m in latest["data"]["messages"]]
        assert ids == truth[-20:]
        older = await ask(client, "messages", account_id=1, conversation_id=1, before=ids[0])
        assert [m["id"] for m in older["data"]["messages"]] == truth[:-20]

        hits = counter(bridge, "cache_hits_total")
        again = await ask(client, "messages", account_id=1, conversation_id=1)
        assert again["data"]["source"] == "cache"
        assert again["data"]["messages"] == latest["data"]["messages"]
        again_older = await ask(client, "messages", account_id=1, conversation_id=1, before=ids[0])
        assert again_older["data"]["source"] == "cache"
        assert counter(bridge, "cache_hits_total") == hits + 2

        # A message the cable brings is newer than what REST vouched for: read through.
        mark = client.mark()
        new = sim.create_message(1, 1, content="new", message_type="incoming")["id"]
        await client.wait_for(lambda f: f.get("data", {}).get("id") == new, after=mark)
        fresh = await ask(client, "messages", account_id=1, conversation_id=1)
        assert fresh["data"]["source"] == "rest"
        assert fresh["data"]["messages"][-1]["id"] == new
        assert counter(bridge, "client_requests_total", kind="messages", outcome="ok") == 5


async def test_send_with_echo_id_comes_back_once(simulator: RunningSim):
    """The result names the created message and its echo_id; the one message.created that
    follows carries the same echo_id, so a page can replace its pending bubble."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env()) as (_, url),
        LocalClient.connect(url, "events=message.*") as client,
    ):
        await client.wait_status("live")
        sent = await ask(
            client, "send", account_id=1, conversation_id=2, content="hello", echo_id="e-1"
        )
        assert sent["type"] == "result", sent
        message = sent["data"]["message"]
        assert (message["content"], message["echo_id"], message["message_type"]) == (
            "hello",
            "e-1",
            1,
        )
        event = await client.wait_for(
            lambda f: f.get("event") == "message.created" and f["data"]["id"] == message["id"]
        )
        assert event["data"]["echo_id"] == "e-1"
        # Something after it, so that a duplicate would have arrived by then.
        later = sim.create_message(1, 2, content="after", message_type="incoming")["id"]
        await client.wait_for(lambda f: f.get("data", {}).get("id") == later)
        created = [f["data"]["id"] for f in client.events("message.created")]
        assert created.count(message["id"]) == 1
        assert contents(simulator, 1, 2)[-2:] == ["hello", "after"]


async def test_typing_and_read_reach_chatwoot(simulator: RunningSim):
    """typing and read are written to Chatwoot; read answers with the conversation."""
    sim = simulator.sim
    sim.create_message(1, 3, content="unread", message_type="incoming")
    async with (
        running_bridge(simulator.bridge_env()) as (_, url),
        LocalClient.connect(url) as client,
    ):
        sim.clear_request_log()
        typing = await ask(client, "typing", account_id=1, conversation_id=3, on=True)
        assert typing == {"type": "result", "ref": typing["ref"], "ok": True, "data": {}}
        read = await ask(client, "read", account_id=1, conversation_id=3)
        assert read["data"]["conversation"]["id"] == 3
        assert read["data"]["conversation"]["unread_count"] == 0
        paths = [(r["method"], r["path"]) for r in sim.request_log()]
        assert ("POST", "/api/v1/accounts/1/conversations/3/toggle_typing_status") in paths
        assert ("POST", "/api/v1/accounts/1/conversations/3/update_last_seen") in paths


async def test_scopes_bound_history_and_commands(simulator: RunningSim):
    """A reader cannot send; an inbox-scoped client sees and pages only its inbox's
    conversations; accounts outside the scope are refused."""
    sim = simulator.sim
    other_inbox = sim.create_conversation(1, inbox_id=2)["id"]
    env = clients_env(
        {"name": "reader", "accounts": [1], "commands": ["history"]},
        {"name": "api-desk", "accounts": [1], "inboxes": [1], "commands": ["history", "typing"]},
        {"name": "one-chat", "conversations": ["1:2"], "commands": ["history"]},
    )
    async with (
        running_bridge({**simulator.bridge_env(), **env}) as (_, url),
        LocalClient.connect(url, "token=reader-token") as reader,
        LocalClient.connect(url, "token=api-desk-token") as desk,
        LocalClient.connect(url, "token=one-chat-token") as one,
    ):
        assert reader.welcome is not None
        assert reader.welcome["accounts"] == [1]
        assert reader.welcome["client"] == {"name": "reader", "commands": ["history"]}
        refused = await ask(reader, "send", account_id=1, conversation_id=1, content="no")
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        assert "messages.create" in refused["message"]
        outside = await ask(reader, "conversations", account_id=2)
        assert (outside["type"], outside["code"]) == ("error", "forbidden")

        listing = await ask(desk, "conversations", account_id=1)
        inboxes = {c["inbox_id"] for c in listing["data"]["conversations"]}
        assert inboxes == {1}
        assert other_inbox not in {c["id"] for c in listing["data"]["conversations"]}
        for kind in ("messages", "typing"):
            hidden = await ask(desk, kind, account_id=1, conversation_id=other_inbox)
            assert (hidden["type"], hidden["code"]) == ("error", "forbidden"), hidden
        assert "no" not in contents(simulator, 1, 1)

        only = await ask(one, "conversations", account_id=1, status="all")
        assert [c["id"] for c in only["data"]["conversations"]] == [2]
        assert (await ask(one, "messages", account_id=1, conversation_id=2))["type"] == "result"
        other = await ask(one, "messages", account_id=1, conversation_id=3)
        assert (other["type"], other["code"]) == ("error", "forbidden")


async def test_chatwoot_errors_and_limits_become_clear_error_frames(simulator: RunningSim):
    """A failing Chatwoot is an upstream_error naming what happened; bad frames are
    bad_request; requests beyond the in-flight bound are rate_limited, not queued."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env()) as (bridge, url),
        LocalClient.connect(url) as client,
    ):
        await client.wait_status("live")
        bad = await ask(client, "messages", account_id=1)
        assert (bad["code"], bad["message"]) == (
            "bad_request",
            "conversation_id: a positive integer is required",
        )
        sim.set_faults(rest_mode="error500")
        failed = await ask(client, "send", account_id=1, conversation_id=1, content="x")
        assert (failed["code"], failed["message"]) == (
            "upstream_error",
            "Chatwoot answered 500 (server_error)",
        )
        sim.set_faults(rest_mode="hang")
        refs = [f"h{i}" for i in range(9)]
        mark = client.mark()
        for ref in refs:
            frame = {"type": "typing", "ref": ref, "account_id": 1, "conversation_id": 1}
            await client.ws.send(json.dumps(frame))
        limited = await client.wait_for(lambda f: f.get("ref") == "h8", after=mark)
        assert (limited["type"], limited["code"]) == ("error", "rate_limited")
        mark = client.mark()
        sim.set_faults(rest_mode="ok")
        for ref in refs[:8]:
            answer = await client.wait_for(lambda f, r=ref: f.get("ref") == r, after=mark)
            assert answer["type"] == "result"
        assert counter(bridge, "client_requests_total", kind="typing", outcome="ok") == 8
        assert counter(bridge, "client_requests_total", kind="send", outcome="upstream_error") == 1


async def test_request_rate_limit(simulator: RunningSim):
    """Past the burst of 20 a client's requests are refused until the bucket refills."""
    async with (
        running_bridge({**simulator.bridge_env(), "BRIDGE_COMMANDS_PER_MINUTE": "1"}) as (_, url),
        LocalClient.connect(url) as client,
    ):
        answers = [await ask(client, "typing", account_id=1, conversation_id=1) for _ in range(21)]
        assert [a["type"] for a in answers] == ["result"] * 20 + ["error"]
        assert answers[-1]["code"] == "rate_limited"
