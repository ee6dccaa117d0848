"""Query semantics of Chatwoot's ``ConversationFinder`` and ``MessageFinder``, as pure functions.

Owns filtering, counting, sorting and paging of REST listings (``/work/shared/chatwoot.md``
§4.3-§4.4); must not render JSON or touch HTTP. Query values arrive as raw strings and are
coerced the way Rails coerces them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.simulator.entities import Conversation, Message, MessageType, User
from bridge.simulator.store import Store


# ENV CONVERSATION_RESULTS_PER_PAGE default (chatwoot.md §4.3).
CONVERSATIONS_PER_PAGE = 25
# MessageFinder limits (chatwoot.md §4.4).
LATEST_LIMIT = 20
AFTER_LIMIT = 100
BETWEEN_LIMIT = 1000

_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
_SortKey = Callable[[Conversation], Any]


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One ``ConversationFinder#perform`` result."""

    counts: dict[str, int]
    conversations: list[Conversation]


def ruby_to_i(value: str | None) -> int:
    """Ruby's ``String#to_i``: leading digits, 0 when there are none."""
    if value is None:
        return 0
    match = _LEADING_INT.match(value)
    return int(match.group(1)) if match else 0


def present(value: str | None) -> bool:
    """Ruby's ``present?`` for a query value."""
    return value is not None and value.strip() != ""


def filter_conversations(
    world: Store, user: User, account_id: int, params: Mapping[str, str]
) -> list[Conversation]:
    """Permission, inbox and status filters: the set the counts are computed on.

    Args:
        world: The database.
        user: The caller; agents only see their inboxes, admins see all.
        account_id: The account in the URL.
        params: Query string; ``status`` defaults to ``open`` and ``all`` disables it.

    Returns:
        Matching conversations, unsorted.
    """
    found = [c for c in world.conversations_in(account_id) if world.can_see(user, c)]
    inbox_id = params.get("inbox_id")
    if present(inbox_id):
        found = [c for c in found if c.inbox_id == ruby_to_i(inbox_id)]
    # filter_by_status is skipped for a content search (``q``) and for ``all``.
    status = params.get("status")
    if not present(params.get("q")) and status != "all":
        wanted = "open" if status is None else status
        found = [c for c in found if c.status == wanted]
    return found


def counts(found: list[Conversation], user: User) -> dict[str, int]:
    """``mine_count``, ``assigned_count``, ``unassigned_count``, ``all_count``."""
    mine = sum(1 for c in found if c.assignee_id == user.id)
    unassigned = sum(1 for c in found if c.assignee_id is None)
    return {
        "mine_count": mine,
        "assigned_count": len(found) - unassigned,
        "unassigned_count": unassigned,
        "all_count": len(found),
    }


def list_conversations(
    world: Store, user: User, account_id: int, params: Mapping[str, str], *, now: float
) -> ConversationPage:
    """``ConversationFinder#perform``: counts before ``assignee_type``, then sort and page.

    ``updated_within=<seconds>`` returns *every* conversation with ``updated_at > now - N`` and
    skips pagination completely (chatwoot.md §4.3).
    """
    found = filter_conversations(world, user, account_id, params)
    numbers = counts(found, user)
    assignee_type = params.get("assignee_type")
    if assignee_type == "me":
        found = [c for c in found if c.assignee_id == user.id]
    elif assignee_type == "unassigned":
        found = [c for c in found if c.assignee_id is None]
    elif assignee_type == "assigned":
        found = [c for c in found if c.assignee_id is not None]
    found = _sort(found, params.get("sort_by"))
    updated_within = params.get("updated_within")
    if present(updated_within):
        cutoff = now - ruby_to_i(updated_within)
        return ConversationPage(numbers, [c for c in found if c.updated_at > cutoff])
    # Kaminari treats missing, zero, negative and junk pages as page 1.
    page = max(ruby_to_i(params.get("page")), 1)
    start = (page - 1) * CONVERSATIONS_PER_PAGE
    return ConversationPage(numbers, found[start : start + CONVERSATIONS_PER_PAGE])


def find_messages(
    world: Store, conversation: Conversation, params: Mapping[str, str]
) -> list[Message]:
    """``MessageFinder#perform`` (chatwoot.md §4.4).

    Args:
        world: The database.
        conversation: Whose messages.
        params: ``before``, ``after`` and ``filter_internal_messages`` as raw strings.

    Returns:
        No params: the latest 20, ascending. ``before``: 20 with ``id < before``. ``after``: up
        to 100 with ``id > after`` by ``created_at``. Both: ``id >= after AND id < before`` (the
        ``after`` bound is inclusive here), up to 1000.
    """
    messages = world.messages_of(conversation)
    if present(params.get("filter_internal_messages")):
        messages = [
            m for m in messages if not m.private and m.message_type is not MessageType.ACTIVITY
        ]
    ordered = sorted(messages, key=lambda m: (m.created_at, m.id))
    after, before = params.get("after"), params.get("before")
    if present(after) and present(before):
        low, high = ruby_to_i(after), ruby_to_i(before)
        return [m for m in ordered if low <= m.id < high][:BETWEEN_LIMIT]
    if present(before):
        high = ruby_to_i(before)
        return [m for m in ordered if m.id < high][-LATEST_LIMIT:]
    if present(after):
        low = ruby_to_i(after)
        return [m for m in ordered if m.id > low][:AFTER_LIMIT]
    return ordered[-LATEST_LIMIT:]


def _sort(found: list[Conversation], sort_by: str | None) -> list[Conversation]:
    # ConversationFinder::SORT_OPTIONS, legacy names included; ties broken by id for stability.
    def activity(c: Conversation) -> Any:
        return (c.last_activity_at, c.id)

    def created(c: Conversation) -> Any:
        return (c.created_at, c.id)

    def priority(c: Conversation) -> Any:
        return (_PRIORITY_RANK.get(c.priority or "", -1), c.last_activity_at, c.id)

    def waiting(c: Conversation) -> Any:
        return (c.waiting_since is None, c.waiting_since or 0.0, c.created_at, c.id)

    options: dict[str, tuple[_SortKey, bool]] = {
        "last_activity_at_desc": (activity, True),
        "last_activity_at_asc": (activity, False),
        "created_at_desc": (created, True),
        "created_at_asc": (created, False),
        "priority_desc": (priority, True),
        "priority_asc": (priority, False),
        "waiting_since_desc": (waiting, True),
        "waiting_since_asc": (waiting, False),
        "latest": (activity, True),
        "sort_on_created_at": (created, False),
        "sort_on_priority": (priority, True),
        "sort_on_waiting_since": (waiting, False),
    }
    key, reverse = options.get(sort_by or "", options["last_activity_at_desc"])
    return sorted(found, key=key, reverse=reverse)
