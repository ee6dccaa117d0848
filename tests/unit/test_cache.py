"""The message cache: per-conversation bound, TTL, conversation bound, cursors, hits/misses."""

from bridge.cache import MessageCache


def msg(i: int, **extra) -> dict:
    return {"id": i, "content": f"m{i}", **extra}


def test_cursor_is_the_highest_id_even_after_eviction():
    """Only the latest max_messages are kept, but the cursor remembers the highest id."""
    cache = MessageCache(max_messages=3, ttl=60)
    for i in (5, 1, 9, 7, 3):
        cache.record(1, 42, msg(i), now=0)
    assert cache.ids(1, 42, now=1) == [5, 7, 9]
    assert cache.cursor(1, 42, now=1) == 9
    assert cache.messages_held == 3


def test_ttl_expires_a_conversation_after_its_last_write():
    """After ttl seconds without a write, the conversation is gone (a miss)."""
    cache = MessageCache(max_messages=10, ttl=60)
    cache.record(1, 42, msg(1), now=0)
    cache.record(1, 42, msg(2), now=50)
    assert cache.cursor(1, 42, now=109) == 2
    assert cache.cursor(1, 42, now=111) is None
    assert cache.messages_held == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_sweep_drops_expired_conversations():
    """sweep removes what expired and keeps what did not."""
    cache = MessageCache(max_messages=10, ttl=10)
    cache.record(1, 1, msg(1), now=0)
    cache.record(1, 2, msg(2), now=5)
    assert cache.sweep(now=12) == 1
    assert len(cache) == 1


def test_conversation_bound_evicts_least_recently_written():
    """At most max_conversations; the least recently written goes first."""
    cache = MessageCache(max_messages=10, ttl=60, max_conversations=2)
    cache.record(1, 1, msg(1), now=0)
    cache.record(1, 2, msg(2), now=0)
    cache.record(1, 1, msg(3), now=1)
    cache.record(1, 3, msg(4), now=2)
    assert cache.cursor(1, 2, now=3) is None
    assert cache.cursor(1, 1, now=3) == 3
    assert len(cache) == 2


def test_replacing_a_message_updates_it_and_sizes_add_up():
    """A message recorded again (status change) replaces the old copy; bytes are tracked."""
    cache = MessageCache(max_messages=10, ttl=60)
    cache.record(1, 1, msg(1, status="sent"), now=0, size=100)
    cache.record(1, 1, msg(1, status="read"), now=0, size=120)
    cache.record(1, 1, msg(2), now=0, size=50)
    assert cache.get(1, 1, 1, now=0)["status"] == "read"
    assert cache.bytes_held == 170
    assert cache.messages_held == 2


def test_history_is_served_only_from_a_verified_range():
    """Pages come from the cache only inside what REST vouched for."""
    cache = MessageCache(max_messages=100, ttl=60)
    for i in range(1, 31):
        cache.record(1, 1, msg(i), now=0)
    assert cache.messages(1, 1, now=0) is None  # cable-fed only: a message may be missing
    cache.mark_verified(1, 1, 11, 30, now=0)
    assert [m["id"] for m in cache.messages(1, 1, now=0, limit=5)] == [26, 27, 28, 29, 30]
    assert [m["id"] for m in cache.messages(1, 1, now=0, before=25, limit=5)] == [
        20,
        21,
        22,
        23,
        24,
    ]
    assert cache.messages(1, 1, now=0, before=15, limit=10) is None  # 1..10 not vouched for
    cache.record(1, 1, msg(31), now=0)
    assert cache.messages(1, 1, now=0) is None  # 31 came unverified
    cache.mark_verified(1, 1, 1, 31, now=0)  # the whole conversation, from its start
    assert [m["id"] for m in cache.messages(1, 1, now=0, before=4)] == [1, 2, 3]
    assert (cache.hits, cache.misses) == (3, 3)


def test_verified_ranges_merge_and_shrink_with_eviction():
    """Adjacent ranges merge; evicting the oldest messages moves the range's start."""
    cache = MessageCache(max_messages=5, ttl=60)
    for i in range(1, 6):
        cache.record(1, 1, msg(i), now=0)
    cache.mark_verified(1, 1, 4, 5, now=0)
    cache.mark_verified(1, 1, 1, 3, now=0)
    assert [m["id"] for m in cache.messages(1, 1, now=0, limit=5)] == [1, 2, 3, 4, 5]
    cache.record(1, 1, msg(6), now=0)  # evicts 1; 6 is unverified
    cache.mark_verified(1, 1, 6, 6, now=0)
    assert cache.messages(1, 1, now=0, limit=5) is not None
    assert cache.messages(1, 1, now=0, before=3, limit=5) is None  # 1 is gone, 2 alone


def test_lookups_are_reported():
    """Hits and misses reach the on_lookup callback (metrics)."""
    seen: list[tuple[bool, tuple[int, int]]] = []
    cache = MessageCache(
        max_messages=10, ttl=60, on_lookup=lambda hit, key: seen.append((hit, key))
    )
    cache.cursor(1, 1, now=0)
    cache.record(1, 1, msg(1), now=0)
    cache.cursor(1, 1, now=0)
    assert seen == [(False, (1, 1)), (True, (1, 1))]


def test_messages_without_integer_ids_are_ignored():
    """Odd rows do not enter the cache."""
    cache = MessageCache(max_messages=10, ttl=60)
    cache.record(1, 1, {"id": "x"}, now=0)
    cache.record(1, 1, {"id": True}, now=0)
    assert len(cache) == 0


def test_replacing_a_message_keeps_the_range_and_refused_ones_shrink_it():
    """A status update is not an eviction; a message refused for lack of room is."""
    cache = MessageCache(max_messages=3, ttl=60)
    for i in (10, 11, 12):
        cache.record(1, 1, msg(i), now=0)
    cache.mark_verified(1, 1, 1, 12, now=0)
    cache.record(1, 1, {**msg(11), "status": "read"}, now=0)
    assert [m["id"] for m in cache.messages(1, 1, now=0)] == [10, 11, 12]
    cache.record(1, 1, msg(5), now=0)  # older than all kept in a full conversation: refused
    assert cache.messages(1, 1, now=0) is None  # 5 exists and is not cached
    cache.mark_verified(1, 1, 1, 12, now=0)  # claimed again: starts above what went
    assert cache.messages(1, 1, now=0, limit=3) is not None
    assert cache.messages(1, 1, now=0, limit=5) is None
