"""The simulator's REST subset and REST fault modes over loopback (chatwoot.md §4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bridge.simulator import SimConfig, Simulator, build_app


ADMIN = {"api_access_token": "sim-api-token"}
AGENT = {"api_access_token": "sim-agent-token"}
BOT = {"api_access_token": "sim-bot-token"}
Client = TestClient[Any, Any]


@pytest.fixture
async def rest(aiohttp_client: AiohttpClient) -> tuple[Client, Simulator]:
    """A simulator with two seed conversations per account and no traffic."""
    app, sim = build_app(
        SimConfig(
            port=0, rate=0, ping_interval=0.05, conversations_per_account=2, request_log_size=5
        )
    )
    return await aiohttp_client(app), sim


async def get_json(
    client: Client, path: str, headers: dict[str, str] = ADMIN, status: int = 200
) -> Any:
    """GET ``path`` and return its JSON, checking the status."""
    response = await client.get(path, headers=headers)
    assert response.status == status, await response.text()
    return await response.json()


async def test_profile_fields(rest: tuple[Client, Simulator]) -> None:
    """The profile has pubsub_token, id, account_id and accounts with roles."""
    client, _ = rest
    profile = await get_json(client, "/api/v1/profile")
    assert profile["pubsub_token"] == "sim-pubsub-token"
    assert profile["id"] == 1
    assert profile["account_id"] == 1
    assert [(a["id"], a["role"]) for a in profile["accounts"]] == [
        (1, "administrator"),
        (2, "administrator"),
    ]
    assert profile["access_token"] == "sim-api-token"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"errors": ["You need to sign in or sign up before continuing."]}),
        ({"api_access_token": "nope"}, {"error": "Invalid Access Token"}),
        (BOT, {"error": "Access to this endpoint is not authorized for bots"}),
    ],
    ids=["missing", "invalid", "bot"],
)
async def test_profile_401s(
    rest: tuple[Client, Simulator], headers: dict[str, str], body: Any
) -> None:
    """Missing, invalid and AgentBot tokens get 401 on the profile."""
    client, _ = rest
    assert await get_json(client, "/api/v1/profile", headers, status=401) == body


async def test_account_membership(rest: tuple[Client, Simulator]) -> None:
    """A non-member account is 401, an unknown one 404."""
    client, _ = rest
    body = await get_json(client, "/api/v1/accounts/2/conversations", AGENT, status=401)
    assert body == {"error": "You are not authorized to access this account"}
    await get_json(client, "/api/v1/accounts/99/conversations", ADMIN, status=404)


async def test_conversation_list_and_meta(rest: tuple[Client, Simulator]) -> None:
    """The list is wrapped in data{meta,payload}; /meta is not wrapped; status=all widens it."""
    client, sim = rest
    sim.set_status(1, 1, "resolved")
    listing = await get_json(client, "/api/v1/accounts/1/conversations")
    assert set(listing) == {"data"}
    assert [c["id"] for c in listing["data"]["payload"]] == [2]
    assert listing["data"]["meta"]["all_count"] == 1
    everything = await get_json(client, "/api/v1/accounts/1/conversations?status=all")
    assert sorted(c["id"] for c in everything["data"]["payload"]) == [1, 2]
    meta = await get_json(client, "/api/v1/accounts/1/conversations/meta?status=all")
    assert meta == {
        "meta": {"mine_count": 0, "assigned_count": 0, "unassigned_count": 2, "all_count": 2}
    }
    item = everything["data"]["payload"][0]
    assert "contact_inbox" not in item
    assert item["meta"]["channel"] in ("Channel::Api", "Channel::WebWidget")
    assert isinstance(item["updated_at"], float)


async def test_pagination_and_updated_within(rest: tuple[Client, Simulator]) -> None:
    """Pages hold 25; updated_within returns every recent conversation in one response."""
    client, sim = rest
    for _ in range(30):
        sim.create_conversation(1)
    base = "/api/v1/accounts/1/conversations"
    page1 = await get_json(client, base)
    page2 = await get_json(client, base + "?page=2")
    assert (len(page1["data"]["payload"]), len(page2["data"]["payload"])) == (25, 7)
    recent = await get_json(client, base + "?updated_within=3600&page=2")
    assert len(recent["data"]["payload"]) == 32


async def test_agent_sees_only_its_inbox(rest: tuple[Client, Simulator]) -> None:
    """The agent lists inbox-1 conversations only and gets 401 on another inbox's."""
    client, sim = rest
    listing = await get_json(client, "/api/v1/accounts/1/conversations?status=all", AGENT)
    assert {c["inbox_id"] for c in listing["data"]["payload"]} == {1}
    hidden = sim.world.conversation(1, 2)
    assert hidden.inbox_id == 2
    await get_json(client, "/api/v1/accounts/1/conversations/2", AGENT, status=401)


async def test_show_conversation_is_bare(rest: tuple[Client, Simulator]) -> None:
    """GET .../conversations/{id} returns the object itself; an unknown id is 404."""
    client, _ = rest
    conversation = await get_json(client, "/api/v1/accounts/2/conversations/1")
    assert conversation["id"] == 1
    assert conversation["account_id"] == 2
    await get_json(client, "/api/v1/accounts/2/conversations/77", status=404)


async def test_messages_paging(rest: tuple[Client, Simulator]) -> None:
    """after pages by id, after+before includes after, meta carries ISO-or-null seen times."""
    client, sim = rest
    ids = [sim.create_message(1, 1, content=str(n))["id"] for n in range(130)]
    base = "/api/v1/accounts/1/conversations/1/messages"
    first = await get_json(client, f"{base}?after={ids[0]}")
    assert [m["id"] for m in first["payload"]] == ids[1:101]
    second = await get_json(client, f"{base}?after={ids[100]}")
    assert [m["id"] for m in second["payload"]] == ids[101:]
    window = await get_json(client, f"{base}?after={ids[5]}&before={ids[8]}")
    assert [m["id"] for m in window["payload"]] == ids[5:8]
    latest = await get_json(client, base)
    assert [m["id"] for m in latest["payload"]] == ids[-20:]
    assert latest["meta"]["agent_last_seen_at"] is None
    assert "updated_at" not in latest["payload"][0]


async def test_post_message_echo_and_shape(rest: tuple[Client, Simulator]) -> None:
    """POST messages defaults to outgoing, echoes echo_id once and bumps updated_at."""
    client, sim = rest
    before = sim.world.conversation(1, 1).updated_at
    response = await client.post(
        "/api/v1/accounts/1/conversations/1/messages",
        headers=ADMIN,
        json={"content": "hello", "echo_id": "tmp-42"},
    )
    assert response.status == 200
    created = await response.json()
    assert created["message_type"] == 1
    assert created["echo_id"] == "tmp-42"
    assert created["sender"]["id"] == 1
    assert sim.world.conversation(1, 1).updated_at > before
    later = await get_json(client, "/api/v1/accounts/1/conversations/1/messages")
    assert later["payload"][-1]["id"] == created["id"]
    assert "echo_id" not in later["payload"][-1]


async def test_bot_may_post_but_not_list(rest: tuple[Client, Simulator]) -> None:
    """An AgentBot token can create messages and toggle status, but not list conversations."""
    client, _ = rest
    response = await client.post(
        "/api/v1/accounts/1/conversations/1/messages", headers=BOT, data={"content": "beep"}
    )
    assert response.status == 200
    assert (await response.json())["sender"]["type"] == "agent_bot"
    await get_json(client, "/api/v1/accounts/1/conversations", BOT, status=401)


async def test_toggle_typing_and_last_seen(rest: tuple[Client, Simulator]) -> None:
    """Typing answers 200 with an empty body; update_last_seen does not bump updated_at."""
    client, sim = rest
    base = "/api/v1/accounts/1/conversations/1"
    response = await client.post(
        f"{base}/toggle_typing_status", headers=ADMIN, json={"typing_status": "on"}
    )
    assert response.status == 200
    assert await response.read() == b""
    before = sim.world.conversation(1, 1).updated_at
    response = await client.post(f"{base}/update_last_seen", headers=ADMIN)
    assert response.status == 200
    assert sim.world.conversation(1, 1).updated_at == before
    assert sim.world.conversation(1, 1).agent_last_seen_at is not None


async def test_toggle_status(rest: tuple[Client, Simulator]) -> None:
    """toggle_status sets a status, toggles without one, and rejects unknown statuses."""
    client, sim = rest
    base = "/api/v1/accounts/1/conversations/1/toggle_status"
    response = await client.post(base, headers=ADMIN, json={"status": "pending"})
    body = await response.json()
    assert body["payload"]["current_status"] == "pending"
    assert body["payload"]["conversation_id"] == 1
    response = await client.post(base, headers=ADMIN)
    assert (await response.json())["payload"]["current_status"] == "open"
    response = await client.post(base, headers=ADMIN, json={"status": "archived"})
    assert response.status == 422
    assert sim.world.conversation(1, 1).status == "open"


@pytest.mark.parametrize("mode", ["error500", "error429", "malformed", "wrong_types"])
async def test_rest_fault_modes(rest: tuple[Client, Simulator], mode: str) -> None:
    """Each REST fault mode answers with its failure; /_sim stays unaffected."""
    client, sim = rest
    sim.set_faults(rest_mode=mode)
    response = await client.get("/api/v1/accounts/1/conversations", headers=ADMIN)
    text = await response.text()
    if mode == "error500":
        assert response.status == 500
    elif mode == "error429":
        assert response.status == 429
        assert "Retry-After" not in response.headers
    elif mode == "malformed":
        assert response.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    else:
        assert response.status == 200
        assert not isinstance(json.loads(text)["data"], dict)
    assert (await client.get("/_sim/state")).status == 200


async def test_hang_until_switched_back(rest: tuple[Client, Simulator]) -> None:
    """hang never answers until the mode changes; then the request completes normally."""
    client, sim = rest
    sim.set_faults(rest_mode="hang")
    pending = asyncio.ensure_future(client.get("/api/v1/profile", headers=ADMIN))
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done
    sim.set_faults(rest_mode="ok")
    async with asyncio.timeout(3):
        response = await pending
    assert response.status == 200


async def test_fault_ratio_is_partial_and_seeded(rest: tuple[Client, Simulator]) -> None:
    """With rest_fault_ratio 0.5 some requests fail and some succeed."""
    client, sim = rest
    sim.set_faults(rest_mode="error500", rest_fault_ratio=0.5)
    statuses = [(await client.get("/api/v1/profile", headers=ADMIN)).status for _ in range(40)]
    assert {200, 500} == set(statuses)


async def test_request_log_is_bounded(rest: tuple[Client, Simulator]) -> None:
    """The log keeps the newest requests with method, path, query, status and time."""
    client, sim = rest
    for n in range(8):
        await client.get(f"/api/v1/accounts/1/conversations?page={n}", headers=ADMIN)
    log = sim.request_log()
    assert len(log) == 5
    assert log[-1]["query"] == "page=7"
    assert log[-1]["status"] == 200
    assert log[-1]["method"] == "GET"
    assert log[0]["path"] == "/api/v1/accounts/1/conversations"
    assert isinstance(log[0]["time"], float)


async def test_rest_recovers_every_message_of_a_lossy_burst(rest: tuple[Client, Simulator]) -> None:
    """With broadcasts dropped and flaky REST, updated_within + after paging finds all 1000."""
    client, sim = rest
    cursor = max(sim.world.messages)
    sim.set_faults(drop_broadcasts=True)
    created = sim.burst(1000, 20)
    sim.set_faults(rest_mode="error500", rest_fault_ratio=0.3)

    async def fetch(path: str) -> Any:
        while True:  # retry 500s, as the bridge's poller would
            response = await client.get(path, headers=ADMIN)
            if response.status == 200:
                return await response.json()
            assert response.status == 500

    found: set[int] = set()
    for account_id in (1, 2):
        listing = await fetch(
            f"/api/v1/accounts/{account_id}/conversations?status=all&updated_within=600"
        )
        for conversation in listing["data"]["payload"]:
            after = cursor
            while True:
                page = await fetch(
                    f"/api/v1/accounts/{account_id}/conversations/{conversation['id']}/messages?after={after}"
                )
                found |= {m["id"] for m in page["payload"]}
                if len(page["payload"]) < 100:
                    break
                after = max(m["id"] for m in page["payload"])
    assert set(created) <= found
    assert sim.state()["broadcasts"]["dropped"] >= 1000


async def test_assignments_cache_keys_and_bad_json(rest: tuple[Client, Simulator]) -> None:
    """Assignments return the agent, cache_keys has defaults, a broken JSON body is 400."""
    client, sim = rest
    base = "/api/v1/accounts/1/conversations/1"
    response = await client.post(f"{base}/assignments", headers=ADMIN, json={"assignee_id": 2})
    assert (await response.json())["id"] == 2
    assert sim.world.conversation(1, 1).assignee_id == 2
    response = await client.post(f"{base}/assignments", headers=ADMIN, json={"assignee_id": 999})
    assert await response.json() is None
    assert sim.world.conversation(1, 1).assignee_id is None
    keys = await get_json(client, "/api/v1/accounts/1/cache_keys")
    assert set(keys["cache_keys"]) == {"label", "inbox", "team"}
    response = await client.post(
        f"{base}/messages", headers={**ADMIN, "Content-Type": "application/json"}, data="{oops"
    )
    assert response.status == 400
