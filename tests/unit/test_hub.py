"""The hub: matching, encode once, slow consumers dropped, always deregisters."""

from dataclasses import dataclass, field

from bridge.clientproto import ConversationRef, Filter
from bridge.events import AccountId, ConversationId, Entry, Event
from bridge.hub import Hub


@dataclass(eq=False)
class FakeSubscriber:
    filter: Filter = field(default_factory=Filter.make)
    capacity: int = 1000
    frames: list = field(default_factory=list)
    closed: tuple | None = None

    def deliver(self, entry: Entry) -> bool:
        if len(self.frames) >= self.capacity:
            return False
        self.frames.append(entry.text)
        return True

    def send_control(self, text: str) -> bool:
        return self.deliver(Entry(0, None, text))  # type: ignore[arg-type]

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
        assert hub.publish(e) == 1
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
