"""History and commands through the bridge, within the client's scope.

A frontend starts and pages without Chatwoot credentials: ``conversations`` (the list, with
unread counts) and ``messages`` (a conversation's latest page, or ``before`` an id) are
served from the message cache when it can vouch for the page, and read through from REST
otherwise; ``send`` (with ``echo_id``, so the page can match the ``message.created`` that
comes back), ``typing`` and ``read`` are written to Chatwoot as the bridge's user. Each
needs a command in the client's scope; Chatwoot's errors become ``upstream_error`` frames
that say what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from typing import Any, Protocol

import structlog

from bridge import clientproto as cp
from bridge.auth import Identity
from bridge.cache import MessageCache
from bridge.errors import RestError, Unauthorized
from bridge.normalise import as_id, conversation_from_rest, message_from_rest, scrub
from bridge.sync import LATEST_PAGE, RestAPI
from bridge.tracking import ConversationTracker


log = structlog.get_logger("bridge.commands")

# The scope command each request needs.
NEEDS = {
    "conversations": "history",
    "messages": "history",
    "send": "messages.create",
    "typing": "typing",
    "read": "conversations.read",
}
PAGE = LATEST_PAGE  # Chatwoot's messages page


class CommandAPI(RestAPI, Protocol):
    """The REST calls commands make, beyond a pass's reads (``bridge.rest.ChatwootREST``
    has them)."""

    async def conversation(self, account_id: int, conversation_id: int) -> dict[str, Any]: ...

    async def create_message(
        self,
        account_id: int,
        conversation_id: int,
        *,
        content: str,
        private: bool = False,
        echo_id: str | None = None,
    ) -> dict[str, Any]: ...

    async def toggle_typing(
        self, account_id: int, conversation_id: int, *, on: bool, private: bool = False
    ) -> None: ...

    async def mark_read(self, account_id: int, conversation_id: int) -> dict[str, Any] | None: ...


class Commands:
    """Answers request frames.

    Args:
        rest: the REST API.
        cache: the message cache (history pages, filled by what REST returns).
        tracker: conversation snapshots (a conversation's inbox, for inbox scopes).
        accounts: the bridged accounts.
        clock: wall clock.
    """

    def __init__(
        self,
        rest: CommandAPI,
        cache: MessageCache,
        tracker: ConversationTracker,
        accounts: Callable[[], Container[int]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.cache = cache
        self.tracker = tracker
        self.accounts = accounts
        self.clock = clock

    async def handle(self, identity: Identity, request: cp.Request) -> dict[str, Any]:
        """The ``data`` of the result frame.

        Raises:
            ClientError: forbidden (outside the scope), upstream_error (Chatwoot refused or failed).
        """
        await self._authorize(identity, request)
        try:
            match request.kind:
                case "conversations":
                    return await self._conversations(identity, request)
                case "messages":
                    return await self._messages(request)
                case "send":
                    return await self._send(request)
                case "typing":
                    await self.rest.toggle_typing(
                        request.account_id,
                        _conversation(request),
                        on=request.on,
                        private=request.private,
                    )
                    return {}
                case "read":
                    seen = await self.rest.mark_read(request.account_id, _conversation(request))
                    if seen is None:
                        return {}
                    return {"conversation": scrub(conversation_from_rest(request.account_id, seen))}
        except RestError as exc:
            log.warning(
                "command.upstream_error", kind=request.kind, status=exc.status, outcome=exc.outcome
            )
            raise cp.ClientError("upstream_error", _explain(exc), request.ref) from None

    # Private methods

    async def _authorize(self, identity: Identity, request: cp.Request) -> None:
        scope = identity.scope
        need = NEEDS[request.kind]
        if need not in scope.commands:
            raise cp.ClientError(
                "forbidden", f"{request.kind}: your token does not allow {need}", request.ref
            )
        account = request.account_id
        if account not in self.accounts() or (
            scope.accounts is not None and account not in scope.accounts
        ):
            raise cp.ClientError(
                "forbidden", f"account {account} is outside your scope", request.ref
            )
        conversation = request.conversation_id
        if conversation is None or not scope.narrow:
            return
        if scope.conversations is not None and not any(
            ref.display_id == conversation and ref.account_id in (None, account)
            for ref in scope.conversations
        ):
            raise cp.ClientError(
                "forbidden",
                f"conversation {account}:{conversation} is outside your scope",
                request.ref,
            )
        if scope.inboxes is not None:
            inbox = self.tracker.inbox(account, conversation)
            if inbox is None:
                try:
                    inbox = as_id(
                        (await self.rest.conversation(account, conversation)).get("inbox_id")
                    )
                except RestError as exc:
                    raise cp.ClientError("upstream_error", _explain(exc), request.ref) from None
            if inbox not in scope.inboxes:
                raise cp.ClientError(
                    "forbidden",
                    f"conversation {account}:{conversation} is outside your scope",
                    request.ref,
                )

    async def _conversations(self, identity: Identity, request: cp.Request) -> dict[str, Any]:
        rows = await self.rest.conversations(
            request.account_id, status=request.status, page=request.page
        )
        scope = identity.scope
        items = []
        for row in rows:
            conv = conversation_from_rest(request.account_id, row)
            cid, inbox = as_id(conv.get("id")), as_id(conv.get("inbox_id"))
            if cid is None:
                continue
            if inbox is not None:
                self.tracker.note_inbox(request.account_id, cid, inbox)
            if scope.inboxes is not None and inbox not in scope.inboxes:
                continue
            if scope.conversations is not None and not any(
                r.display_id == cid and r.account_id in (None, request.account_id)
                for r in scope.conversations
            ):
                continue
            items.append(scrub(conv))
        return {"account_id": request.account_id, "page": request.page, "conversations": items}

    async def _messages(self, request: cp.Request) -> dict[str, Any]:
        account, conversation = request.account_id, _conversation(request)
        now = self.clock()
        cached = self.cache.messages(account, conversation, now, before=request.before, limit=PAGE)
        if cached is not None:
            return {
                "account_id": account,
                "conversation_id": conversation,
                "messages": cached,
                "source": "cache",
            }
        rows = await self.rest.messages(account, conversation, before=request.before)
        messages = sorted(
            (
                scrub(message_from_rest(account, row))
                for row in rows
                if as_id(row.get("id")) is not None
            ),
            key=lambda m: m["id"],
        )
        for message in messages:
            if self.cache.get(account, conversation, message["id"], now) is None:
                self.cache.record(account, conversation, message, now)
        if messages:
            low = 1 if len(rows) < PAGE else messages[0]["id"]
            high = messages[-1]["id"] if request.before is None else request.before - 1
            self.cache.mark_verified(account, conversation, low, high, now)
        return {
            "account_id": account,
            "conversation_id": conversation,
            "messages": messages,
            "source": "rest",
        }

    async def _send(self, request: cp.Request) -> dict[str, Any]:
        created = await self.rest.create_message(
            request.account_id,
            _conversation(request),
            content=request.content,
            private=request.private,
            echo_id=request.echo_id,
        )
        message = scrub(message_from_rest(request.account_id, created))
        if request.echo_id is not None:
            message.setdefault("echo_id", request.echo_id)
        return {"message": message}


def _conversation(request: cp.Request) -> int:
    if request.conversation_id is None:  # the parser requires it for these kinds
        raise cp.ClientError("bad_request", "conversation_id is required", request.ref)
    return request.conversation_id


def _explain(exc: RestError) -> str:
    if isinstance(exc, Unauthorized):
        return "Chatwoot refused the bridge's token (401)"
    if exc.status is not None:
        return f"Chatwoot answered {exc.status} ({exc.outcome})"
    return f"Chatwoot did not answer ({exc.outcome})"
