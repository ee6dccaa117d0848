"""The event log: sequence numbers, a bounded replay buffer, dedupe and staleness.

Modelled on centrifuge's and anycable's memory streams: an ``epoch`` string that
changes when history is lost (here: on every start), a contiguous ``seq`` per
published event, and ``since(epoch, seq)`` that answers with the missed entries or a
:class:`Gap` telling the client to resync. Dedupe (same fact from two sources) and
staleness (a conversation snapshot older than one already published) are decided
here so that a shared log (Redis, SQLite) can decide them atomically too.

Pure and synchronous: no awaits, no logging, no metrics; it returns facts.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

from bridge.events import Entry, Event


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The same fact was published before (by ``dedupe_key``), first from ``first_source``
    at ``first_received_at`` (how sources compare)."""

    key: str
    first_source: str = ""
    first_received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Stale:
    """A conversation snapshot older than one already published for that conversation."""

    version: float
    newest: float


@dataclass(frozen=True, slots=True)
class Gap:
    """The client cannot resume: ``unknown_epoch`` or ``too_old``; it must refetch."""

    reason: Literal["unknown_epoch", "too_old"]


AppendResult = Entry | Duplicate | Stale


class BoundedSet:
    """A set that forgets its oldest members beyond ``size`` (an LRU of keys), each with
    a small note (here: which source delivered the fact first, and when)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str, note: tuple[str, float] = ("", 0.0)) -> None:
        self._items[key] = note
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def note(self, key: str) -> tuple[str, float]:
        return self._items.get(key, ("", 0.0))


class MemoryEventLog:
    """The in-process event log.

    Args:
        epoch: identifies this log's history; a new one is made on every start.
        size: entries kept for replay (BRIDGE_REPLAY_SIZE).
        dedupe_size: dedupe keys and conversation versions remembered.
        max_bytes: encoded bytes kept for replay (BRIDGE_REPLAY_MAX_BYTES): a few huge
            events must not hold memory that ``size`` alone would allow.
    """

    def __init__(
        self,
        epoch: str,
        size: int,
        dedupe_size: int | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if size <= 0 or max_bytes <= 0:
            raise ValueError("replay size must be positive")
        self.epoch = epoch
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.last_seq = 0
        self._entries: deque[Entry] = deque()
        self._seen = BoundedSet(dedupe_size or 5 * size)
        # (account, conversation) -> newest published updated_at, least recent first.
        self._versions: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._versions_size = dedupe_size or 5 * size

    # Public methods

    def append(self, event: Event) -> AppendResult:
        """Publish ``event`` unless it is a duplicate or stale; return the new entry."""
        if event.dedupe_key is not None and event.dedupe_key in self._seen:
            return Duplicate(event.dedupe_key, *self._seen.note(event.dedupe_key))
        if event.version is not None and event.conversation_id is not None:
            key = (event.account_id, event.conversation_id)
            newest = self._versions.get(key)
            if newest is not None and event.version < newest:
                return Stale(event.version, newest)
            self._versions[key] = max(event.version, newest or event.version)
            self._versions.move_to_end(key)
            if len(self._versions) > self._versions_size:
                self._versions.popitem(last=False)
        if event.dedupe_key is not None:
            self._seen.add(event.dedupe_key, (event.source, event.received_at))
        self.last_seq += 1
        entry = Entry.build(self.epoch, self.last_seq, event)
        self._entries.append(entry)
        self.bytes += len(entry.text)
        while len(self._entries) > self.size or (
            self.bytes > self.max_bytes and len(self._entries) > 1
        ):
            self.bytes -= len(self._entries.popleft().text)
        return entry

    def since(self, epoch: str, seq: int) -> list[Entry] | Gap:
        """Entries after ``seq`` of ``epoch``, oldest first, or why there are none."""
        if epoch != self.epoch or seq < 0 or seq > self.last_seq:
            return Gap("unknown_epoch")
        if seq == self.last_seq:
            return []
        first = self._entries[0].seq if self._entries else self.last_seq + 1
        if seq < first - 1:
            return Gap("too_old")
        return list(itertools.islice(self._entries, seq - first + 1, None))

    def seen(self, dedupe_key: str) -> bool:
        """Whether a fact with this key was published (REST gap fill asks before building)."""
        return dedupe_key in self._seen

    def version(self, account_id: int, conversation_id: int) -> float | None:
        """The newest published ``updated_at`` of a conversation, if remembered."""
        return self._versions.get((account_id, conversation_id))

    def __len__(self) -> int:
        return len(self._entries)
