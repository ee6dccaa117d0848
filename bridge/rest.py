"""Thin typed client of Chatwoot's REST API (chatwoot.md §4) over one aiohttp session.

Maps every failure onto :mod:`bridge.errors` (retryable or fatal), times and counts
every request, bounds concurrent requests and body sizes, and validates the shapes
it returns. It does not decide when to poll, keep cursors or normalise.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog

from bridge.config import RestConfig, Secret
from bridge.errors import RestError, RestFatal, RestRetryable, Unauthorized
from bridge.metrics import Metrics


T = TypeVar("T")
log = structlog.get_logger("bridge.rest")

MAX_BODY_BYTES = 16 * 1024 * 1024
USER_AGENT = "chatwoot-bridge"


@dataclass(frozen=True, slots=True)
class Account:
    """One account of the profile."""

    id: int
    name: str
    role: str | None


@dataclass(frozen=True, slots=True)
class Profile:
    """What the bridge needs from ``GET /api/v1/profile``."""

    user_id: int
    pubsub_token: Secret
    accounts: tuple[Account, ...]
    name: str


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_profile(body: object) -> Profile:
    """Validate a profile answer (chatwoot.md §4.2).

    Raises:
        RestRetryable: when the shape is wrong (a proxy's error page, a fork).
    """
    if not isinstance(body, Mapping):
        raise RestRetryable(
            "profile: answer is not a JSON object", endpoint="profile", outcome="malformed"
        )
    user_id = _int(body.get("id"))
    token = body.get("pubsub_token")
    raw_accounts = body.get("accounts")
    if user_id is None or not isinstance(token, str) or not token:
        raise RestRetryable(
            "profile: answer has no user id or pubsub_token",
            endpoint="profile",
            outcome="malformed",
        )
    accounts: list[Account] = []
    if isinstance(raw_accounts, list):
        for item in raw_accounts:
            if isinstance(item, Mapping) and (account_id := _int(item.get("id"))) is not None:
                name = item.get("name")
                role = item.get("role")
                accounts.append(
                    Account(
                        account_id,
                        name if isinstance(name, str) else "",
                        role if isinstance(role, str) else None,
                    )
                )
    name = body.get("name")
    return Profile(user_id, Secret(token), tuple(accounts), name if isinstance(name, str) else "")


class ChatwootREST:
    """Chatwoot's REST API, as the bridge uses it.

    Args:
        session: the one shared aiohttp session (owned by the app).
        base_url: CHATWOOT_URL.
        token: the User access token.
        cfg: timeouts and concurrency.
        metrics: where requests are counted and timed.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: Secret,
        cfg: RestConfig,
        metrics: Metrics | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        self._limit = asyncio.Semaphore(cfg.concurrency)
        self._metrics = metrics

    # Public methods

    async def profile(self) -> Profile:
        """``GET /api/v1/profile``: user id, pubsub token and accounts."""
        return await self.request("GET", "/api/v1/profile", endpoint="profile", parse=parse_profile)

    async def conversations(
        self,
        account_id: int,
        *,
        updated_within: int | None = None,
        status: str = "all",
        page: int | None = None,
    ) -> list[dict[str, Any]]:
        """``GET …/conversations``; with ``updated_within`` Chatwoot skips pagination."""
        params: dict[str, str] = {"status": status}
        if updated_within is not None:
            params["updated_within"] = str(max(1, updated_within))
        if page is not None:
            params["page"] = str(page)
        return await self.request(
            "GET",
            f"/api/v1/accounts/{account_id}/conversations",
            params=params,
            endpoint="conversations",
            parse=_list_at("conversations", "data", "payload"),
        )

    async def conversation(self, account_id: int, conversation_id: int) -> dict[str, Any]:
        """``GET …/conversations/{display_id}``: a bare conversation object (chatwoot.md §4.3)."""
        return await self.request(
            "GET",
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}",
            endpoint="conversation",
            parse=_object("conversation"),
        )

    async def messages(
        self,
        account_id: int,
        conversation_id: int,
        *,
        after: int | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """``GET …/conversations/{id}/messages`` with ``after``/``before`` (chatwoot.md §4.4)."""
        params: dict[str, str] = {}
        if after is not None:
            params["after"] = str(after)
        if before is not None:
            params["before"] = str(before)
        return await self.request(
            "GET",
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}/messages",
            params=params,
            endpoint="messages",
            parse=_list_at("messages", "payload"),
        )

    async def create_message(
        self,
        account_id: int,
        conversation_id: int,
        *,
        content: str,
        private: bool = False,
        echo_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST …/messages`` as the bridge's user: an outgoing message (or a private note)."""
        body: dict[str, Any] = {"content": content, "message_type": "outgoing", "private": private}
        if echo_id is not None:
            body["echo_id"] = echo_id
        return await self.request(
            "POST",
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}/messages",
            endpoint="create_message",
            json_body=body,
            parse=_object("create_message"),
        )

    async def toggle_typing(
        self, account_id: int, conversation_id: int, *, on: bool, private: bool = False
    ) -> None:
        """``POST …/toggle_typing_status`` (chatwoot.md §4.5); Chatwoot answers with no body."""
        await self.request(
            "POST",
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}/toggle_typing_status",
            endpoint="typing",
            json_body={"typing_status": "on" if on else "off", "is_private": private},
            parse=lambda _: None,
        )

    async def mark_read(self, account_id: int, conversation_id: int) -> dict[str, Any] | None:
        """``POST …/update_last_seen``: the agent has seen the conversation; Chatwoot answers
        with the conversation (no event follows, chatwoot.md §4.5)."""
        return await self.request(
            "POST",
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}/update_last_seen",
            endpoint="read",
            parse=lambda body: body if isinstance(body, dict) else None,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        parse: Callable[[object], T],
        params: Mapping[str, str] | None = None,
        json_body: object = None,
    ) -> T:
        """Send one request and return ``parse`` of its JSON body (``None`` when empty).

        ``parse`` validates the shape and raises :class:`RestRetryable` when it is wrong,
        so that a malformed answer counts as a failed request.

        Raises:
            Unauthorized: 401.
            RestFatal: other 4xx, TLS certificate errors, an invalid URL.
            RestRetryable: 429, 5xx, timeouts, connection errors, malformed bodies.
        """
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._limit:
                result = parse(await self._send(method, path, endpoint, params, json_body))
            outcome = "ok"
            return result
        except RestError as exc:
            outcome = exc.outcome
            log.warning(
                "rest.error", endpoint=endpoint, outcome=outcome, status=exc.status, error=str(exc)
            )
            raise
        finally:
            if self._metrics is not None:
                self._metrics.poll_requests.labels(endpoint=endpoint, outcome=outcome).inc()
                self._metrics.poll_request_duration.labels(endpoint=endpoint).observe(
                    time.perf_counter() - started
                )

    # Private methods

    async def _send(
        self,
        method: str,
        path: str,
        endpoint: str,
        params: Mapping[str, str] | None,
        json_body: object,
    ) -> object:
        url = self._base + path
        headers = {
            "api_access_token": self._token.get(),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status == 401:
                    raise Unauthorized(
                        "Chatwoot refused CHATWOOT_API_TOKEN (401): use a User access token "
                        "(Profile settings > Access token); agent-bot tokens cannot read it",
                        endpoint=endpoint,
                        status=status,
                        outcome="unauthorized",
                    )
                if status == 429:
                    raise RestRetryable(
                        "Chatwoot is rate limiting the bridge (429)",
                        endpoint=endpoint,
                        status=status,
                        outcome="rate_limited",
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                if status >= 500:
                    raise RestRetryable(
                        f"Chatwoot answered {status}",
                        endpoint=endpoint,
                        status=status,
                        outcome="server_error",
                    )
                if status >= 300:
                    raise RestFatal(
                        f"Chatwoot answered {status} for {endpoint}",
                        endpoint=endpoint,
                        status=status,
                        outcome="client_error",
                    )
                raw = await response.content.read(MAX_BODY_BYTES + 1)
        except (RestError, asyncio.CancelledError):
            raise
        except TimeoutError:
            raise RestRetryable(
                f"no answer within {self._timeout.total:g} s", endpoint=endpoint, outcome="timeout"
            ) from None
        except (
            aiohttp.ClientConnectorCertificateError,
            aiohttp.ClientSSLError,
            ssl.SSLError,
        ) as exc:
            raise RestFatal(
                f"TLS error talking to Chatwoot: {_reason(exc)}",
                endpoint=endpoint,
                outcome="tls_error",
            ) from None
        except aiohttp.InvalidURL:
            raise RestFatal("CHATWOOT_URL is not a valid URL", endpoint=endpoint) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RestRetryable(
                f"cannot reach Chatwoot: {_reason(exc)}", endpoint=endpoint, outcome="unreachable"
            ) from None
        if len(raw) > MAX_BODY_BYTES:
            raise RestRetryable(
                f"{endpoint}: answer larger than {MAX_BODY_BYTES} bytes",
                endpoint=endpoint,
                outcome="malformed",
            )
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise RestRetryable(
                f"{endpoint}: answer is not valid JSON",
                endpoint=endpoint,
                status=status,
                outcome="malformed",
            ) from None


def _object(endpoint: str) -> Callable[[object], dict[str, Any]]:
    def parse(body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RestRetryable(
                f"{endpoint}: answer is not a JSON object", endpoint=endpoint, outcome="malformed"
            )
        return body

    return parse


def _list_at(endpoint: str, *path: str) -> Callable[[object], list[dict[str, Any]]]:
    def parse(body: object) -> list[dict[str, Any]]:
        found = _dig(body, *path)
        if not isinstance(found, list):
            raise RestRetryable(
                f"{endpoint}: answer has no {'.'.join(path)} list",
                endpoint=endpoint,
                outcome="malformed",
            )
        return [item for item in found if isinstance(item, dict)]

    return parse


def _dig(body: object, *path: str) -> object:
    for key in path:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _reason(exc: BaseException) -> str:
    """A short, secret-free description: the exception class and its OS-level cause."""
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
    text = str(cause).strip() or type(cause).__name__
    return text[:200]
