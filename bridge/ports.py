"""The two seams that a multi-node bridge will replace, and their single-node versions.

* :class:`EventStore`: where published events are sequenced, deduplicated and kept
  for resume. Today :class:`LocalEventStore` wraps the in-memory log; a Redis Streams
  or SQLite store implements the same five members.
* :class:`UpstreamLease`: who may hold the one upstream subscription. Today
  :class:`LocalLease` is always granted; a Redis lease would grant it to one node and
  tell the others when it is lost.

Both are async so that a networked implementation fits without changing callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from bridge.eventlog import AppendResult, Gap, MemoryEventLog
from bridge.events import Entry, Event


class EventStore(Protocol):
    """Sequences events and keeps them for resume."""

    @property
    def epoch(self) -> str:
        """Changes whenever history is lost; clients holding another epoch must resync."""
        ...

    @property
    def last_seq(self) -> int:
        """The seq of the newest published event (0 before the first)."""
        ...

    async def append(self, event: Event) -> AppendResult:
        """Publish unless duplicate or stale."""
        ...

    async def since(self, epoch: str, seq: int) -> list[Entry] | Gap:
        """Entries after ``epoch:seq`` or why the client must resync."""
        ...

    async def seen(self, dedupe_key: str) -> bool:
        """Whether a fact with this dedupe key was published (REST asks before paging)."""
        ...


async def missed(
    store: EventStore, since: tuple[str, int] | None, matches: Callable[[Event], bool]
) -> tuple[list[Entry], Gap | None]:
    """What a resuming client missed that it may see (``since`` is its ``epoch, seq``), or
    why it cannot resume; nothing for a fresh client."""
    if since is None:
        return [], None
    found = await store.since(*since)
    if isinstance(found, Gap):
        return [], found
    return [entry for entry in found if matches(entry.event)], None


class LocalEventStore:
    """:class:`EventStore` over :class:`~bridge.eventlog.MemoryEventLog` (one process)."""

    def __init__(self, log: MemoryEventLog) -> None:
        self.log = log

    @property
    def epoch(self) -> str:
        return self.log.epoch

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    async def append(self, event: Event) -> AppendResult:
        return self.log.append(event)

    async def since(self, epoch: str, seq: int) -> list[Entry] | Gap:
        return self.log.since(epoch, seq)

    async def seen(self, dedupe_key: str) -> bool:
        return self.log.seen(dedupe_key)


class UpstreamLease(Protocol):
    """Permission to hold the upstream subscription."""

    async def acquire(self) -> None:
        """Wait until this node holds the lease."""
        ...

    @property
    def lost(self) -> asyncio.Event:
        """Set when the lease is lost; the holder must stop its upstream at once."""
        ...

    async def release(self) -> None:
        """Give the lease up (on shutdown)."""
        ...


class LocalLease:
    """A single node always holds the lease."""

    def __init__(self) -> None:
        self._lost = asyncio.Event()

    async def acquire(self) -> None:
        return None

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    async def release(self) -> None:
        return None
