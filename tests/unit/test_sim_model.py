"""Pure tests of the simulator's database, renderers, finders and traffic generator."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.simulator import SimConfig, render
from bridge.simulator.entities import Broadcast, MessageType
from bridge.simulator.finders import find_messages, list_conversations
from bridge.simulator.model import InvalidError, NotFoundError, World
from bridge.simulator.traffic import TrafficGenerator


T0 = 1_790_000_000.0
ISO_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ADMIN, AGENT = "sim-pubsub-token", "sim-agent-pubsub-token"


def make_world(per_account: int = 0, seed: int = 0) -> World:
    """A fresh world with a pinned clock."""
    return World(SimConfig(conversations_per_account=per_account, seed=seed).world_spec(), now=T0)


def events(broadcasts: list[Broadcast]) -> list[str]:
    """Event names, in order."""
    return [b.event for b in broadcasts]


def only(broadcasts: list[Broadcast], event: str) -> Broadcast:
    """The single broadcast named ``event``."""
    found = [b for b in broadcasts if b.event == event]
    assert len(found) == 1, events(broadcasts)
    return found[0]


def incoming(
    world: World, account_id: int, display_id: int, text: str = "hi"
) -> tuple[Any, list[Broadcast]]:
    """A contact message."""
    return world.create_message(
        account_id, display_id, now=T0 + 1, content=text, message_type=MessageType.INCOMING
    )


def reply(world: World, account_id: int, display_id: int, **kw: Any) -> tuple[Any, list[Broadcast]]:
    """An agent reply by the admin (user 1), acting through the API."""
    admin = world.user(1)
    return world.create_message(
        account_id,
        display_id,
        now=T0 + 2,
        content=kw.pop("content", "reply"),
        message_type=MessageType.OUTGOING,
        sender=admin,
        actor=admin,
        **kw,
    )


# Renderers: shapes and timestamp types (chatwoot.md §2.4, §2.5, §2.7, §4.3, §4.4)


def test_message_push_shape_and_timestamp_types() -> None:
    """Message push data has int created_at, ISO-millis updated_at, int type and display id."""
    world = make_world()
    world.create_conversation(2, now=T0)
    conv, _ = world.create_conversation(1, now=T0)
    msg, _ = reply(world, 1, conv.display_id, echo_id="tmp-1")
    data = render.message_push(world, msg, echo_id="tmp-1")
    assert isinstance(data["created_at"], int)
    assert ISO_MILLIS.match(data["updated_at"])
    assert data["message_type"] == 1
    assert (conv.id, conv.display_id) == (2, 1)
    assert data["conversation_id"] == 1
    assert data["status"] == "sent"
    assert data["content_type"] == "text"
    assert data["echo_id"] == "tmp-1"
    assert set(data["conversation"]) == {
        "assignee_id",
        "unread_count",
        "last_activity_at",
        "contact_inbox",
    }
    assert isinstance(data["conversation"]["last_activity_at"], int)
    assert set(data["conversation"]["contact_inbox"]) == {"source_id"}
    assert data["sender"]["type"] == "user"
    assert data["sender_type"] == "User"
    assert "echo_id" not in render.message_push(world, msg)


def test_contact_sender_has_type_contact() -> None:
    """An incoming message's sender block is the contact with type 'contact'."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    msg, _ = incoming(world, 1, conv.display_id)
    sender = render.message_push(world, msg)["sender"]
    assert sender["type"] == "contact"
    assert sender["id"] == conv.contact_id
    assert set(sender) >= {"email", "phone_number", "identifier", "thumbnail", "blocked"}


def test_message_rest_is_the_documented_subset() -> None:
    """REST messages lack account_id, updated_at, sender_type and the conversation block."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    msg, _ = incoming(world, 1, conv.display_id)
    data = render.message_rest(world, msg)
    assert set(data) == {
        "id", "content", "inbox_id", "conversation_id", "message_type", "content_type",
        "status", "content_attributes", "created_at", "private", "source_id", "sender",
    }  # fmt: skip
    assert isinstance(data["created_at"], int)
    assert data["message_type"] == 0


def test_conversation_push_shape() -> None:
    """Push conversations: float updated_at, leaked contact_inbox token, last chat message only."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    first, _ = incoming(world, 1, conv.display_id)
    reply(world, 1, conv.display_id, private=True, content="note")
    data = render.conversation_push(world, conv)
    assert data["id"] == conv.display_id
    assert isinstance(data["updated_at"], float)
    for key in (
        "created_at",
        "last_activity_at",
        "timestamp",
        "agent_last_seen_at",
        "waiting_since",
    ):
        assert isinstance(data[key], int), key
    assert data["agent_last_seen_at"] == 0
    assert data["channel"] == "Channel::Api"
    ci = world.contact_inbox(conv.contact_inbox_id)
    assert data["contact_inbox"]["pubsub_token"] == ci.pubsub_token
    assert ISO_MILLIS.match(data["contact_inbox"]["created_at"])
    # The private note is newer but push previews only chat messages.
    assert [m["id"] for m in data["messages"]] == [first.id]
    assert set(data["meta"]) == {"sender", "assignee", "assignee_type", "team", "hmac_verified"}
    assert data["first_reply_created_at"] is None


def test_first_reply_created_at_is_iso_in_push_and_int_in_rest() -> None:
    """first_reply_created_at: ISO string in push, int in REST (chatwoot.md §2.7)."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    reply(world, 1, conv.display_id)
    assert ISO_MILLIS.match(render.conversation_push(world, conv)["first_reply_created_at"])
    rest = render.conversation_rest(world, conv, contact_online=False)
    assert isinstance(rest["first_reply_created_at"], int)
    assert rest["first_reply_created_at"] > 0


def test_conversation_rest_shape() -> None:
    """REST conversations: channel in meta, no contact_inbox, last message of any type."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    msg, _ = incoming(world, 1, conv.display_id)
    world.set_status(1, conv.display_id, "resolved", now=T0 + 5, actor=world.user(1))
    data = render.conversation_rest(world, conv, contact_online=False)
    assert "contact_inbox" not in data
    assert "channel" not in data
    assert data["meta"]["channel"] == "Channel::Api"
    assert data["messages"][0]["message_type"] == 2  # the activity line
    assert data["last_non_activity_message"]["id"] == msg.id
    assert isinstance(data["updated_at"], float)
    assert data["first_reply_created_at"] == 0
    assert data["account_id"] == 1


def test_typing_and_presence_payloads() -> None:
    """Typing carries conversation, user and is_private; presence lists users and contacts."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    typing = world.typing(1, conv.display_id, on=True, typist=world.user(1), is_private=True)
    data = only(typing, "conversation.typing_on").data
    assert set(data) == {"conversation", "user", "is_private", "account_id"}
    assert data["user"]["type"] == "user"
    assert data["is_private"] is True
    sub = world.resolve_subscriber({"pubsub_token": ADMIN, "user_id": 1, "account_id": 1})
    presence = world.presence(sub, now=T0)
    assert presence.streams == [ADMIN]
    assert presence.data == {"account_id": 1, "users": {"1": "online"}, "contacts": {}}


# Ids


def test_display_ids_are_per_account_and_message_ids_global() -> None:
    """Display ids restart per account; message ids form one global sequence."""
    world = make_world()
    a1, _ = world.create_conversation(1, now=T0)
    b1, _ = world.create_conversation(2, now=T0)
    a2, _ = world.create_conversation(1, now=T0)
    assert (a1.display_id, b1.display_id, a2.display_id) == (1, 1, 2)
    assert len({a1.id, b1.id, a2.id}) == 3
    m1, _ = incoming(world, 1, 1)
    m2, _ = incoming(world, 2, 1)
    m3, _ = incoming(world, 1, 2)
    assert (m1.id, m2.id, m3.id) == (1, 2, 3)
    assert world.conversation(2, 1).id == b1.id


# Recipients and event rules (chatwoot.md §2.2-§2.3)


def test_message_created_recipients() -> None:
    """message.created: members+admins plus the contact token, except private notes."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)  # inbox 1: the agent is a member
    contact = world.contact_inbox(conv.contact_inbox_id).pubsub_token
    _, public = reply(world, 1, conv.display_id)
    assert only(public, "message.created").streams == [AGENT, ADMIN, contact]
    _, note = reply(world, 1, conv.display_id, private=True)
    assert only(note, "message.created").streams == [AGENT, ADMIN]


def test_non_member_agent_gets_nothing_from_other_inbox() -> None:
    """Only inbox members and admins receive a conversation's events."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0, inbox_id=2)
    _, broadcasts = incoming(world, 1, conv.display_id)
    assert AGENT not in only(broadcasts, "message.created").streams


def test_account_id_on_every_event_and_performer_rules() -> None:
    """Every event has account_id; performer marks user actions except the 5 re-read events."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    _, broadcasts = reply(world, 1, conv.display_id)
    broadcasts += world.set_status(1, conv.display_id, "resolved", now=T0 + 3, actor=world.user(1))
    assert broadcasts
    for b in broadcasts:
        assert b.data["account_id"] == 1
    assert only(broadcasts, "first.reply.created").data["performer"]["id"] == 1
    created = [b for b in broadcasts if b.event == "message.created"]
    assert created[0].data["performer"]["type"] == "user"
    assert "performer" not in created[-1].data  # activity line, created by a job
    for name in ("conversation.updated", "conversation.status_changed"):
        assert all("performer" not in b.data for b in broadcasts if b.event == name)


def test_status_change_emits_both_status_events_and_activity() -> None:
    """One status change: status_changed AND updated (to the contact too), then an activity line."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    contact = world.contact_inbox(conv.contact_inbox_id).pubsub_token
    broadcasts = world.set_status(1, conv.display_id, "resolved", now=T0 + 3, actor=world.user(1))
    assert events(broadcasts) == [
        "conversation.status_changed",
        "conversation.updated",
        "message.created",
    ]
    assert contact in broadcasts[0].streams
    assert broadcasts[0].data["status"] == "resolved"
    assert broadcasts[2].data["content"] == "Conversation was marked resolved by Sim Admin"
    assert contact not in broadcasts[2].streams
    assert world.set_status(1, conv.display_id, "resolved", now=T0 + 4) == []


def test_incoming_message_reopens_resolved_conversation() -> None:
    """An incoming message in a resolved conversation reopens it with status events first."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    world.set_status(1, conv.display_id, "resolved", now=T0 + 1)
    _, broadcasts = incoming(world, 1, conv.display_id)
    names = events(broadcasts)
    assert names[:3] == ["conversation.status_changed", "conversation.updated", "message.created"]
    assert names[-1] == "contact.updated"
    assert broadcasts[0].data["status"] == "open"
    # Re-read at the end of the request: the status payload already shows the new message.
    assert broadcasts[0].data["messages"][0]["id"] == broadcasts[2].data["id"]
    assert conv.status == "open"


def test_incoming_message_updates_contact_on_account_stream() -> None:
    """Every incoming message fires contact.updated on the account_<id> stream."""
    world = make_world()
    conv, _ = world.create_conversation(2, now=T0)
    _, broadcasts = incoming(world, 2, conv.display_id)
    contact_updated = only(broadcasts, "contact.updated")
    assert contact_updated.streams == ["account_2"]
    assert contact_updated.data["id"] == conv.contact_id
    assert contact_updated.data["account_id"] == 2


def test_conversation_created_and_contact_created() -> None:
    """A new conversation announces contact.created (account stream) and conversation.created."""
    world = make_world()
    conv, broadcasts = world.create_conversation(1, now=T0)
    assert events(broadcasts) == ["contact.created", "conversation.created"]
    assert broadcasts[0].streams == ["account_1"]
    ci = world.contact_inbox(conv.contact_inbox_id)
    assert broadcasts[1].streams == [AGENT, ADMIN, ci.pubsub_token]
    assert broadcasts[1].data["messages"] == []


def test_first_reply_and_waiting_since_events() -> None:
    """First human reply: first.reply.created + conversation.updated, never again after."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    _, first = reply(world, 1, conv.display_id)
    assert events(first) == ["message.created", "first.reply.created", "conversation.updated"]
    assert conv.waiting_since is None
    _, second = reply(world, 1, conv.display_id)
    assert events(second) == ["message.created"]
    _, back = incoming(world, 1, conv.display_id)
    assert events(back) == ["message.created", "conversation.updated", "contact.updated"]
    assert conv.waiting_since is not None


def test_typing_excludes_the_typist() -> None:
    """Typing reaches members, admins and the contact, minus the typist's own token."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    contact = world.contact_inbox(conv.contact_inbox_id).pubsub_token
    by_admin = world.typing(1, conv.display_id, on=True, typist=world.user(1))
    assert by_admin[0].streams == [AGENT, contact]
    by_contact = world.typing(1, conv.display_id, on=False, typist=world.contact(conv.contact_id))
    assert by_contact[0].event == "conversation.typing_off"
    assert by_contact[0].streams == [AGENT, ADMIN]


def test_assignment_emits_assignee_changed_and_updated() -> None:
    """Assigning emits assignee.changed and conversation.updated; a no-op emits nothing."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    broadcasts = world.assign(1, conv.display_id, 2, now=T0 + 1, actor=world.user(1))
    assert events(broadcasts) == ["assignee.changed", "conversation.updated", "message.created"]
    assert broadcasts[0].data["meta"]["assignee"]["id"] == 2
    assert world.assign(1, conv.display_id, 2, now=T0 + 2) == []
    other, _ = world.create_conversation(2, now=T0)
    with pytest.raises(InvalidError):
        world.assign(2, other.display_id, 2, now=T0)  # the agent is not in account 2


def test_message_status_update_carries_previous_changes() -> None:
    """message.updated carries previous_changes and touches the conversation (touch: true)."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    msg, _ = reply(world, 1, conv.display_id)
    before = conv.updated_at
    broadcasts = world.update_message_status(msg.id, "delivered", now=T0 + 9)
    data = only(broadcasts, "message.updated").data
    assert data["previous_changes"]["status"] == ["sent", "delivered"]
    assert data["status"] == "delivered"
    assert conv.updated_at > before


def test_updated_at_bumps_on_every_message_and_change() -> None:
    """updated_at strictly grows with each message and change, even at a fixed clock."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    seen = [conv.updated_at]
    for n in range(3):
        world.create_message(1, 1, now=T0, content=str(n), message_type=MessageType.INCOMING)
        seen.append(conv.updated_at)
    world.set_status(1, 1, "pending", now=T0)
    seen.append(conv.updated_at)
    assert seen == sorted(set(seen))


def test_agent_seen_is_silent_and_does_not_bump() -> None:
    """update_last_seen changes agent_last_seen_at only: no event, no updated_at bump."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    incoming(world, 1, 1)
    before = conv.updated_at
    assert render.unread_count(world, conv) == 1
    world.agent_seen(1, 1, world.user(1), now=T0 + 50)
    assert conv.updated_at == before
    assert render.unread_count(world, conv) == 0


def test_contact_read_emits_conversation_read_without_performer() -> None:
    """The contact reading emits conversation.read to members and admins only."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    broadcasts = world.contact_read(1, conv.display_id, now=T0 + 1)
    assert events(broadcasts) == ["conversation.read"]
    assert broadcasts[0].streams == [AGENT, ADMIN]


# RoomChannel lookups (chatwoot.md §1.2)


def test_resolve_subscriber_rules() -> None:
    """Users need token+user_id+member account; a token without user_id is a contact token."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    user = world.resolve_subscriber({"pubsub_token": ADMIN, "user_id": "1", "account_id": 2})
    assert user.streams == (ADMIN, "account_2")
    with pytest.raises(NotFoundError):
        world.resolve_subscriber({"pubsub_token": ADMIN, "account_id": 1})
    with pytest.raises(NotFoundError):
        world.resolve_subscriber({"pubsub_token": AGENT, "user_id": 2, "account_id": 2})
    with pytest.raises(NotFoundError):
        world.resolve_subscriber({"pubsub_token": ADMIN, "user_id": 2, "account_id": 1})
    with pytest.raises(NotFoundError):
        world.resolve_subscriber({"pubsub_token": ADMIN, "user_id": 1})
    token = world.contact_inbox(conv.contact_inbox_id).pubsub_token
    contact = world.resolve_subscriber({"pubsub_token": token})
    assert (contact.kind, contact.streams) == ("Contact", (token,))
    assert "contacts" not in world.presence(contact, now=T0).data


# Finders (chatwoot.md §4.3-§4.4)


def message_world(count: int) -> tuple[World, Any]:
    """One conversation with ``count`` incoming messages."""
    world = make_world()
    conv, _ = world.create_conversation(1, now=T0)
    for n in range(count):
        world.create_message(1, 1, now=T0, content=str(n), message_type=MessageType.INCOMING)
    return world, conv


def ids(messages: list[Any]) -> list[int]:
    """Message ids."""
    return [m.id for m in messages]


def test_messages_finder_windows() -> None:
    """Latest 20; before → 20 older; after → 100 newer; after+before → inclusive after."""
    world, conv = message_world(150)
    assert ids(find_messages(world, conv, {})) == list(range(131, 151))
    assert ids(find_messages(world, conv, {"before": "50"})) == list(range(30, 50))
    assert ids(find_messages(world, conv, {"after": "10"})) == list(range(11, 111))
    assert ids(find_messages(world, conv, {"after": "10", "before": "15"})) == [10, 11, 12, 13, 14]
    assert ids(find_messages(world, conv, {"after": "junk"}))[0] == 1


def test_messages_finder_filters_internal() -> None:
    """filter_internal_messages drops private notes and activity lines."""
    world, conv = message_world(2)
    reply(world, 1, 1, private=True)
    world.set_status(1, 1, "pending", now=T0 + 3, actor=world.user(1))
    everything = find_messages(world, conv, {})
    public = find_messages(world, conv, {"filter_internal_messages": "true"})
    assert len(everything) == 4
    assert ids(public) == [1, 2]


@settings(max_examples=30, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=260), cursor=st.integers(min_value=0, max_value=300)
)
def test_after_paging_collects_every_newer_message(total: int, cursor: int) -> None:
    """Paging with after=<max id seen> until a short page yields exactly the ids above it."""
    world, conv = message_world(total)
    got: list[int] = []
    position = cursor
    while True:
        page = find_messages(world, conv, {"after": str(position)})
        got += ids(page)
        if len(page) < 100:
            break
        position = max(ids(page))
    assert got == [m for m in range(1, total + 1) if m > cursor]


def test_conversation_finder_status_counts_and_pages() -> None:
    """Status defaults to open, counts ignore assignee_type, pages hold 25."""
    world = make_world()
    admin = world.user(1)
    for _ in range(30):
        world.create_conversation(1, now=T0)
    world.set_status(1, 1, "resolved", now=T0 + 1)
    world.assign(1, 2, 1, now=T0 + 1)
    world.create_message(1, 5, now=T0 + 1, content="x", message_type=MessageType.INCOMING)
    page1 = list_conversations(world, admin, 1, {}, now=T0 + 2)
    assert page1.counts == {
        "mine_count": 1,
        "assigned_count": 1,
        "unassigned_count": 28,
        "all_count": 29,
    }
    assert len(page1.conversations) == 25
    page2 = list_conversations(world, admin, 1, {"page": "2"}, now=T0 + 2)
    assert len(page2.conversations) == 4
    mine = list_conversations(world, admin, 1, {"assignee_type": "me"}, now=T0 + 2)
    assert [c.display_id for c in mine.conversations] == [2]
    assert mine.counts["all_count"] == 29
    everything = list_conversations(world, admin, 1, {"status": "all", "page": "0"}, now=T0 + 2)
    assert everything.counts["all_count"] == 30
    # Default sort: last activity, newest first.
    assert everything.conversations[0].display_id == 5


def test_updated_within_returns_everything_unpaginated() -> None:
    """updated_within=N returns all conversations updated in the last N seconds, no paging."""
    world = make_world()
    for _ in range(40):
        world.create_conversation(1, now=T0)
    for display_id in (3, 7):
        world.create_message(
            1, display_id, now=T0 + 100, content="x", message_type=MessageType.INCOMING
        )
    admin = world.user(1)
    recent = list_conversations(world, admin, 1, {"updated_within": "10"}, now=T0 + 105)
    assert sorted(c.display_id for c in recent.conversations) == [3, 7]
    wide = list_conversations(
        world, admin, 1, {"updated_within": "1000", "page": "2"}, now=T0 + 105
    )
    assert len(wide.conversations) == 40


def test_agent_only_sees_member_inboxes() -> None:
    """An agent lists only conversations of inboxes it belongs to."""
    world = make_world()
    world.create_conversation(1, now=T0, inbox_id=1)
    world.create_conversation(1, now=T0, inbox_id=2)
    agent = world.user(2)
    page = list_conversations(world, agent, 1, {"status": "all"}, now=T0)
    assert [c.inbox_id for c in page.conversations] == [1]


# Traffic generator


def run_traffic(seed: int, steps: int) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Actions and published (event, streams) of ``steps`` generator steps at a fixed clock."""
    world = make_world(per_account=3, seed=seed)
    published: list[tuple[str, list[str]]] = []

    def publish(broadcasts: Any) -> None:
        published.extend((b.event, b.streams) for b in broadcasts)

    gen = TrafficGenerator(world, publish, clock=lambda: T0, seed=seed, rate=0)
    return [gen.step() for _ in range(steps)], published


def test_traffic_is_deterministic_for_a_seed() -> None:
    """The same seed replays the same actions and broadcasts; another seed differs."""
    first = run_traffic(7, 300)
    assert first == run_traffic(7, 300)
    assert first != run_traffic(8, 300)
    actions = set(first[0])
    assert {
        "incoming",
        "outgoing",
        "status",
        "typing_on",
        "typing_off",
        "new_conversation",
    } <= actions


def test_traffic_typing_comes_in_pairs() -> None:
    """Every typing_on is eventually followed by a typing_off for the same conversation."""
    actions, published = run_traffic(3, 400)
    ons = sum(1 for event, _ in published if event == "conversation.typing_on")
    offs = sum(1 for event, _ in published if event == "conversation.typing_off")
    assert ons > 0
    assert 0 <= ons - offs <= 3
    assert actions.count("typing_on") == ons


def test_burst_spreads_messages_over_conversations() -> None:
    """burst(1000, 20) creates 1000 messages over exactly 20 conversations."""
    world = make_world(per_account=5)
    before = {c.id: len(c.message_ids) for c in world.conversations.values()}
    gen = TrafficGenerator(world, lambda _b: None, clock=lambda: T0, seed=1, rate=0)
    created = gen.burst(1000, 20)
    assert len(created) == len(set(created)) == 1000
    touched = {world.messages[m].conversation_id for m in created}
    assert len(touched) == 20
    assert len(world.conversations) == 20
    grown = sum(len(c.message_ids) - before.get(c.id, 0) for c in world.conversations.values())
    assert grown >= 1000


@pytest.mark.parametrize("module", ["entities", "store", "model", "render", "finders", "config"])
def test_pure_simulator_modules_do_no_io(module: str) -> None:
    """The simulator's state and shape modules import no I/O, clock or logging library."""
    path = Path(__file__).parents[2] / "bridge" / "simulator" / f"{module}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    assert not found & {"asyncio", "aiohttp", "websockets", "structlog", "time", "socket", "os"}
