"""The whole daemon against the bundled simulator: filters, resume, upstream failures."""

from __future__ import annotations

from collections import Counter

from bridge.app import Bridge
from tests.helpers import LocalClient, eventually, running_bridge

from .conftest import RunningSim


def message_ids(client: LocalClient) -> list[int]:
    return [f["data"]["id"] for f in client.events("message.created")]


async def test_events_reach_filtered_clients_exactly_once(simulator: RunningSim):
    """Each client gets exactly the messages its filter matches, once, without leaked tokens."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env()) as (bridge, url),
        LocalClient.connect(url, "events=message.created") as all_messages,
        LocalClient.connect(url, "accounts=2&events=message.*") as account2,
        LocalClient.connect(url, "conversations=1:1,1:2") as two_conversations,
    ):
        await all_messages.wait_status("live")
        created = []
        for i in range(30):
            account = 1 + i % 2
            conversation = 1 + i % 3
            payload = sim.create_message(
                account, conversation, content=f"m{i}", message_type="incoming"
            )
            created.append((account, conversation, payload["id"]))
        expected = {
            all_messages: [m for _, _, m in created],
            account2: [m for a, _, m in created if a == 2],
            two_conversations: [m for a, c, m in created if a == 1 and c in (1, 2)],
        }
        for client, ids in expected.items():
            await client.wait_for(
                lambda f, last=ids[-1]: (
                    f.get("event") == "message.created" and f["data"].get("id") == last
                )
            )

        for client, ids in expected.items():
            assert message_ids(client) == ids
        assert all(
            f["account_id"] == 1 and f["conversation_id"] in (1, 2)
            for f in two_conversations.events()
        )
        assert Counter(f["seq"] for f in all_messages.events()).most_common(1)[0][1] == 1
        frames = "".join(
            str(f) for c in (all_messages, account2, two_conversations) for f in c.frames
        )
        assert "pubsub_token" not in frames
        assert bridge.metrics.events_dropped.labels(reason="other_subscription")._value.get() > 0


async def test_resume_with_since_replays_exactly_the_missed_events(simulator: RunningSim):
    """A client that reconnects with since gets what it missed, then live events, no duplicates."""
    sim = simulator.sim
    async with running_bridge(simulator.bridge_env()) as (_, url):
        async with LocalClient.connect(url, "events=message.created&accounts=1") as first:
            await first.wait_status("live")
            before = [sim.create_message(1, 1, content=f"a{i}")["id"] for i in range(3)]
            await first.wait_for(
                lambda f: f.get("type") == "event" and f["data"].get("id") == before[-1]
            )
            last = first.events()[-1]
            resume = f"{last['epoch']}:{last['seq']}"
        missed = [sim.create_message(1, 2, content=f"b{i}")["id"] for i in range(5)]
        sim.create_message(2, 1, content="other account")
        async with LocalClient.connect(
            url, f"events=message.created&accounts=1&since={resume}"
        ) as again:
            assert again.welcome is not None
            assert again.welcome["replayed"] == len(missed)
            await again.wait_for(
                lambda f: f.get("type") == "event" and f["data"].get("id") == missed[-1]
            )
            live = sim.create_message(1, 3, content="live")["id"]
            await again.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == live)
            assert message_ids(again) == [*missed, live]


async def test_dropped_socket_leads_to_a_fresh_subscription(simulator: RunningSim):
    """A cut socket is replaced and subscribed again; events flow again."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env(CHATWOOT_ACCOUNT_IDS="1")) as (bridge, url),
        LocalClient.connect(url, "events=message.created") as client,
    ):
        await client.wait_status("live")
        at = client.mark()
        assert sim.drop_connections(abrupt=True) == 1
        await client.wait_status("polling", after=at)
        await client.wait_status("live", after=at)
        mid = sim.create_message(1, 1, content="after drop")["id"]
        await client.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == mid)
        assert bridge.metrics.upstream_reconnects._value.get() == 1


async def test_stopped_pings_lead_to_a_fresh_subscription(simulator: RunningSim):
    """A silent socket (no pings) is declared stale and replaced."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env(CHATWOOT_ACCOUNT_IDS="1")) as (_bridge, url),
        LocalClient.connect(url, "events=message.created") as client,
    ):
        await client.wait_status("live")
        at = client.mark()
        sim.set_faults(stop_pings=True)
        status = await client.wait_status("polling", after=at)
        assert "no ping" in status["reason"]
        # a socket opened during the silence never gets its welcome; pings resuming on it
        # must not keep it alive without a subscription
        mark = len(sim.request_log())
        await eventually(lambda: any(r["path"] == "/cable" for r in sim.request_log()[mark:]))
        sim.set_faults(stop_pings=False)
        await client.wait_status("live", after=at)
        mid = sim.create_message(1, 1, content="after silence")["id"]
        await client.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == mid)


async def test_bad_token_leads_to_a_fresh_subscription_with_the_new_token(simulator: RunningSim):
    """A rotated pubsub token meets silence; the bridge re-reads the profile on a new socket."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env(CHATWOOT_ACCOUNT_IDS="1")) as (bridge, url),
        LocalClient.connect(url, "events=message.created") as client,
    ):
        await client.wait_status("live")
        sim.rotate_pubsub_token(simulator.cfg.user_id)
        at = client.mark()
        sim.drop_connections(abrupt=True)
        status = await client.wait_status("polling", after=at)
        await client.wait_status("live", after=at)
        mid = sim.create_message(1, 1, content="after rotation")["id"]
        await client.wait_for(lambda f: f.get("type") == "event" and f["data"].get("id") == mid)
        assert status["upstream"] == "polling"
        assert bridge.metrics.subscribe_failures.labels(reason="timeout")._value.get() >= 1
        profile_reads = [r for r in sim.request_log() if r["path"] == "/api/v1/profile"]
        assert len(profile_reads) >= 2


async def test_demo_style_generated_traffic_flows(simulator: RunningSim):
    """With the traffic generator on, a client without filters sees every kind of event."""
    sim = simulator.sim
    async with (
        running_bridge(simulator.bridge_env()) as (bridge, url),
        LocalClient.connect(url) as client,
    ):
        await client.wait_status("live")
        sim.burst(20, 4)
        await client.wait_for(lambda f: len(client.events("message.created")) >= 20)
        names = {f["event"] for f in client.events()}
        assert {"message.created", "presence.update"} <= names
        assert isinstance(bridge, Bridge)
