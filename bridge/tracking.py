"""What the bridge knows of each conversation: its newest snapshot and its activity.

Fed by every published event, whatever its source. The poller asks it two things:
which conversations are *active* (recent activity), and, for a REST snapshot, which
events Chatwoot would have sent for the change since the last snapshot (a status
change is ``conversation.status_changed`` plus ``conversation.updated``, an assignment
adds ``assignee.changed``, chatwoot.md §2.3). Bounded (least recently seen out). Pure.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.events import CONVERSATION_STATE_EVENTS, Event
from bridge.normalise import as_id, parse_time


Key = tuple[int, int]

# The fields whose change makes Chatwoot send conversation.updated (chatwoot.md §2.3).
SIGNIFICANT = (
    "status",
    "priority",
    "labels",
    "snoozed_until",
    "custom_attributes",
    "additional_attributes",
    "waiting_since",
    "first_reply_created_at",
)


def _meta_id(conversation: Mapping[str, Any], key: str) -> int | None:
    meta = conversation.get("meta")
    node = meta.get(key) if isinstance(meta, Mapping) else None
    return as_id(node.get("id")) if isinstance(node, Mapping) else None


def signature(conversation: Mapping[str, Any]) -> str:
    """The significant state of a push-shaped conversation, as a comparable string."""
    values = [conversation.get(name) for name in SIGNIFICANT]
    values += [_meta_id(conversation, "assignee"), _meta_id(conversation, "team")]
    return json.dumps(values, sort_keys=True, default=str)


@dataclass(slots=True)
class Known:
    """The newest snapshot of one conversation."""

    version: float | None = None
    status: object = None
    assignee_id: int | None = None
    team_id: int | None = None
    contact_last_seen_at: float | None = None
    signature: str | None = None
    # The newest snapshot whose messages REST has checked (the cable's word is not enough:
    # it may have lost some while delivering later ones).
    synced: float | None = None
    # When REST first showed a state the bridge had not published (settle timer).
    differs_since: float | None = None
    # Wall time of the last event about this conversation (any kind).
    last_activity: float = 0.0
    # The conversation's inbox, when an event or a REST answer named it (for inbox scopes).
    inbox_id: int | None = None


class ConversationTracker:
    """Snapshots and activity of conversations.

    Args:
        size: conversations remembered.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[Key, Known] = OrderedDict()

    # Public methods

    def observe(self, event: Event, now: float) -> None:
        """Learn from a published event."""
        if event.conversation_id is None:
            return
        known = self._touch((event.account_id, event.conversation_id))
        known.last_activity = now
        if event.inbox_id is not None:
            known.inbox_id = event.inbox_id
        version = event.version
        if (
            event.name in CONVERSATION_STATE_EVENTS
            and version is not None
            and (known.version is None or version >= known.version)
        ):
            self._absorb(known, event.data, version)

    def version(self, account_id: int, conversation_id: int) -> float | None:
        """The newest ``updated_at`` seen for the conversation."""
        known = self._items.get((account_id, conversation_id))
        return None if known is None else known.version

    def inbox(self, account_id: int, conversation_id: int) -> int | None:
        """The conversation's inbox, when known."""
        known = self._items.get((account_id, conversation_id))
        return None if known is None else known.inbox_id

    def note_inbox(self, account_id: int, conversation_id: int, inbox_id: int) -> None:
        """Remember a conversation's inbox (from a REST answer)."""
        self._touch((account_id, conversation_id)).inbox_id = inbox_id

    def needs_sync(self, account_id: int, conversation: Mapping[str, Any]) -> bool:
        """Whether a snapshot is newer than the last one whose messages REST checked."""
        version = parse_time(conversation.get("updated_at"))
        known = self._items.get((account_id, as_id(conversation.get("id")) or 0))
        synced = None if known is None else known.synced
        return version is not None and (synced is None or version > synced)

    def pending(self, account_id: int, conversation_id: int) -> bool:
        """Whether REST showed a difference that is still waiting out the settle time."""
        known = self._items.get((account_id, conversation_id))
        return known is not None and known.differs_since is not None

    def mark_synced(self, account_id: int, conversation_id: int, version: float) -> None:
        """REST checked every message of the conversation up to this snapshot."""
        known = self._touch((account_id, conversation_id))
        known.synced = max(version, known.synced or version)

    def changes(
        self,
        account_id: int,
        conversation: Mapping[str, Any],
        created_since: float,
        *,
        now: float = 0.0,
        settle: float = 0.0,
    ) -> list[str]:
        """The events a newer REST snapshot stands for, and remember it.

        Args:
            account_id: the account.
            conversation: the snapshot, in the push shape.
            created_since: a conversation unknown until now and created after this time is
                announced as ``conversation.created``.
            now: the time of the snapshot.
            settle: a difference is only reported once it has lasted this long; the cable
                usually delivers it meanwhile (reconciliation while live). A busy
                conversation keeps changing, so the wait counts from when the difference
                was first seen, not from the snapshot's age.
        """
        conversation_id = as_id(conversation.get("id"))
        version = parse_time(conversation.get("updated_at"))
        if conversation_id is None or version is None:
            return []
        key = (account_id, conversation_id)
        known = self._items.get(key)
        if known is not None and known.version is not None and version <= known.version:
            return []
        names: list[str] = []
        if known is None or known.signature is None:
            created = parse_time(conversation.get("created_at"))
            names = [
                "conversation.created"
                if created and created >= created_since
                else "conversation.updated"
            ]
        else:
            if conversation.get("status") != known.status:
                names.append("conversation.status_changed")
            if _meta_id(conversation, "assignee") != known.assignee_id:
                names.append("assignee.changed")
            if _meta_id(conversation, "team") != known.team_id:
                names.append("team.changed")
            seen = parse_time(conversation.get("contact_last_seen_at"))
            if seen is not None and (
                known.contact_last_seen_at is None or seen > known.contact_last_seen_at
            ):
                names.append("conversation.read")
            if signature(conversation) != known.signature:
                names.append("conversation.updated")
        known = self._touch(key)
        if names and settle > 0:
            if known.differs_since is None:
                known.differs_since = now
            if now - known.differs_since < settle:
                return []
        known.differs_since = None
        self._absorb(known, conversation, version)
        return names

    def active(self, now: float, window: float) -> set[Key]:
        """Conversations with an event within the last ``window`` seconds."""
        return {key for key, known in self._items.items() if now - known.last_activity <= window}

    def __len__(self) -> int:
        return len(self._items)

    # Private methods

    def _touch(self, key: Key) -> Known:
        known = self._items.get(key)
        if known is None:
            known = self._items[key] = Known()
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return known

    @staticmethod
    def _absorb(known: Known, conversation: Mapping[str, Any], version: float) -> None:
        known.differs_since = None
        known.version = version
        known.status = conversation.get("status")
        known.assignee_id = _meta_id(conversation, "assignee")
        known.team_id = _meta_id(conversation, "team")
        known.contact_last_seen_at = parse_time(conversation.get("contact_last_seen_at"))
        known.signature = signature(conversation)
