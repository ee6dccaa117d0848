"""The event log: seq, bounded replay, resume and gaps, dedupe across sources, staleness."""

import pytest

from bridge.eventlog import BoundedSet, Duplicate, Gap, MemoryEventLog, Stale
from bridge.events import AccountId, ConversationId, Entry, Event


def ev(
    n: int,
    *,
    key: str | None = None,
    version: float | None = None,
    conv: int | None = 42,
    name="message.created",
    source="cable",
) -> Event:
    return Event(
        name=name,
        account_id=AccountId(1),
        conversation_id=ConversationId(conv) if conv else None,
        source=source,
        occurred_at=None,
        received_at=1000.0 + n,
        data={"n": n},
        dedupe_key=key,
        version=version,
    )


def test_seq_grows_by_one_and_frames_are_encoded_once():
    """Each published event gets the next seq and a ready frame."""
    log = MemoryEventLog("ep", 10)
    first = log.append(ev(1))
    second = log.append(ev(2))
    assert isinstance(first, Entry)
    assert isinstance(second, Entry)
    assert (first.seq, second.seq, log.last_seq) == (1, 2, 2)
    assert '"seq":2' in second.text
    assert '"epoch":"ep"' in second.text


def test_since_returns_exactly_the_missed_entries():
    """Resume returns entries after seq, oldest first."""
    log = MemoryEventLog("ep", 10)
    for n in range(1, 6):
        log.append(ev(n))
    assert [e.seq for e in log.since("ep", 2)] == [3, 4, 5]
    assert log.since("ep", 5) == []
    assert [e.seq for e in log.since("ep", 0)] == [1, 2, 3, 4, 5]


def test_buffer_is_bounded_and_old_resumes_get_too_old():
    """At the limit the oldest entries go; resuming before them is a Gap."""
    log = MemoryEventLog("ep", 3)
    for n in range(1, 8):
        log.append(ev(n))
    assert len(log) == 3
    assert [e.seq for e in log.since("ep", 4)] == [5, 6, 7]
    assert log.since("ep", 3) == Gap("too_old")
    assert log.since("ep", 0) == Gap("too_old")


@pytest.mark.parametrize(("epoch", "seq"), [("other", 1), ("ep", 99), ("ep", -1)])
def test_other_epoch_or_future_seq_is_unknown_epoch(epoch, seq):
    """A resume point this log never issued means the client must reset."""
    log = MemoryEventLog("ep", 3)
    log.append(ev(1))
    assert log.since(epoch, seq) == Gap("unknown_epoch")


def test_empty_log_resume_from_zero():
    """Resuming at 0 on an empty log is fine."""
    log = MemoryEventLog("ep", 3)
    assert log.since("ep", 0) == []


def test_duplicates_are_refused_whatever_the_source():
    """Same dedupe key from poll after cable is a duplicate; seq does not move."""
    log = MemoryEventLog("ep", 10)
    assert isinstance(log.append(ev(1, key="message.created:901")), Entry)
    assert log.append(ev(2, key="message.created:901", source="poll")) == Duplicate(
        "message.created:901", "cable", 1001.0
    )
    assert log.last_seq == 1
    assert log.seen("message.created:901")


def test_dedupe_memory_is_bounded():
    """The dedupe set forgets the oldest keys beyond its size."""
    log = MemoryEventLog("ep", 10, dedupe_size=2)
    for n in range(3):
        log.append(ev(n, key=f"k{n}"))
    assert not log.seen("k0")
    assert isinstance(log.append(ev(9, key="k0")), Entry)


def test_stale_conversation_snapshots_are_dropped():
    """An older updated_at than one published for the conversation is stale; equal is fine."""
    log = MemoryEventLog("ep", 10)
    assert isinstance(
        log.append(ev(1, version=200.5, name="conversation.status_changed", key="a")), Entry
    )
    # same version, other event name (status change emits two events): published
    assert isinstance(log.append(ev(2, version=200.5, name="conversation.updated", key="b")), Entry)
    result = log.append(ev(3, version=150.0, name="conversation.updated", key="c"))
    assert result == Stale(150.0, 200.5)
    assert log.version(1, 42) == 200.5
    # other conversation is independent
    assert isinstance(
        log.append(ev(4, version=10.0, conv=43, name="conversation.updated", key="d")), Entry
    )


def test_versions_memory_is_bounded():
    """Conversation versions are forgotten LRU beyond the size."""
    log = MemoryEventLog("ep", 10, dedupe_size=2)
    for conv in (1, 2, 3):
        log.append(ev(conv, version=5.0, conv=conv, name="conversation.updated"))
    assert log.version(1, 1) is None
    assert log.version(1, 3) == 5.0


def test_bounded_set():
    """Membership, refresh on re-add, eviction of the least recent."""
    s = BoundedSet(2)
    s.add("a")
    s.add("b")
    s.add("a")
    s.add("c")
    assert "a" in s
    assert "b" not in s
    assert len(s) == 2


def test_replay_is_bounded_in_bytes_too():
    """Big events push the oldest out before the count limit is reached."""
    log = MemoryEventLog("ep", 1000, max_bytes=3000)
    for n in range(10):
        log.append(Event("m", AccountId(1), None, "cable", None, 0.0, {"blob": "x" * 900, "n": n}))
    assert log.bytes <= 3000
    assert 1 <= len(log) <= 3
    assert log.since("ep", 0) == Gap("too_old")
    assert [e.seq for e in log.since("ep", 10 - len(log))] == list(range(11 - len(log), 11))


def test_size_must_be_positive():
    """A zero replay size is a programming error."""
    with pytest.raises(ValueError, match="positive"):
        MemoryEventLog("ep", 0)


def test_a_number_too_large_for_a_float_goes_out_as_null():
    """``1e400`` upstream decodes to infinity, which JSON cannot carry (browsers reject
    ``Infinity``): the client frame is valid JSON with null in its place."""
    import json  # noqa: PLC0415

    from bridge import actioncable  # noqa: PLC0415

    frame = actioncable.decode('{"identifier":"x","message":{"big":1e400,"ok":1.5}}')
    assert isinstance(frame, actioncable.Message)
    assert frame.payload["big"] == float("inf")

    def strict(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    event = Event(
        name="message.created",
        account_id=AccountId(1),
        conversation_id=ConversationId(2),
        source="cable",
        occurred_at=None,
        received_at=1000.0,
        data={"big": frame.payload["big"], "deep": [{"nan": float("nan")}], "ok": 1.5},
    )
    wire = json.loads(Entry.build("ep", 1, event).text, parse_constant=strict)
    assert wire["data"] == {"big": None, "deep": [{"nan": None}], "ok": 1.5}
