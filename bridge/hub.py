"""Fan-out of published entries to local subscribers.

Each entry is encoded once (``Entry.text``, plus per-transport bytes cached on the
entry) and offered to every subscriber whose filter matches. Offering never blocks:
a subscriber that cannot take more says so and is dropped as a slow consumer
(centrifuge ``DisconnectSlow``, anycable's bounded send channel), so one slow client
never delays the others. The hub knows nothing of aiohttp or upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from bridge.clientproto import ConversationRef
from bridge.events import Entry, Event


class Selector(Protocol):
    """Which events a subscriber gets (its filter within its scope)."""

    @property
    def conversations(self) -> frozenset[ConversationRef] | None:
        """Conversations it names, if any."""
        ...

    def matches(self, event: Event) -> bool:
        """Whether it gets ``event``."""
        ...


class Subscriber(Protocol):
    """A local client as the hub sees it (anycable's ``HubSession``)."""

    @property
    def filter(self) -> Selector:
        """What the client wants and may see; may change during its life."""
        ...

    def deliver(self, entry: Entry) -> bool:
        """Queue an event frame without blocking; False when the client is too far behind."""
        ...

    def send_control(self, text: str) -> bool:
        """Queue a control frame (status, pong, error) in order with events."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Ask the client's connection to close; returns at once."""
        ...


SLOW_CONSUMER = 4029
GOING_AWAY = 1001


class Hub:
    """The registry of subscribers and the publish loop.

    Args:
        on_slow: called with each subscriber dropped as a slow consumer (for metrics).
    """

    def __init__(self, on_slow: Callable[[Subscriber], None] | None = None) -> None:
        self._subscribers: dict[Subscriber, None] = {}
        self._on_slow = on_slow
        # Told whenever a subscriber comes or goes (the poller pauses without clients).
        self.on_change: list[Callable[[], None]] = []

    # Public methods

    @contextmanager
    def subscription(self, subscriber: Subscriber) -> Iterator[None]:
        """Register ``subscriber`` for the duration of the block; always deregisters."""
        self._subscribers[subscriber] = None
        self._changed()
        try:
            yield
        finally:
            self._subscribers.pop(subscriber, None)
            self._changed()

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, entry: Entry) -> int:
        """Offer ``entry`` to every matching subscriber; return how many took it."""
        delivered = 0
        slow: list[Subscriber] = []
        event = entry.event
        for subscriber in self._subscribers:
            if subscriber.filter.matches(event):
                if subscriber.deliver(entry):
                    delivered += 1
                else:
                    slow.append(subscriber)
        for subscriber in slow:
            self._drop_slow(subscriber)
        return delivered

    def broadcast(self, text: str) -> None:
        """Send a control frame (``status``) to every subscriber."""
        slow = [s for s in self._subscribers if not s.send_control(text)]
        for subscriber in slow:
            self._drop_slow(subscriber)

    def close_all(self, code: int = GOING_AWAY, reason: str = "shutting down") -> None:
        """Ask every subscriber to close (shutdown)."""
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

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def _drop_slow(self, subscriber: Subscriber) -> None:
        if self._subscribers.pop(subscriber, False) is None:
            subscriber.close(SLOW_CONSUMER, "slow consumer")
            if self._on_slow is not None:
                self._on_slow(subscriber)
