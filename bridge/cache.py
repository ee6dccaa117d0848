"""The message cache of the seed plan: the latest messages of each conversation.

At most ``max_messages`` (100) per conversation, dropped ``ttl`` (5 min) after the
conversation's last write, and at most ``max_conversations`` conversations (least
recently written first out), so memory stays bounded. It gives the poller its
``after`` cursors without a request and lets it see which message changed status.
Pure: time is passed in; hits and misses are counted here and read by the caller.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


Key = tuple[int, int]  # (account id, conversation display id)


@dataclass(slots=True)
class _Conversation:
    messages: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)
    sizes: dict[int, int] = field(default_factory=dict)
    # Highest message id ever recorded, kept when older messages are evicted: the cursor.
    max_id: int = 0
    expires_at: float = 0.0
    bytes: int = 0
    # [low, high]: every message of the conversation with an id in this range is cached
    # (REST said so); low 1 means from the conversation's start. None: nothing verified.
    verified: tuple[int, int] | None = None
    # The highest id evicted (or refused) for lack of room: nothing at or below it can be
    # vouched for any more.
    evicted_max: int = 0


class MessageCache:
    """Per-conversation bounded message store with a TTL.

    Args:
        max_messages: messages kept per conversation (BRIDGE_CACHE_MAX_MESSAGES).
        ttl: seconds a conversation is kept after its last write (BRIDGE_CACHE_TTL_MS).
        max_conversations: conversations kept at most.
        on_lookup: told of every hit (True) and miss (False) and its conversation.
    """

    def __init__(
        self,
        max_messages: int,
        ttl: float,
        max_conversations: int = 10_000,
        on_lookup: Callable[[bool, Key], None] | None = None,
    ) -> None:
        self.on_lookup = on_lookup
        self.max_messages = max_messages
        self.ttl = ttl
        self.max_conversations = max_conversations
        self.hits = 0
        self.misses = 0
        self.messages_held = 0
        self.bytes_held = 0
        self._conversations: OrderedDict[Key, _Conversation] = OrderedDict()

    # Public methods

    def record(
        self,
        account_id: int,
        conversation_id: int,
        message: Mapping[str, Any],
        now: float,
        size: int = 0,
    ) -> None:
        """Insert or replace one push-shaped message; ``size`` is its encoded length."""
        message_id = message.get("id")
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            return
        key = (account_id, conversation_id)
        conv = self._live(key, now)
        if conv is None:
            conv = self._conversations[key] = _Conversation()
            self._evict_conversations()
        self._conversations.move_to_end(key)
        conv.expires_at = now + self.ttl
        if message_id in conv.messages:
            self._forget_message(conv, message_id)
        elif len(conv.messages) >= self.max_messages and message_id < next(iter(conv.messages)):
            self._unverify_through(conv, message_id)
            return  # older than everything kept in a full conversation
        out_of_order = bool(conv.messages) and message_id < next(reversed(conv.messages))
        conv.messages[message_id] = dict(message)
        conv.sizes[message_id] = size
        conv.bytes += size
        self.messages_held += 1
        self.bytes_held += size
        if out_of_order:
            conv.messages = OrderedDict(sorted(conv.messages.items()))
        conv.max_id = max(conv.max_id, message_id)
        while len(conv.messages) > self.max_messages:
            oldest = next(iter(conv.messages))
            self._forget_message(conv, oldest)
            self._unverify_through(conv, oldest)

    def cursor(self, account_id: int, conversation_id: int, now: float) -> int | None:
        """The highest message id known for the conversation, or None (a miss)."""
        conv = self._live((account_id, conversation_id), now)
        if conv is None or conv.max_id == 0:
            self._count((account_id, conversation_id), hit=False)
            return None
        self._count((account_id, conversation_id), hit=True)
        return conv.max_id

    def anchor(
        self, account_id: int, conversation_id: int, before: float, now: float
    ) -> int | None:
        """The newest cached message created before ``before``: where ``after=`` may start.

        Reading from a message older than the window, rather than from the highest id,
        also finds the messages the cable lost *below* the highest id it delivered, and
        those whose transaction committed after a later id's (ids are allocated in order,
        rows are committed in any order).
        """
        conv = self._live((account_id, conversation_id), now)
        best = None
        if conv is not None:
            for message_id, message in reversed(conv.messages.items()):
                created = message.get("created_at")
                if isinstance(created, int | float) and created < before:
                    best = message_id
                    break
        self._count((account_id, conversation_id), hit=best is not None)
        return best

    def get(
        self, account_id: int, conversation_id: int, message_id: int, now: float
    ) -> dict[str, Any] | None:
        """One cached message (not counted as a hit or miss)."""
        conv = self._live((account_id, conversation_id), now)
        return None if conv is None else conv.messages.get(message_id)

    def messages(
        self,
        account_id: int,
        conversation_id: int,
        now: float,
        *,
        before: int | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]] | None:
        """Up to ``limit`` latest messages (below ``before``), ascending, when the cache can
        vouch for them: they lie in the REST-verified range (the cable may have lost some)
        and nothing newer than that range is cached unverified. None is a miss."""
        key = (account_id, conversation_id)
        conv = self._live(key, now)
        found = None if conv is None else self._verified_page(conv, before, limit)
        self._count(key, hit=found is not None)
        return found

    def ids(self, account_id: int, conversation_id: int, now: float) -> list[int]:
        """The cached message ids, ascending (not counted as a lookup)."""
        conv = self._live((account_id, conversation_id), now)
        return [] if conv is None else list(conv.messages)

    def mark_verified(
        self, account_id: int, conversation_id: int, low: int, high: int, now: float
    ) -> None:
        """REST listed every message of the conversation with an id in [low, high] (all
        recorded); ``low`` 1 when the listing reached the conversation's first message."""
        conv = self._live((account_id, conversation_id), now)
        low = max(low, conv.evicted_max + 1) if conv is not None else low
        if conv is None or high < low:
            return
        old = conv.verified
        if old is not None and low <= old[1] + 1 and high >= old[0] - 1:
            low, high = min(low, old[0]), max(high, old[1])
        elif old is not None and old[1] > high:
            return  # keep the newer range
        conv.verified = (low, high)

    def sweep(self, now: float) -> int:
        """Drop expired conversations; return how many went."""
        expired = [key for key, conv in self._conversations.items() if conv.expires_at <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def __len__(self) -> int:
        return len(self._conversations)

    # Private methods

    def _count(self, key: Key, *, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self.on_lookup is not None:
            self.on_lookup(hit, key)

    def _live(self, key: Key, now: float) -> _Conversation | None:
        conv = self._conversations.get(key)
        if conv is not None and conv.expires_at <= now:
            self._drop(key)
            return None
        return conv

    def _drop(self, key: Key) -> None:
        conv = self._conversations.pop(key)
        self.messages_held -= len(conv.messages)
        self.bytes_held -= conv.bytes

    @staticmethod
    def _verified_page(
        conv: _Conversation, before: int | None, limit: int
    ) -> list[dict[str, Any]] | None:
        if conv.verified is None:
            return None
        low, high = conv.verified
        top = conv.max_id if before is None else before - 1
        if top > high:
            return None  # newer messages than REST has vouched for
        ids = [i for i in conv.messages if low <= i <= top]
        if len(ids) < limit and low > 1:
            return None  # older ones exist that are not cached
        return [conv.messages[i] for i in ids[-limit:]]

    @staticmethod
    def _unverify_through(conv: _Conversation, message_id: int) -> None:
        """A message went for lack of room: the verified range now starts above it."""
        conv.evicted_max = max(conv.evicted_max, message_id)
        if conv.verified is not None and message_id >= conv.verified[0]:
            low, high = message_id + 1, conv.verified[1]
            conv.verified = (low, high) if low <= high else None

    def _forget_message(self, conv: _Conversation, message_id: int) -> None:
        del conv.messages[message_id]
        size = conv.sizes.pop(message_id, 0)
        conv.bytes -= size
        self.bytes_held -= size
        self.messages_held -= 1

    def _evict_conversations(self) -> None:
        while len(self._conversations) > self.max_conversations:
            self._drop(next(iter(self._conversations)))
