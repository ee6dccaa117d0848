"""One REST pass over an account: find what changed in a time window and publish it.

``GET …/conversations?status=all&updated_within=N`` (unpaginated, chatwoot.md §4.3)
names every conversation whose ``updated_at`` moved, which includes every new message
(``touch: true``). For each conversation newer than the last snapshot REST checked,
every message of the window is read: ``after=`` pages (100 rows, until a short page)
from the newest cached message older than the window, or else the latest page and
``before=`` pages back to the window's start; usually one request. Messages the bridge
never published are published oldest first, changed ones become ``message.updated``,
then come the conversation events the snapshot stands for. The event log drops
whatever the cable already delivered, so a pass can always be repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bridge.cache import MessageCache
from bridge.errors import RestError
from bridge.events import Entry, Event
from bridge.normalise import (
    Dropped,
    as_id,
    build,
    conversation_from_rest,
    message_from_rest,
    parse_time,
)
from bridge.tracking import ConversationTracker


LATEST_PAGE = 20  # GET messages without parameters (chatwoot.md §4.4)
AFTER_PAGE = 100  # GET messages?after=
MAX_PAGES = 50  # per conversation and pass: 5,000 messages forward, 1,000 back


class RestAPI(Protocol):
    """The REST calls a pass needs (``bridge.rest.ChatwootREST`` has them)."""

    async def conversations(
        self,
        account_id: int,
        *,
        updated_within: int | None = None,
        status: str = "all",
        page: int | None = None,
    ) -> list[dict[str, Any]]:
        """Conversations of an account."""
        ...

    async def messages(
        self,
        account_id: int,
        conversation_id: int,
        *,
        after: int | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Messages of a conversation."""
        ...


Publish = Callable[[Event], Awaitable[Entry | None]]
Seen = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class PassResult:
    """What one pass over one account did."""

    conversations: int = 0
    changed: int = 0
    published: int = 0
    errors: list[RestError] = field(default_factory=list)


class Syncer:
    """Runs passes; shared by the outage poller, the gap fill and reconciliation.

    Args:
        rest: the REST API.
        cache: message cache (cursors and the last known message states).
        tracker: conversation snapshots.
        publish: the pipeline's publish (returns the entry, or None for a duplicate).
        seen: whether a dedupe key was published already.
        accounts: the bridged accounts (for ``build``'s account check).
        clock: wall clock.
    """

    def __init__(
        self,
        rest: RestAPI,
        cache: MessageCache,
        tracker: ConversationTracker,
        publish: Publish,
        seen: Seen,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.cache = cache
        self.tracker = tracker
        self.publish = publish
        self.seen = seen
        self.clock = clock

    async def sync_account(self, account_id: int, since: float, until: float) -> PassResult:
        """Publish what changed in ``account_id`` between ``since`` and ``until``.

        Messages created after ``until``, and conversation changes first seen less than
        ``now - until`` ago, are left for the next pass: reconciliation gives the cable
        the time to deliver them first, so what it publishes was really missed. A busy
        conversation is still read every pass, so its older messages are never skipped.
        Errors on single conversations are collected, not raised, so one failing
        conversation does not stop the others.

        Raises:
            RestError: when the conversation list itself fails.
        """
        now = self.clock()
        within = max(1, math.ceil(now - since) + 1)
        rows = await self.rest.conversations(account_id, updated_within=within)
        result = PassResult(conversations=len(rows))
        snapshots = []
        for row in rows:
            conv = conversation_from_rest(account_id, row)
            version = parse_time(conv.get("updated_at"))
            if version is None or not self.tracker.needs_sync(account_id, conv):
                continue
            snapshots.append((version, row, conv))
        snapshots.sort(key=lambda item: item[0])
        result.changed = len(snapshots)

        async def one(row: Mapping[str, Any], conv: dict[str, Any]) -> None:
            try:
                result.published += await self._sync_conversation(
                    account_id, row, conv, since, until
                )
            except RestError as exc:
                result.errors.append(exc)

        async with asyncio.TaskGroup() as tg:
            for _, row, conv in snapshots:
                tg.create_task(one(row, conv))
        return result

    # Private methods

    async def _sync_conversation(
        self,
        account_id: int,
        row: Mapping[str, Any],
        conv: dict[str, Any],
        since: float,
        until: float,
    ) -> int:
        conversation_id = as_id(conv.get("id"))
        if conversation_id is None:
            return 0
        published = 0
        messages, low = await self._fetch_messages(account_id, conversation_id, since)
        for message in messages:
            published += await self._message(
                account_id, conversation_id, message, row, window=(since, until)
            )
        self._vouch(account_id, conversation_id, messages, low, row)
        # Only now is the snapshot remembered: had a request failed above, the next pass
        # would still see this conversation as changed and fetch its messages again.
        now = self.clock()
        names = self.tracker.changes(
            account_id, conv, created_since=math.floor(since), now=now, settle=now - until
        )
        for name in names:
            published += await self._emit(name, conv)
        version = parse_time(conv.get("updated_at"))
        if version is not None and not self.tracker.pending(account_id, conversation_id):
            # Messages younger than ``until`` were left for the cable: check them again.
            # A difference still settling keeps the conversation unsynced, so the next
            # pass looks at it again even when nothing newer happens in it.
            self.tracker.mark_synced(account_id, conversation_id, min(version, until))
        return published

    def _vouch(
        self,
        account_id: int,
        conversation_id: int,
        messages: list[dict[str, Any]],
        low: int,
        row: Mapping[str, Any],
    ) -> None:
        """REST listed every message from ``low`` up: cache the ones missing (seen before
        but expired, or not published yet) and let history pages be served from here."""
        if not messages:
            return
        now = self.clock()
        for message in messages:
            message_id = as_id(message.get("id"))
            if (
                message_id is not None
                and self.cache.get(account_id, conversation_id, message_id, now) is None
            ):
                self.cache.record(
                    account_id, conversation_id, message_from_rest(account_id, message, row), now
                )
        high = as_id(messages[-1].get("id"))
        if high is not None:
            self.cache.mark_verified(account_id, conversation_id, low, high, now)

    async def _fetch_messages(
        self, account_id: int, conversation_id: int, since: float
    ) -> tuple[list[dict[str, Any]], int]:
        """Every message created since ``since`` (and a few older), ascending by id, and
        the lowest id from which the list is complete (1: the conversation's start).

        With a cached message older than the window, ``after=`` pages read forward from it
        (100 rows each); without one, the latest page and ``before=`` pages reach back
        until a message older than the window (20 rows each).
        """
        rest = self.rest
        start = math.floor(since)
        anchor = self.cache.anchor(account_id, conversation_id, start, self.clock())
        found: dict[int, dict[str, Any]] = {}
        if anchor is not None:
            after = anchor
            for _ in range(MAX_PAGES):
                rows = _by_id(await rest.messages(account_id, conversation_id, after=after))
                found.update(rows)
                if len(rows) < AFTER_PAGE:
                    break
                after = max(rows)  # max id, not the last row: rows are ordered by created_at
            return [found[i] for i in sorted(found)], anchor + 1
        page = _by_id(await rest.messages(account_id, conversation_id))
        found.update(page)
        low = min(found, default=1)
        for _ in range(MAX_PAGES):
            if len(page) < LATEST_PAGE:
                low = 1
                break  # the whole conversation has been read
            oldest = min(found)
            created = parse_time(found[oldest].get("created_at"))
            if created is None or created < start:
                break
            page = _by_id(await rest.messages(account_id, conversation_id, before=oldest))
            found.update(page)
            low = min(found)
        return [found[i] for i in sorted(found)], low

    async def _message(
        self,
        account_id: int,
        conversation_id: int,
        message: Mapping[str, Any],
        row: Mapping[str, Any],
        *,
        window: tuple[float, float],
    ) -> int:
        since, until = window
        message_id = as_id(message.get("id"))
        if message_id is None:
            return 0
        push = message_from_rest(account_id, message, row)
        created = parse_time(push.get("created_at")) or 0.0
        now = self.clock()
        if created > until:
            return 0  # not settled yet: the next pass sees it
        if not await self.seen(f"message.created:{message_id}"):
            # Chatwoot's created_at is whole seconds: a message of the same second as
            # ``since`` is inside the window.
            if created >= math.floor(since):
                return await self._emit("message.created", push)
            self.cache.record(account_id, conversation_id, push, now)
            return 0
        cached = self.cache.get(account_id, conversation_id, message_id, now)
        if cached is not None and _message_changed(cached, push):
            merged = dict(cached)
            merged.update(
                (k, push[k]) for k in ("status", "content", "content_attributes") if k in push
            )
            return await self._emit("message.updated", merged, version=_message_version(push))
        return 0

    async def _emit(self, name: str, data: dict[str, Any], *, version: str | None = None) -> int:
        event = build(name, data, source="poll", received_at=self.clock(), accounts=None)
        if isinstance(event, Dropped):
            return 0
        if version is not None:
            event = replace(event, dedupe_key=f"{name}:{data.get('id')}:{version}")
        return 1 if await self.publish(event) is not None else 0


def _by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Messages keyed by their id; rows without a usable id are ignored."""
    return {i: row for row in rows if (i := as_id(row.get("id"))) is not None}


def _message_changed(cached: Mapping[str, Any], fresh: Mapping[str, Any]) -> bool:
    """A status (delivery ticks), an edit or a deletion that the cable did not bring."""
    return any(cached.get(k) != fresh.get(k) for k in ("status", "content")) or _deleted(
        cached
    ) != _deleted(fresh)


def _deleted(message: Mapping[str, Any]) -> bool:
    attributes = message.get("content_attributes")
    return bool(attributes.get("deleted")) if isinstance(attributes, Mapping) else False


def _message_version(message: Mapping[str, Any]) -> str:
    """REST has no message updated_at; the visible state stands for the version."""
    content = str(message.get("content")).encode()
    digest = hashlib.blake2b(content, digest_size=6).hexdigest()
    return f"{message.get('status')}:{_deleted(message)}:{digest}"


def remember(entry: Entry, cache: MessageCache, tracker: ConversationTracker, now: float) -> None:
    """Keep the cache and the tracker up to date with a published entry, any source."""
    event = entry.event
    tracker.observe(event, now)
    if event.conversation_id is not None and event.name in ("message.created", "message.updated"):
        cache.record(event.account_id, event.conversation_id, event.data, now, size=len(entry.text))
