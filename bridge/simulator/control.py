"""The ``/_sim/`` control API: JSON endpoints over the ``Simulator`` facade.

Owns request parsing and validation for tests and frontend developers; no authentication (the
simulator binds loopback by default). Must not contain simulation logic: every endpoint is one
``Simulator`` call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from bridge.simulator.entities import MESSAGE_STATUSES, MessageStatus
from bridge.simulator.model import InvalidError, NotFoundError
from bridge.simulator.sim import Simulator


_T = TypeVar("_T")


def add_routes(router: web.UrlDispatcher, sim: Simulator) -> None:
    """Register every ``/_sim/`` endpoint for ``sim``."""
    control = _Control(sim)
    router.add_get("/_sim/state", control.state)
    router.add_post("/_sim/faults", control.faults)
    router.add_post("/_sim/drop", control.drop)
    router.add_post("/_sim/disconnect", control.disconnect)
    router.add_post("/_sim/restart", control.restart)
    router.add_post("/_sim/traffic", control.traffic)
    router.add_post("/_sim/burst", control.burst)
    router.add_post("/_sim/conversations", control.create_conversation)
    router.add_post(r"/_sim/conversations/{account_id:\d+}/{display_id:\d+}/status", control.status)
    router.add_post(
        r"/_sim/conversations/{account_id:\d+}/{display_id:\d+}/assignee", control.assignee
    )
    router.add_post("/_sim/messages", control.create_message)
    router.add_get("/_sim/messages", control.ground_truth)
    router.add_post(r"/_sim/messages/{message_id:\d+}/status", control.message_status)
    router.add_post("/_sim/typing", control.typing)
    router.add_post(r"/_sim/users/{user_id:\d+}/rotate_token", control.rotate_token)
    router.add_get("/_sim/requests", control.requests)
    router.add_delete("/_sim/requests", control.clear_requests)


class _Control:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    async def state(self, _request: web.Request) -> web.Response:
        return web.json_response(self._sim.state())

    async def faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        ratio = _opt(body, "rest_fault_ratio", float)
        result = _guard(
            lambda: self._sim.set_faults(
                stop_pings=_opt(body, "stop_pings", bool),
                drop_broadcasts=_opt(body, "drop_broadcasts", bool),
                rest_mode=_opt(body, "rest_mode", str),
                rest_fault_ratio=ratio,
                refuse_connections=_opt(body, "refuse_connections", bool),
            )
        )
        return web.json_response(result)

    async def drop(self, request: web.Request) -> web.Response:
        body = await _body(request)
        abrupt = _opt(body, "abrupt", bool)
        refuse_for = _opt(body, "refuse_for", float) or 0.0
        dropped = self._sim.drop_connections(
            abrupt=True if abrupt is None else abrupt, refuse_for=refuse_for
        )
        return web.json_response({"dropped": dropped})

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await _body(request)
        reason = _opt(body, "reason", str) or "server_restart"
        reconnect = _opt(body, "reconnect", bool)
        count = self._sim.disconnect(reason, reconnect=True if reconnect is None else reconnect)
        return web.json_response({"disconnected": count})

    async def restart(self, _request: web.Request) -> web.Response:
        return web.json_response({"disconnected": self._sim.server_restart()})

    async def rotate_token(self, request: web.Request) -> web.Response:
        user_id = int(request.match_info["user_id"])
        _guard(lambda: self._sim.rotate_pubsub_token(user_id))
        return web.json_response({"user_id": user_id, "rotated": True})

    async def traffic(self, request: web.Request) -> web.Response:
        rate = _req(await _body(request), "rate", float)
        _guard(lambda: self._sim.set_rate(rate))
        return web.json_response({"rate": self._sim.traffic.rate})

    async def burst(self, request: web.Request) -> web.Response:
        body = await _body(request)
        messages = _req(body, "messages", int)
        conversations = _opt(body, "conversations", int) or 1
        account_id = _opt(body, "account_id", int)
        ids = _guard(lambda: self._sim.burst(messages, conversations, account_id=account_id))
        return web.json_response({"message_ids": ids})

    async def create_conversation(self, request: web.Request) -> web.Response:
        body = await _body(request)
        account_id = _req(body, "account_id", int)
        inbox_id = _opt(body, "inbox_id", int)
        return web.json_response(
            _guard(lambda: self._sim.create_conversation(account_id, inbox_id=inbox_id))
        )

    async def status(self, request: web.Request) -> web.Response:
        body = await _body(request)
        account_id, display_id = _path_ids(request)
        status = _req(body, "status", str)
        user_id = _opt(body, "user_id", int)
        result = _guard(
            lambda: self._sim.set_status(account_id, display_id, status, user_id=user_id)
        )
        return web.json_response(result)

    async def assignee(self, request: web.Request) -> web.Response:
        body = await _body(request)
        account_id, display_id = _path_ids(request)
        assignee_id = _opt(body, "assignee_id", int)
        user_id = _opt(body, "user_id", int)
        result = _guard(
            lambda: self._sim.assign(account_id, display_id, assignee_id, user_id=user_id)
        )
        return web.json_response(result)

    async def create_message(self, request: web.Request) -> web.Response:
        body = await _body(request)
        account_id = _req(body, "account_id", int)
        conversation_id = _opt(body, "conversation_id", int)
        content = _opt(body, "content", str)
        message_type = _opt(body, "message_type", str) or "incoming"
        private = _opt(body, "private", bool) or False
        user_id = _opt(body, "user_id", int)
        echo_id = _opt(body, "echo_id", str)
        result = _guard(
            lambda: self._sim.create_message(
                account_id,
                conversation_id,
                content=content,
                message_type=message_type,
                private=private,
                user_id=user_id,
                echo_id=echo_id,
            )
        )
        return web.json_response(result)

    async def message_status(self, request: web.Request) -> web.Response:
        status = _req(await _body(request), "status", str)
        if status not in MESSAGE_STATUSES:
            raise _bad(400, f"status must be one of {', '.join(MESSAGE_STATUSES)}")
        wanted: MessageStatus = next(s for s in MESSAGE_STATUSES if s == status)
        message_id = int(request.match_info["message_id"])
        _guard(lambda: self._sim.update_message_status(message_id, wanted))
        return web.json_response({"id": message_id, "status": wanted})

    async def typing(self, request: web.Request) -> web.Response:
        body = await _body(request)
        account_id = _req(body, "account_id", int)
        conversation_id = _req(body, "conversation_id", int)
        typing_status = _req(body, "typing_status", str)
        if typing_status not in ("on", "off"):
            raise _bad(400, "typing_status must be on or off")
        user_id = _opt(body, "user_id", int)
        is_private = _opt(body, "is_private", bool) or False
        _guard(
            lambda: self._sim.typing(
                account_id,
                conversation_id,
                on=typing_status == "on",
                user_id=user_id,
                is_private=is_private,
            )
        )
        return web.json_response({"typing_status": typing_status})

    async def ground_truth(self, request: web.Request) -> web.Response:
        account_id = _query_int(request, "account_id")
        conversation_id = _query_int(request, "conversation_id")
        return web.json_response(self._sim.ground_truth(account_id, conversation_id))

    async def requests(self, _request: web.Request) -> web.Response:
        return web.json_response({"requests": self._sim.request_log()})

    async def clear_requests(self, _request: web.Request) -> web.Response:
        self._sim.clear_request_log()
        return web.json_response({"requests": []})


def _bad(status: int, message: str) -> web.HTTPException:
    kind = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def _guard(call: Callable[[], _T]) -> _T:
    # Model errors become JSON 404/400 answers instead of 500s.
    try:
        return call()
    except NotFoundError as exc:
        raise _bad(404, str(exc)) from None
    except (InvalidError, ValueError) as exc:
        raise _bad(400, str(exc)) from None


async def _body(request: web.Request) -> Mapping[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise _bad(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise _bad(400, "body must be a JSON object")
    return body


def _opt(body: Mapping[str, Any], key: str, kind: type[_T]) -> _T | None:
    value = body.get(key)
    if value is None:
        return None
    # JSON numbers: accept an int where a float is wanted, never a bool where a number is.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _bad(400, f"{key} must be {kind.__name__}")
    return value


def _req(body: Mapping[str, Any], key: str, kind: type[_T]) -> _T:
    value = _opt(body, key, kind)
    if value is None:
        raise _bad(400, f"{key} is required")
    return value


def _path_ids(request: web.Request) -> tuple[int, int]:
    return int(request.match_info["account_id"]), int(request.match_info["display_id"])


def _query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise _bad(400, f"{key} must be an integer")
    return int(raw)
