"""The hub: matching, encode once, slow consumers dropped, always deregisters, and
coalescing under bursts."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bridge.clientproto import ConversationRef, Filter
from bridge.events import AccountId, ConversationId, Entry, Event
from bridge.hub import MAX_PENDING, MAX_PENDING_BYTES, Batch, Coalescing, Hub


@dataclass(eq=False)
class FakeSubscriber:
    filter: Filter = field(default_factory=Filter.make)
    capacity: int = 1000
    frames: list = field(default_factory=list)
    batches: list = field(default_factory=list)
    closed: tuple | None = None

    def deliver(self, batch: Batch) -> bool:
        if len(self.frames) + len(batch.entries) > self.capacity:
            return False
        self.batches.append(batch)
        self.frames.extend(entry.text for entry in batch.entries)
        return True

    def send_control(self, text: str) -> bool:
        return self.deliver(Batch([Entry(0, None, text)]))  # type: ignore[arg-type]

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@dataclass
class FakeScheduler:
    """A clock moved by hand and the timers set on it."""

    now: float = 100.0
    timers: list = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> None:
        self.timers.append((when, callback))

    def advance(self, seconds: float) -> None:
        """Move the clock, running the timers that come due."""
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _when, callback in sorted(due, key=lambda t: t[0]):
            callback()

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def entry(seq: int, account: int = 1, conv: int = 42) -> Entry:
    event = Event(
        "message.created", AccountId(account), ConversationId(conv), "cable", None, 0.0, {}
    )
    return Entry.build("ep", seq, event)


def test_publish_reaches_matching_subscribers_with_the_same_text():
    """Matching subscribers get the one shared encoding; others nothing."""
    hub = Hub()
    a, b = FakeSubscriber(), FakeSubscriber(Filter.make(accounts=frozenset({2})))
    with hub.subscription(a), hub.subscription(b):
        e = entry(1)
        hub.publish(e)
    assert a.frames == [e.text]
    assert a.frames[0] is e.text
    assert b.frames == []


def test_slow_subscriber_is_dropped_with_4029_and_others_continue():
    """A subscriber that cannot take more is closed and deregistered."""
    dropped = []
    hub = Hub(on_slow=dropped.append)
    slow, fast = FakeSubscriber(capacity=1), FakeSubscriber()
    with hub.subscription(slow), hub.subscription(fast):
        for seq in range(1, 4):
            hub.publish(entry(seq))
        assert len(hub) == 1
    assert slow.closed == (4029, "slow consumer")
    assert dropped == [slow]
    assert len(slow.frames) == 1
    assert len(fast.frames) == 3


def test_subscription_always_deregisters():
    """Leaving the block (even by exception) removes the subscriber."""
    hub = Hub()
    sub = FakeSubscriber()
    try:
        with hub.subscription(sub):
            assert len(hub) == 1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(hub) == 0


def test_broadcast_and_close_all():
    """Control frames go to everyone; close_all asks everyone to close."""
    hub = Hub()
    a, b = FakeSubscriber(Filter.make(accounts=frozenset({9}))), FakeSubscriber()
    with hub.subscription(a), hub.subscription(b):
        hub.broadcast('{"type":"status"}')
        hub.close_all()
    assert a.frames == b.frames == ['{"type":"status"}']
    assert a.closed == b.closed == (1001, "shutting down")


def test_watched_conversations_is_the_union_of_filters():
    """Conversations named in filters are the active ones."""
    hub = Hub()
    a = FakeSubscriber(
        Filter.make(conversations=frozenset({ConversationRef(1), ConversationRef(2, 1)}))
    )
    b = FakeSubscriber(Filter.make(conversations=frozenset({ConversationRef(3)})))
    c = FakeSubscriber()
    with hub.subscription(a), hub.subscription(b), hub.subscription(c):
        assert hub.watched_conversations() == {
            ConversationRef(1),
            ConversationRef(2, 1),
            ConversationRef(3),
        }


def test_on_fanout_reports_entries_and_deliveries():
    """The metrics hook sees each fan-out's entries and the frames delivered."""
    seen = []
    hub = Hub(on_fanout=lambda entries, n: seen.append(([e.seq for e in entries], n)))
    a, b = FakeSubscriber(), FakeSubscriber(Filter.make(accounts=frozenset({2})))
    with hub.subscription(a), hub.subscription(b):
        hub.publish(entry(1))
        hub.publish(entry(2, account=2))
    assert seen == [([1], 1), ([2], 2)]


@pytest.mark.parametrize(
    ("rate", "subscribers", "window"),
    [
        (2.0, 5000, 0.0),  # a trickle: none, whatever the clients
        (9.0, 5000, 0.0),
        (50.0, 100, 0.010),  # light load: the shortest window
        (50.0, 1000, 0.010),
        (100.0, 1000, 0.020),  # 0.2 µs per delivery/s
        (33.0, 5000, 0.033),
        (2000.0, 100, 0.040),
        (400.0, 5000, 0.050),  # at most 50 ms
    ],
)
def test_coalescing_window_follows_the_load(rate, subscribers, window):
    """None at low event rates; above, 0.2 µs per delivery per second, 10 to 50 ms."""
    policy = Coalescing()
    got = [policy.window(i / rate, subscribers) for i in range(200)]
    assert got[-1] == pytest.approx(window, rel=0.05)


def test_coalescing_off_never_waits():
    """max_window 0: every entry goes out at once, whatever the rate."""
    policy = Coalescing(max_window=0.0)
    assert all(policy.window(i / 5000, 1000) == 0.0 for i in range(500))


def burst_hub(**kwargs) -> tuple[Hub, FakeScheduler]:
    clock = FakeScheduler()
    hub = Hub(scheduler=clock, **kwargs)
    return hub, clock


def warm_up(hub: Hub, clock: FakeScheduler, rate: float, seqs: range) -> None:
    """Publish at ``rate`` per second, then let the last window pass."""
    for seq in seqs:
        hub.publish(entry(seq))
        clock.advance(1 / rate)
    clock.advance(0.1)


def test_a_trickle_goes_out_at_once():
    """At 2 events/s there is no window: each entry is written when published."""
    hub, clock = burst_hub()
    sub = FakeSubscriber()
    with hub.subscription(sub):
        for seq in range(1, 6):
            hub.publish(entry(seq))
            assert len(sub.frames) == seq
            clock.advance(0.5)
    assert clock.timers == []
    assert [len(b.entries) for b in sub.batches] == [1] * 5


def test_a_burst_is_written_once_per_client_at_the_end_of_the_window():
    """Under a burst, entries within the window go out together: one batch per client,
    the same batch object for every client that gets all of it, a filtered client only its
    own entries, in order, nothing lost."""
    hub, clock = burst_hub()
    everything, same = FakeSubscriber(), FakeSubscriber()
    only_43 = FakeSubscriber(Filter.make(conversations=frozenset({ConversationRef(43)})))
    with hub.subscription(everything), hub.subscription(same), hub.subscription(only_43):
        warm_up(hub, clock, 1000.0, range(1, 200))  # the rate estimate climbs
        everything.batches.clear(), same.batches.clear()
        for seq in range(200, 210):
            hub.publish(entry(seq, conv=43 if seq % 2 else 42))
        assert everything.batches == []  # waiting for the window
        clock.advance(0.060)
        assert len(everything.batches) == 1
        assert everything.batches[0] is same.batches[0]
        assert [e.seq for e in everything.batches[0].entries] == list(range(200, 210))
        assert [e.seq for e in only_43.batches[-1].entries] == [201, 203, 205, 207, 209]
    assert [e.seq for b in everything.batches for e in b.entries] == list(range(200, 210))


def test_control_frames_and_close_flush_what_waits_first():
    """A status frame never overtakes an event published before it; shutdown writes the
    waiting events before asking clients to close."""
    hub, clock = burst_hub()
    sub = FakeSubscriber()
    with hub.subscription(sub):
        warm_up(hub, clock, 1000.0, range(1, 100))
        sub.frames.clear()
        hub.publish(entry(100))
        hub.publish(entry(101))
        hub.broadcast('{"type":"status"}')
        assert sub.frames[-1] == '{"type":"status"}'
        assert len(sub.frames) == 3
        hub.publish(entry(102))
        hub.publish(entry(103))
        hub.close_all()
        assert len(sub.frames) == 5
        assert sub.closed == (1001, "shutting down")


def test_waiting_entries_are_bounded():
    """At MAX_PENDING waiting entries the hub writes them at once rather than hold more."""
    hub, clock = burst_hub()
    sub = FakeSubscriber(capacity=10 * MAX_PENDING)
    with hub.subscription(sub):
        warm_up(hub, clock, 1000.0, range(1, 100))
        before = len(sub.frames)
        for seq in range(100, 100 + MAX_PENDING):
            hub.publish(Entry(seq, entry(seq).event, "{}"))
        assert len(sub.frames) == before + MAX_PENDING
        assert len(sub.batches[-1].entries) == MAX_PENDING


def test_waiting_bytes_are_bounded():
    """Large events: a batch goes out once it holds MAX_PENDING_BYTES of text."""
    hub, clock = burst_hub()
    sub = FakeSubscriber(capacity=10 * MAX_PENDING)
    big = '{"type":"event","data":"' + "x" * 10_000 + '"}'
    with hub.subscription(sub):
        warm_up(hub, clock, 1000.0, range(1, 100))
        sub.batches.clear()
        for seq in range(100, 120):
            hub.publish(Entry(seq, entry(seq).event, big))
        assert len(sub.batches) == 2
        for batch in sub.batches:
            assert MAX_PENDING_BYTES <= len(batch.entries) * len(big) < MAX_PENDING_BYTES + len(big)


def test_a_slow_client_in_a_burst_is_dropped_and_the_others_get_everything():
    """The slow-consumer rule holds for coalesced batches."""
    dropped = []
    hub, clock = burst_hub(on_slow=dropped.append)
    slow, fast = FakeSubscriber(capacity=150), FakeSubscriber()
    with hub.subscription(slow), hub.subscription(fast):
        warm_up(hub, clock, 1000.0, range(1, 300))
        clock.advance(1.0)
    assert dropped == [slow]
    assert slow.closed == (4029, "slow consumer")
    assert len(fast.frames) == 299
