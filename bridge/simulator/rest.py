"""The Chatwoot REST subset the bridge and frontends use, on aiohttp.

Owns routing, ``api_access_token`` authentication, account/inbox permission checks, parameter
coercion and status codes (``/work/shared/chatwoot.md`` §4.1-§4.5); shapes come from ``render``
and queries from ``finders``. Must not broadcast by itself: it hands ``model`` broadcasts to the
injected ``publish`` callable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bridge.simulator import finders, render
from bridge.simulator.entities import AgentBot, Conversation, MessageType, Publish, User
from bridge.simulator.model import Actor, InvalidError, NotFoundError, World


_ACCOUNT = r"/api/v1/accounts/{account_id:\d+}"
_CONVERSATION = _ACCOUNT + r"/conversations/{display_id:\d+}"
# ActiveModel::Type::Boolean::FALSE_VALUES.
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "off", "OFF"})
_MESSAGE_TYPES = {
    "incoming": MessageType.INCOMING,
    "outgoing": MessageType.OUTGOING,
    "template": MessageType.TEMPLATE,
}


class RestApi:
    """Handlers for ``/api/v1/...``; every handler authenticates first."""

    def __init__(self, world: World, publish: Publish, *, clock: Callable[[], float]) -> None:
        self._world = world
        self._publish = publish
        self._clock = clock

    # Public methods

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the REST routes (``/conversations/meta`` before ``/{display_id}``)."""
        router.add_get("/api/v1/profile", self.profile)
        router.add_get(_ACCOUNT + "/cache_keys", self.cache_keys)
        router.add_get(_ACCOUNT + "/conversations", self.list_conversations)
        router.add_get(_ACCOUNT + "/conversations/meta", self.conversations_meta)
        router.add_get(_CONVERSATION, self.show_conversation)
        router.add_get(_CONVERSATION + "/messages", self.list_messages)
        router.add_post(_CONVERSATION + "/messages", self.create_message)
        router.add_post(_CONVERSATION + "/toggle_typing_status", self.toggle_typing_status)
        router.add_post(_CONVERSATION + "/update_last_seen", self.update_last_seen)
        router.add_post(_CONVERSATION + "/toggle_status", self.toggle_status)
        router.add_post(_CONVERSATION + "/assignments", self.assignments)

    async def profile(self, request: web.Request) -> web.Response:
        """``GET /api/v1/profile`` (§4.2); bots get 401."""
        user = self._user(request)
        accounts = [
            (a, self._world.accounts[a].name, self._world.accounts[a].created_at)
            for a in sorted(user.roles)
        ]
        return web.json_response(render.profile(user, accounts))

    async def cache_keys(self, request: web.Request) -> web.Response:
        """``GET .../cache_keys`` (§4.5), with Redis' default keys."""
        user = self._user(request)
        self._account(request, user)
        default = "0000000000"
        return web.json_response(
            {"cache_keys": {"label": default, "inbox": default, "team": default}}
        )

    async def list_conversations(self, request: web.Request) -> web.Response:
        """``GET .../conversations``: ``{"data": {"meta": counts, "payload": [...]}}`` (§4.3)."""
        user = self._user(request)
        account_id = self._account(request, user)
        now = self._clock()
        page = finders.list_conversations(self._world, user, account_id, request.query, now=now)
        payload = [self._conversation_json(c, now) for c in page.conversations]
        return web.json_response({"data": {"meta": page.counts, "payload": payload}})

    async def conversations_meta(self, request: web.Request) -> web.Response:
        """``GET .../conversations/meta``: counts only, not wrapped in ``data``."""
        user = self._user(request)
        account_id = self._account(request, user)
        found = finders.filter_conversations(self._world, user, account_id, request.query)
        return web.json_response({"meta": finders.counts(found, user)})

    async def show_conversation(self, request: web.Request) -> web.Response:
        """``GET .../conversations/{display_id}``: a bare conversation object."""
        user = self._user(request)
        conversation = self._conversation(request, user)
        return web.json_response(self._conversation_json(conversation, self._clock()))

    async def list_messages(self, request: web.Request) -> web.Response:
        """``GET .../messages`` with MessageFinder paging (§4.4)."""
        user = self._user(request)
        conversation = self._conversation(request, user)
        found = finders.find_messages(self._world, conversation, request.query)
        return web.json_response(
            {
                "meta": render.messages_meta(self._world, conversation),
                "payload": [render.message_rest(self._world, m) for m in found],
            }
        )

    async def create_message(self, request: web.Request) -> web.Response:
        """``POST .../messages``: content, private, message_type (default outgoing), echo_id."""
        actor = self._actor(request)
        conversation = self._conversation(request, actor)
        params = await _params(request)
        message_type = _message_type(params.get("message_type"))
        sender = None if message_type is MessageType.INCOMING else actor
        content = params.get("content")
        echo_id = params.get("echo_id")
        echo = None if echo_id is None else str(echo_id)
        message, broadcasts = self._world.create_message(
            conversation.account_id,
            conversation.display_id,
            now=self._clock(),
            content=None if content is None else str(content),
            message_type=message_type,
            private=_bool(params.get("private")),
            sender=sender,
            echo_id=echo,
            actor=actor,
        )
        self._publish(broadcasts)
        return web.json_response(render.message_rest(self._world, message, echo_id=echo))

    async def toggle_typing_status(self, request: web.Request) -> web.Response:
        """``POST .../toggle_typing_status``: 200 with an empty body; the caller is excluded."""
        user = self._user(request)
        conversation = self._conversation(request, user)
        params = await _params(request)
        status = params.get("typing_status")
        if status in ("on", "off"):
            self._publish(
                self._world.typing(
                    conversation.account_id,
                    conversation.display_id,
                    on=status == "on",
                    typist=user,
                    is_private=_bool(params.get("is_private")),
                    actor=user,
                )
            )
        return web.Response(status=200)

    async def update_last_seen(self, request: web.Request) -> web.Response:
        """``POST .../update_last_seen``: ``update_columns``, so no event and no bump (§4.5)."""
        user = self._user(request)
        conversation = self._conversation(request, user)
        now = self._clock()
        self._world.agent_seen(conversation.account_id, conversation.display_id, user, now=now)
        return web.json_response(self._conversation_json(conversation, now))

    async def toggle_status(self, request: web.Request) -> web.Response:
        """``POST .../toggle_status``: set ``status`` (or toggle open/resolved without one)."""
        actor = self._actor(request)
        conversation = self._conversation(request, actor)
        params = await _params(request)
        status = params.get("status")
        now = self._clock()
        aid, display_id = conversation.account_id, conversation.display_id
        try:
            if finders.present(None if status is None else str(status)):
                snooze = params.get("snoozed_until")
                until = float(finders.ruby_to_i(str(snooze))) if snooze is not None else None
                broadcasts = self._world.set_status(
                    aid, display_id, str(status), now=now, actor=actor, snoozed_until=until
                )
            else:
                _, broadcasts = self._world.toggle_status(aid, display_id, now=now, actor=actor)
        except InvalidError as exc:
            raise _error(422, {"error": str(exc)}) from None
        self._publish(broadcasts)
        return web.json_response(
            {
                "meta": {},
                "payload": {
                    "success": True,
                    "conversation_id": display_id,
                    "current_status": conversation.status,
                    "snoozed_until": render.iso_or_none(conversation.snoozed_until),
                },
            }
        )

    async def assignments(self, request: web.Request) -> web.Response:
        """``POST .../assignments`` with ``assignee_id``; an unknown id unassigns (Rails)."""
        actor = self._actor(request)
        conversation = self._conversation(request, actor)
        params = await _params(request)
        if "assignee_id" not in params:
            return web.json_response(None)
        raw = params["assignee_id"]
        user = self._world.users.get(finders.ruby_to_i(None if raw is None else str(raw)))
        if user is not None and conversation.account_id not in user.roles:
            user = None
        aid = conversation.account_id
        self._publish(
            self._world.assign(
                aid,
                conversation.display_id,
                None if user is None else user.id,
                now=self._clock(),
                actor=actor,
            )
        )
        return web.json_response(None if user is None else render.agent_rest(user, aid))

    # Private methods

    def _actor(self, request: web.Request) -> Actor:
        # AccessTokenAuthHelper (§4.1); without the header Chatwoot falls back to devise_token_auth.
        token = request.headers.get("api_access_token") or request.headers.get("api-access-token")
        if not token:
            raise _error(401, {"errors": ["You need to sign in or sign up before continuing."]})
        actor = self._world.actor_by_access_token(token)
        if actor is None:
            raise _error(401, {"error": "Invalid Access Token"})
        return actor

    def _user(self, request: web.Request) -> User:
        actor = self._actor(request)
        if isinstance(actor, AgentBot):
            # validate_bot_access_token!: bots may only touch a short allow-list (§4.1).
            raise _error(401, {"error": "Access to this endpoint is not authorized for bots"})
        return actor

    def _account(self, request: web.Request, actor: Actor) -> int:
        account_id = int(request.match_info["account_id"])
        if account_id not in self._world.accounts:
            raise _error(404, {"error": "Resource could not be found"})
        member = (
            account_id in actor.roles if isinstance(actor, User) else actor.account_id == account_id
        )
        if not member:
            # EnsureCurrentAccountHelper: a non-member gets 401, not 403.
            raise _error(401, {"error": "You are not authorized to access this account"})
        return account_id

    def _conversation(self, request: web.Request, actor: Actor) -> Conversation:
        account_id = self._account(request, actor)
        try:
            conversation = self._world.conversation(
                account_id, int(request.match_info["display_id"])
            )
        except NotFoundError:
            raise _error(404, {"error": "Resource could not be found"}) from None
        if isinstance(actor, User) and not self._world.can_see(actor, conversation):
            raise _error(401, {"error": "You are not authorized to do this action"})
        return conversation

    def _conversation_json(self, conversation: Conversation, now: float) -> dict[str, Any]:
        online = self._world.is_online(
            conversation.account_id, "Contact", conversation.contact_id, now
        )
        return render.conversation_rest(self._world, conversation, contact_online=online)


def _error(status: int, body: object) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        404: web.HTTPNotFound,
        422: web.HTTPUnprocessableEntity,
    }
    return kinds[status](text=json.dumps(body), content_type="application/json")


async def _params(request: web.Request) -> Mapping[str, Any]:
    # Rails merges the query string and the (JSON or form) body into one ``params``.
    params: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise _error(
                400, {"error": "Error occurred while parsing request parameters"}
            ) from None
        if isinstance(body, dict):
            params.update(body)
    else:
        params.update(await request.post())
    return params


def _bool(value: object) -> bool:
    # ActiveModel boolean cast: nil and "" stay false, FALSE_VALUES are false, the rest true.
    if value is None or value in ("", 0):  # 0 == False, so this covers false too
        return False
    return not (isinstance(value, str) and value in _FALSE)


def _message_type(value: object) -> MessageType:
    # MessageBuilder defaults to outgoing; Rails enums accept the name or the integer.
    if value is None:
        return MessageType.OUTGOING
    if isinstance(value, str) and value in _MESSAGE_TYPES:
        return _MESSAGE_TYPES[value]
    if isinstance(value, int | str) and str(value) in ("0", "1", "3"):
        return MessageType(int(value))
    raise _error(422, {"error": f"'{value}' is not a valid message_type"})
