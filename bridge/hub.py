"""Fan-out of published entries to local subscribers.

Each entry is encoded once (``Entry.text``, plus per-transport bytes cached on the
entry) and offered to every subscriber whose filter matches. Offering never blocks:
a subscriber that cannot take more says so and is dropped as a slow consumer
(centrifuge ``DisconnectSlow``, anycable's bounded send channel), so one slow client
never delays the others. The hub knows nothing of aiohttp or upstream.

Under bursts the hub *coalesces*: an entry published less than a window after the last
fan-out waits for the window's end and goes out with the others that came meanwhile, as
one :class:`Batch` (one socket write per client). The window adapts to the load: none
at or below :attr:`Coalescing.above` events/s, then 0.2 µs per delivery per second
(events/s times subscribers) between ``min_window`` and ``max_window`` (10 to 50 ms). An
entry arriving after a quiet window goes out at once, so a steady trickle is never delayed
(centrifuge's write-delay batching, made adaptive).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.clientproto import ConversationRef
from bridge.events import Entry, Event


class Selector(Protocol):
    """Which events a subscriber gets (its filter within its scope)."""

    @property
    def conversations(self) -> frozenset[ConversationRef] | None:
        """Conversations it names, if any."""
        ...

    @property
    def everything(self) -> bool:
        """Whether it gets every event (the hub then skips ``matches``)."""
        ...

    def matches(self, event: Event) -> bool:
        """Whether it gets ``event``."""
        ...


class Batch:
    """Entries offered to a subscriber together (one write), with its encodings cached
    per transport like :attr:`Entry.cache`; shared by the subscribers that get all of it."""

    __slots__ = ("cache", "entries")

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = entries
        self.cache: dict[str, bytes] = {}

    def encoded(self, key: str, encode: Callable[[Entry], bytes]) -> bytes:
        """The entries' encodings back to back (one write), built once per batch."""
        data = self.cache.get(key)
        if data is None:
            entries = self.entries
            if len(entries) == 1:
                data = encode(entries[0])
            else:
                data = b"".join([encode(entry) for entry in entries])
            self.cache[key] = data
        return data


class Scheduler(Protocol):
    """The clock and timer the hub coalesces with (an asyncio loop is one)."""

    def time(self) -> float:
        """Monotonic seconds."""
        ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> object:
        """Run ``callback`` at ``when``."""
        ...


@dataclass
class Coalescing:
    """The adaptive window: how long entries may wait to go out together.

    The window follows the fan-out's load, deliveries per second (event rate times
    subscribers): ``per_delivery`` seconds of window per delivery/s, between ``min_window``
    and ``max_window``. What a fan-out costs is about one socket write per client, so it is
    the deliveries, not the events, that call for batching: 50 events/s is light for 100
    clients and a full core for 5,000.

    Args:
        max_window: the longest wait (s); 0 turns coalescing off.
        min_window: the wait once coalescing starts (s).
        above: the event rate (per s) at or below which there is no window.
        per_delivery: window (s) per delivery per second.
    """

    max_window: float = 0.050
    min_window: float = 0.010
    above: float = 10.0
    per_delivery: float = 2e-7
    # Smoothed seconds between events (exponential moving average over ~10 events).
    _gap: float = field(default=1.0, init=False)
    _last: float | None = field(default=None, init=False)

    def window(self, now: float, subscribers: int) -> float:
        """Note an event at ``now``; the window for the current load (0: none)."""
        if self._last is not None:
            self._gap += 0.1 * (min(now - self._last, 1.0) - self._gap)
        self._last = now
        if self.max_window <= 0 or self._gap * self.above >= 1.0:
            return 0.0
        deliveries = subscribers / max(self._gap, 1e-6)
        return min(self.max_window, max(self.min_window, deliveries * self.per_delivery))


class Subscriber(Protocol):
    """A local client as the hub sees it (anycable's ``HubSession``)."""

    @property
    def filter(self) -> Selector:
        """What the client wants and may see; may change during its life."""
        ...

    def deliver(self, batch: Batch) -> bool:
        """Queue event frames without blocking; False when the client is too far behind."""
        ...

    def send_control(self, text: str) -> bool:
        """Queue a control frame (status, pong, error) in order with events."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Ask the client's connection to close; returns at once."""
        ...


SLOW_CONSUMER = 4029
GOING_AWAY = 1001
# Entries (and their text) waiting for a window, at most: reaching either sends them at
# once. This also bounds a batch, so one write stays small next to a client's buffer limit.
MAX_PENDING = 1024
MAX_PENDING_BYTES = 64 * 1024


class _Subscription:
    """The ``with`` block of :meth:`Hub.subscription`: a class rather than a generator
    context manager, whose suspended frame each connected client would hold for its life
    (memory per idle client, docs/benchmarks.md)."""

    __slots__ = ("hub", "subscriber")

    def __init__(self, hub: Hub, subscriber: Subscriber) -> None:
        self.hub = hub
        self.subscriber = subscriber

    def __enter__(self) -> None:
        self.hub.subscribe(self.subscriber)

    def __exit__(self, *exc: object) -> None:
        self.hub.unsubscribe(self.subscriber)


class Hub:
    """The registry of subscribers and the publish loop.

    Args:
        on_slow: called with each subscriber dropped as a slow consumer (for metrics).
        on_fanout: called after each fan-out with its entries and the frames delivered.
        scheduler: clock and timer for coalescing; without one, every entry goes out at once.
        coalescing: the window policy (default :class:`Coalescing`).
    """

    def __init__(
        self,
        on_slow: Callable[[Subscriber], None] | None = None,
        *,
        on_fanout: Callable[[Sequence[Entry], int], None] | None = None,
        scheduler: Scheduler | None = None,
        coalescing: Coalescing | None = None,
    ) -> None:
        self._subscribers: dict[Subscriber, None] = {}
        self._on_slow = on_slow
        # Told after each fan-out (metrics).
        self.on_fanout = on_fanout
        self._scheduler = scheduler
        self._coalescing = coalescing or Coalescing()
        self._pending: list[Entry] | None = None
        self._pending_bytes = 0
        self._last_fanout = float("-inf")
        # Told whenever a subscriber comes or goes (the poller pauses without clients).
        self.on_change: list[Callable[[], None]] = []

    # Public methods

    def subscription(self, subscriber: Subscriber) -> _Subscription:
        """Register ``subscriber`` for the duration of a ``with`` block; always deregisters."""
        return _Subscription(self, subscriber)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Register ``subscriber`` (prefer :meth:`subscription`)."""
        self._subscribers[subscriber] = None
        self._changed()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Deregister ``subscriber``; no-op when it is not registered."""
        self._subscribers.pop(subscriber, None)
        self._changed()

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, entry: Entry) -> None:
        """Offer ``entry`` to every matching subscriber, now or at the window's end."""
        scheduler = self._scheduler
        if scheduler is None:
            self._fanout([entry])
            return
        now = scheduler.time()
        window = self._coalescing.window(now, len(self._subscribers))
        if self._pending is not None:
            self._pending.append(entry)
            self._pending_bytes += len(entry.text)
            if len(self._pending) >= MAX_PENDING or self._pending_bytes >= MAX_PENDING_BYTES:
                self.flush()
        elif now - self._last_fanout >= window:
            self._last_fanout = now
            self._fanout([entry])
        else:
            self._pending, self._pending_bytes = [entry], len(entry.text)
            scheduler.call_at(self._last_fanout + window, self.flush)

    def flush(self) -> None:
        """Fan out what is waiting for the window (also before control frames and closes)."""
        pending, self._pending = self._pending, None
        if pending:
            if self._scheduler is not None:
                self._last_fanout = self._scheduler.time()
            self._fanout(pending)

    def broadcast(self, text: str) -> None:
        """Send a control frame (``status``) to every subscriber, after waiting events."""
        self.flush()
        slow = [s for s in self._subscribers if not s.send_control(text)]
        for subscriber in slow:
            self._drop_slow(subscriber)

    def close_all(self, code: int = GOING_AWAY, reason: str = "shutting down") -> None:
        """Ask every subscriber to close (shutdown), after waiting events."""
        self.flush()
        for subscriber in list(self._subscribers):
            subscriber.close(code, reason)

    def watched_conversations(self) -> set[ConversationRef]:
        """Conversations named in any subscriber's filter: *active* for polling."""
        watched: set[ConversationRef] = set()
        for subscriber in self._subscribers:
            if subscriber.filter.conversations:
                watched.update(subscriber.filter.conversations)
        return watched

    # Private methods

    def _fanout(self, entries: list[Entry]) -> None:
        """One :class:`Batch` per subscriber: the shared one when it gets every entry."""
        delivered = 0
        slow: list[Subscriber] = []
        shared = Batch(entries)
        if len(entries) == 1:
            event = entries[0].event
            for subscriber in self._subscribers:
                selector = subscriber.filter
                if selector.everything or selector.matches(event):
                    if subscriber.deliver(shared):
                        delivered += 1
                    else:
                        slow.append(subscriber)
        else:
            events = [entry.event for entry in entries]
            for subscriber in self._subscribers:
                selector = subscriber.filter
                if selector.everything:
                    mine = entries
                else:
                    matches = selector.matches
                    mine = [e for e, event in zip(entries, events, strict=True) if matches(event)]
                    if not mine:
                        continue
                if subscriber.deliver(shared if len(mine) == len(entries) else Batch(mine)):
                    delivered += len(mine)
                else:
                    slow.append(subscriber)
        for subscriber in slow:
            self._drop_slow(subscriber)
        if self.on_fanout is not None:
            self.on_fanout(entries, delivered)

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def _drop_slow(self, subscriber: Subscriber) -> None:
        if self._subscribers.pop(subscriber, False) is None:
            subscriber.close(SLOW_CONSUMER, "slow consumer")
            if self._on_slow is not None:
                self._on_slow(subscriber)
