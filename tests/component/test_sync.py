"""REST passes against the simulator's REST API: what a pass publishes, and what it does not."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import aiohttp
import pytest

from bridge.cache import MessageCache
from bridge.config import RestConfig, Secret
from bridge.errors import RestRetryable
from bridge.eventlog import MemoryEventLog
from bridge.events import AccountId, ConversationId, Event
from bridge.hub import Hub
from bridge.metrics import Metrics
from bridge.normalise import from_cable
from bridge.pipeline import Pipeline
from bridge.ports import LocalEventStore
from bridge.rest import ChatwootREST
from bridge.simulator import SimConfig, Simulator, build_app
from bridge.simulator.entities import MessageType
from bridge.sync import Syncer, remember
from bridge.tracking import ConversationTracker


@dataclass
class Rig:
    sim: Simulator
    rest: ChatwootREST
    log: MemoryEventLog
    pipeline: Pipeline
    cache: MessageCache
    tracker: ConversationTracker
    syncer: Syncer

    def published(self, name: str | None = None, source: str | None = None) -> list[Event]:
        """Published events as clients see them (the log keeps the payload only as text)."""
        found = self.log.since(self.log.epoch, 0)
        assert isinstance(found, list)
        return [
            replace(e.event, data=json.loads(e.text)["data"])
            for e in found
            if (name is None or e.event.name == name)
            and (source is None or e.event.source == source)
        ]

    async def deliver_by_cable(self, broadcasts) -> None:
        """What the cable would have delivered (the simulator's broadcasts, normalised)."""
        for b in broadcasts:
            event = from_cable(
                {"event": b.event, "data": b.data}, received_at=time.time(), accounts=None
            )
            if isinstance(event, Event):
                await self.pipeline.publish(event)


class Clock:
    """Wall clock with an offset: the simulator's seed history is created in the past."""

    def __init__(self) -> None:
        self.offset = -100.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def rig(aiohttp_server, metrics: Metrics):
    clock = Clock()
    app, sim = build_app(SimConfig(port=0, rate=0, conversations_per_account=3), clock=clock)
    clock.offset = 0.0
    server = await aiohttp_server(app)
    session = aiohttp.ClientSession()
    rest = ChatwootREST(
        session,
        str(server.make_url("")).rstrip("/"),
        Secret("sim-api-token"),
        RestConfig(),
        metrics,
    )
    log = MemoryEventLog("ep", 10_000)
    store = LocalEventStore(log)
    pipeline = Pipeline(store, Hub(), metrics)
    pipeline.accounts = frozenset({1, 2})
    cache = MessageCache(100, 300)
    tracker = ConversationTracker()
    pipeline.observers.append(lambda entry: remember(entry, cache, tracker, time.time()))
    syncer = Syncer(rest, cache, tracker, pipeline.publish, store.seen)
    yield Rig(sim, rest, log, pipeline, cache, tracker, syncer)
    await session.close()


async def test_pass_publishes_what_the_cable_never_delivered(rig: Rig):
    """Messages created after `since` and never seen are published once, oldest first, as poll."""
    since = time.time() - 0.5
    created = [rig.sim.create_message(1, 1, content=f"lost {i}")["id"] for i in range(5)]
    result = await rig.syncer.sync_account(1, since, time.time() + 1)
    assert result.errors == []
    assert [e.data["id"] for e in rig.published("message.created")] == created
    assert {e.source for e in rig.published()} == {"poll"}
    again = await rig.syncer.sync_account(1, since, time.time() + 1)
    assert again.published == 0
    assert len(rig.published("message.created")) == 5


async def test_messages_from_before_the_window_are_cached_not_published(rig: Rig):
    """The seeded history (before `since`) gives cursors but is not published."""
    result = await rig.syncer.sync_account(1, time.time() + 1, time.time() + 2)
    assert result.published == 0
    assert rig.published() == []


def world_message(rig: Rig, conversation: int, content: str, account: int = 1, ago: float = 0.0):
    """Create a message in the simulator's world; return its id and what Chatwoot broadcasts."""
    message, broadcasts = rig.sim.world.create_message(
        account,
        conversation,
        now=time.time() - ago,
        content=content,
        message_type=MessageType.INCOMING,
    )
    return message.id, broadcasts


async def test_cable_delivered_messages_are_not_published_twice(rig: Rig):
    """What the cable delivered is deduplicated; only the lost ones come from REST."""
    since = time.time() - 0.5
    delivered, lost = [], []
    for i in range(6):
        mid, broadcasts = world_message(rig, 2, f"m{i}")
        if i % 2:
            lost.append(mid)
        else:
            delivered.append(mid)
            await rig.deliver_by_cable(broadcasts)
    result = await rig.syncer.sync_account(1, since, time.time() + 1)
    assert [e.data["id"] for e in rig.published("message.created", source="poll")] == lost
    assert [e.data["id"] for e in rig.published("message.created", source="cable")] == delivered
    # plus the conversation's snapshot: the bridge had none for it yet
    assert result.published == len(lost) + 1


async def test_messages_are_read_forward_from_a_cached_message_older_than_the_window(rig: Rig):
    """A cached message older than the window anchors after= pages (100 rows each)."""
    _, broadcasts = world_message(rig, 3, "seen by cable, before the window", ago=10)
    await rig.deliver_by_cable(broadcasts)
    since = time.time() - 0.5
    lost = [world_message(rig, 3, f"lost {i}")[0] for i in range(250)]
    await rig.syncer.sync_account(1, since, time.time() + 1)
    assert [e.data["id"] for e in rig.published("message.created", source="poll")] == lost
    queries = [
        r["query"] for r in rig.sim.request_log() if r["path"].endswith("/conversations/3/messages")
    ]
    assert sum("after" in q for q in queries) == 3
    assert not any("before" in q for q in queries)


async def test_messages_lost_below_the_newest_delivered_one_are_found(rig: Rig):
    """The cable lost m1 but delivered the later m2: REST still finds m1."""
    since = time.time() - 0.5
    m1, _ = world_message(rig, 2, "lost")
    _, broadcasts = world_message(rig, 2, "delivered")
    await rig.deliver_by_cable(broadcasts)
    await rig.syncer.sync_account(1, since, time.time() + 1)
    assert [e.data["id"] for e in rig.published("message.created", source="poll")] == [m1]


async def test_a_later_conversation_event_by_cable_does_not_hide_a_lost_message(rig: Rig):
    """The cable lost m1 but delivered a later status change: the snapshot it carried is
    newer than REST's, yet m1 must still be fetched (found by the chaos test)."""
    since = time.time() - 0.5
    m1, _ = world_message(rig, 1, "lost")
    await rig.deliver_by_cable(rig.sim.world.set_status(1, 1, "resolved", now=time.time()))
    await rig.syncer.sync_account(1, since, time.time() + 1)
    assert [e.data["id"] for e in rig.published("message.created", source="poll")] == [m1]


async def test_without_a_cursor_a_pass_reaches_back_to_since(rig: Rig):
    """No cursor: before= pages reach back until a message older than `since`."""
    since = time.time() - 0.5
    lost = [world_message(rig, 1, f"lost {i}")[0] for i in range(45)]
    await rig.syncer.sync_account(1, since, time.time() + 1)
    assert [e.data["id"] for e in rig.published("message.created")] == lost
    queries = [
        r["query"] for r in rig.sim.request_log() if r["path"].endswith("/conversations/1/messages")
    ]
    assert sum("before" in q for q in queries) >= 2


async def test_status_change_lost_by_the_cable_is_found(rig: Rig):
    """A status change the cable lost becomes status_changed + updated from REST, newest state."""
    await rig.syncer.sync_account(1, time.time() - 200, time.time() + 1)  # baseline snapshots
    since = time.time() - 0.5
    rig.sim.world.set_status(1, 2, "resolved", now=time.time())
    await rig.syncer.sync_account(1, since, time.time() + 1)
    names = [
        (e.name, e.conversation_id, e.data["status"])
        for e in rig.published(source="poll")
        if e.name.startswith("conv")
    ]
    assert ("conversation.status_changed", 2, "resolved") in names
    assert ("conversation.updated", 2, "resolved") in names


async def test_delivery_status_lost_by_the_cable_is_found(rig: Rig):
    """A message status change the cable lost becomes message.updated from REST."""
    since = time.time() - 0.5
    mid, broadcasts = world_message(rig, 1, "to be read")
    await rig.deliver_by_cable(broadcasts)
    await rig.syncer.sync_account(1, since, time.time() + 1)
    rig.sim.world.update_message_status(mid, "read", now=time.time())
    await rig.syncer.sync_account(1, since, time.time() + 1)
    [updated] = rig.published("message.updated", source="poll")
    assert (updated.data["id"], updated.data["status"]) == (mid, "read")


async def test_unsettled_changes_wait_for_the_next_pass(rig: Rig):
    """Messages younger than `until` and fresh differences wait (the cable may deliver them)."""
    since = time.time() - 0.5
    world_message(rig, 1, "too fresh")
    result = await rig.syncer.sync_account(1, since, time.time() - 2)
    assert result.published == 0
    await rig.syncer.sync_account(1, since, time.time() + 1)
    assert len(rig.published("message.created")) == 1


async def test_a_difference_is_reported_once_it_lasted_the_settle_time(rig: Rig):
    """A status change the cable lost is reported when still missing after `settle`."""
    await rig.syncer.sync_account(1, time.time() - 200, time.time() + 1)  # baseline
    since = time.time() - 0.5
    rig.sim.world.set_status(1, 2, "pending", now=time.time())
    first = await rig.syncer.sync_account(1, since, time.time() - 0.3)
    assert not rig.published("conversation.status_changed")
    assert first.errors == []
    rig.sim.world.create_message(
        1, 2, now=time.time(), content="busy", message_type=MessageType.INCOMING
    )
    clock = rig.syncer.clock
    rig.syncer.clock = lambda: clock() + 0.5  # the difference is now older than settle
    await rig.syncer.sync_account(1, since, time.time() + 0.2)
    [changed] = rig.published("conversation.status_changed")
    assert changed.data["status"] == "pending"


async def test_failing_conversation_does_not_stop_the_others_and_is_retried(rig: Rig):
    """One conversation's error is collected; the next pass fetches it again."""
    since = time.time() - 0.5
    for conv in (1, 2, 3):
        world_message(rig, conv, f"in {conv}")
    real = rig.rest.messages
    calls = {"n": 0}

    async def flaky(account_id, conversation_id, **kwargs):
        if conversation_id == 2 and calls["n"] == 0:
            calls["n"] += 1
            raise RestRetryable("boom", endpoint="messages", outcome="server_error")
        return await real(account_id, conversation_id, **kwargs)

    rig.syncer.rest = type(
        "R", (), {"conversations": rig.rest.conversations, "messages": staticmethod(flaky)}
    )()
    first = await rig.syncer.sync_account(1, since, time.time() + 1)
    assert len(first.errors) == 1
    assert sorted(e.conversation_id for e in rig.published("message.created")) == [1, 3]
    second = await rig.syncer.sync_account(1, since, time.time() + 1)
    assert second.errors == []
    assert sorted(e.conversation_id for e in rig.published("message.created")) == [1, 2, 3]


async def test_new_conversation_is_announced(rig: Rig):
    """A conversation created in the window is conversation.created, with its first message."""
    since = time.time() - 0.5
    conv, _ = rig.sim.world.create_conversation(1, now=time.time())
    rig.sim.world.create_message(
        1, conv.display_id, now=time.time(), content="hi", message_type=MessageType.INCOMING
    )
    await rig.syncer.sync_account(1, since, time.time() + 1)
    names = [e.name for e in rig.published() if e.conversation_id == conv.display_id]
    assert names == ["message.created", "conversation.created"]
    created = rig.published("conversation.created")[0]
    assert created.data["channel"].startswith("Channel::")
    assert "pubsub_token" not in str(created.data)


async def test_list_failure_raises(rig: Rig):
    """When the conversation list fails, the pass fails (the window is not advanced)."""
    rig.sim.set_faults(rest_mode="error500")
    with pytest.raises(RestRetryable):
        await rig.syncer.sync_account(1, time.time() - 1, time.time())


def test_event_ids_are_display_ids():
    """Sanity for the helpers above: events built from a display id keep it."""
    event = Event("message.created", AccountId(1), ConversationId(2), "poll", None, 0.0, {})
    assert event.conversation_id == 2


async def test_a_settling_difference_is_reported_even_if_nothing_else_happens(rig: Rig):
    """A deferred status change is re-checked on the next pass with no newer activity."""
    await rig.syncer.sync_account(1, time.time() - 200, time.time() + 1)  # baseline
    since = time.time() - 0.5
    rig.sim.world.set_status(1, 2, "snoozed", now=time.time() - 1)  # older than settle
    rig.syncer.clock = time.time
    await rig.syncer.sync_account(1, since, time.time() - 0.3)  # difference seen, settling
    assert not rig.published("conversation.status_changed")
    base = time.time()
    rig.syncer.clock = lambda: base + 1.0
    await rig.syncer.sync_account(1, since, base + 0.7)  # same snapshot, settle is over
    [changed] = rig.published("conversation.status_changed")
    assert changed.data["status"] == "snoozed"


async def test_a_pass_vouches_for_history_pages(rig: Rig):
    """After a pass read a conversation's messages, history pages come from the cache, with
    every message REST listed, including ones the cable never brought."""
    assert rig.cache.messages(1, 1, time.time()) is None
    since = time.time() - 0.5
    lost = [world_message(rig, 1, f"lost {i}")[0] for i in range(3)]
    await rig.syncer.sync_account(1, since, time.time() + 1)
    truth = list(rig.sim.world.conversation(1, 1).message_ids)
    page = rig.cache.messages(1, 1, time.time())
    assert page is not None
    assert [m["id"] for m in page] == truth[-20:]
    assert set(lost) <= {m["id"] for m in page}
    # Messages Chatwoot has but nobody told the bridge about are not in a page until the
    # next pass (or event) brings them; clients get them as events meanwhile.
    lost2 = [world_message(rig, 1, f"later {i}")[0] for i in range(2)]
    assert rig.cache.messages(1, 1, time.time()) == page
    await rig.syncer.sync_account(1, since, time.time() + 1)
    newer = rig.cache.messages(1, 1, time.time())
    assert newer is not None
    assert [m["id"] for m in newer][-2:] == lost2
