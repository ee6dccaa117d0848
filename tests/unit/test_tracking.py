"""The conversation tracker: snapshots from any source, which events a REST change stands for."""

import copy

from bridge.events import AccountId, ConversationId, Event
from bridge.normalise import conversation_from_rest
from bridge.tracking import ConversationTracker
from tests.conftest import load_fixture


def rest_conversation() -> dict:
    return conversation_from_rest(
        1, load_fixture("rest/conversations_index.json")["data"]["payload"][0]
    )


def bumped(conv: dict, by: float = 1.0, **changes) -> dict:
    new = copy.deepcopy(conv)
    new["updated_at"] = conv["updated_at"] + by
    new.update(changes)
    return new


def test_unknown_conversation_is_created_or_updated_by_its_age():
    """Never seen: conversation.created when created in the window, else conversation.updated."""
    conv = rest_conversation()
    assert ConversationTracker().changes(1, conv, created_since=conv["created_at"] - 1) == [
        "conversation.created"
    ]
    assert ConversationTracker().changes(1, conv, created_since=conv["created_at"] + 1) == [
        "conversation.updated"
    ]


def test_status_change_emits_what_chatwoot_emits():
    """A status change is status_changed plus updated; assignment adds assignee.changed."""
    tracker = ConversationTracker()
    conv = rest_conversation()
    tracker.changes(1, conv, created_since=0)
    reopened = bumped(conv, status="open")
    assert tracker.changes(1, reopened, created_since=0) == [
        "conversation.status_changed",
        "conversation.updated",
    ]
    reassigned = bumped(reopened)
    reassigned["meta"] = {**reassigned["meta"], "assignee": {"id": 2}}
    assert tracker.changes(1, reassigned, created_since=0) == [
        "assignee.changed",
        "conversation.updated",
    ]


def test_message_bump_alone_emits_nothing_but_is_remembered():
    """A newer updated_at with no significant change (a new message) is not an event."""
    tracker = ConversationTracker()
    conv = rest_conversation()
    tracker.changes(1, conv, created_since=0)
    newer = bumped(conv, unread_count=5)
    assert tracker.changes(1, newer, created_since=0) == []
    assert tracker.version(1, 42) == newer["updated_at"]


def test_contact_read_is_conversation_read():
    """contact_last_seen_at moving forward stands for conversation.read."""
    tracker = ConversationTracker()
    conv = rest_conversation()
    tracker.changes(1, conv, created_since=0)
    read = bumped(conv, contact_last_seen_at=conv["contact_last_seen_at"] + 30)
    assert tracker.changes(1, read, created_since=0) == ["conversation.read"]


def test_older_or_equal_snapshots_are_ignored():
    """Snapshots not newer than what was seen produce nothing."""
    tracker = ConversationTracker()
    conv = rest_conversation()
    tracker.changes(1, conv, created_since=0)
    assert tracker.changes(1, bumped(conv, by=-5, status="open"), created_since=0) == []
    assert tracker.changes(1, conv, created_since=0) == []


def test_cable_events_feed_the_tracker():
    """A published conversation event sets the snapshot; REST then compares against it."""
    tracker = ConversationTracker()
    conv = rest_conversation()
    event = Event(
        "conversation.status_changed",
        AccountId(1),
        ConversationId(42),
        "cable",
        None,
        0.0,
        conv,
        version=conv["updated_at"],
    )
    tracker.observe(event, now=100.0)
    # the cable's snapshot is not a REST check of the messages: they still need a sync
    assert tracker.needs_sync(1, conv)
    tracker.mark_synced(1, 42, conv["updated_at"])
    assert not tracker.needs_sync(1, conv)
    assert tracker.active(now=150.0, window=60) == {(1, 42)}
    assert tracker.active(now=200.0, window=60) == set()
    assert (
        tracker.changes(1, bumped(conv, status="pending"), created_since=0)[0]
        == "conversation.status_changed"
    )


def test_size_is_bounded():
    """The least recently seen conversations are forgotten beyond the size."""
    tracker = ConversationTracker(size=2)
    for conv_id in (1, 2, 3):
        tracker.observe(
            Event("message.created", AccountId(1), ConversationId(conv_id), "cable", None, 0.0, {}),
            now=0,
        )
    assert len(tracker) == 2
    assert tracker.active(now=0, window=1) == {(1, 2), (1, 3)}
