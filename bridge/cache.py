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
            self._forget_message(conv, next(iter(conv.messages)))

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
        """Up to ``limit`` latest messages (below ``before``), ascending; None on a miss."""
        conv = self._live((account_id, conversation_id), now)
        if conv is None or not conv.messages:
            self._count((account_id, conversation_id), hit=False)
            return None
        self._count((account_id, conversation_id), hit=True)
        ids = [i for i in conv.messages if before is None or i < before]
        return [conv.messages[i] for i in ids[-limit:]]

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

    def _forget_message(self, conv: _Conversation, message_id: int) -> None:
        del conv.messages[message_id]
        size = conv.sizes.pop(message_id, 0)
        conv.bytes -= size
        self.bytes_held -= size
        self.messages_held -= 1

    def _evict_conversations(self) -> None:
        while len(self._conversations) > self.max_conversations:
            self._drop(next(iter(self._conversations)))
