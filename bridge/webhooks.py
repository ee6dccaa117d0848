"""Chatwoot webhooks as a third source: ``POST /webhooks/chatwoot[/<account id>]``.

Signed deliveries (Chatwoot after v4.10, PRs #13573 and #13892) carry
``X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``,
``X-Chatwoot-Timestamp`` and ``X-Chatwoot-Delivery`` (the same UUID across retries).
The receiver checks the signature in constant time against every configured secret (each
webhook has its own), refuses timestamps outside the tolerance, answers a repeated
delivery id with 200 without publishing it again, and refuses unsigned requests unless
``BRIDGE_WEBHOOK_ALLOW_UNSIGNED=on`` (older Chatwoot does not sign). Accepted bodies are
normalised and join the one publish path, so a fact that the cable delivered too is
published once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass

import structlog
from aiohttp import web

from bridge.config import WebhookConfig
from bridge.events import Entry, Event
from bridge.metrics import Metrics
from bridge.normalise import Dropped, as_id, from_webhook


log = structlog.get_logger("bridge.webhooks")

MAX_DELIVERIES = 100_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a delivery; ``ok`` False means refuse with ``status``."""

    ok: bool
    outcome: str
    status: int = 200
    message: str = ""


def verify(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secrets: tuple[str, ...],
    *,
    allow_unsigned: bool,
    tolerance: float,
    now: float,
) -> Verdict:
    """Check a delivery's signature and age (pure; ``now`` passed in)."""
    if not signature:
        if allow_unsigned:
            return Verdict(True, "unsigned_allowed")
        return Verdict(False, "unsigned", 401, "unsigned webhook refused (set a webhook secret)")
    if not timestamp or not timestamp.strip().isdigit():
        return Verdict(False, "bad_timestamp", 401, "missing or malformed X-Chatwoot-Timestamp")
    if abs(now - int(timestamp)) > tolerance:
        return Verdict(False, "stale", 401, "timestamp outside the tolerance")
    scheme, _, given = signature.strip().partition("=")
    if scheme != "sha256" or not given:
        return Verdict(False, "bad_signature", 401, "signature must be sha256=<hex>")
    message = timestamp.strip().encode() + b"." + body
    matched = False
    # Every secret is tried, always: the time taken does not tell which one matched.
    for secret in secrets:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(expected, given.strip().lower())
    if not matched:
        return Verdict(False, "bad_signature", 401, "signature does not match")
    return Verdict(True, "accepted")


class DeliveryLog:
    """Delivery ids seen within the tolerance window (bounded)."""

    def __init__(self, window: float, size: int = MAX_DELIVERIES) -> None:
        self.window = window
        self.size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen_before(self, delivery: str, now: float) -> bool:
        """Record ``delivery``; True if it was already recorded within the window."""
        while self._seen and (
            now - next(iter(self._seen.values())) > self.window or len(self._seen) >= self.size
        ):
            self._seen.popitem(last=False)
        if delivery in self._seen:
            return True
        self._seen[delivery] = now
        return False


class WebhookReceiver:
    """The aiohttp handler of the webhook source.

    Args:
        cfg: secrets, tolerance, size limit.
        publish: the pipeline's publish.
        accounts: the bridged accounts (read at each delivery).
        ephemeral: take typing events from webhooks (only when the cable source is off).
        metrics: the metric objects.
    """

    def __init__(
        self,
        cfg: WebhookConfig,
        publish: Callable[[Event], Awaitable[Entry | None]],
        accounts: Callable[[], Container[int]],
        metrics: Metrics,
        *,
        ephemeral: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.publish = publish
        self.accounts = accounts
        self.metrics = metrics
        self.ephemeral = ephemeral
        self.clock = clock
        self.deliveries = DeliveryLog(cfg.tolerance)
        self._secrets = tuple(s.get() for s in cfg.secrets)

    def routes(
        self,
    ) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """The two paths: without and with the account id."""
        return [
            ("POST", "/webhooks/chatwoot", self.handle),
            ("POST", "/webhooks/chatwoot/{account_id}", self.handle),
        ]

    async def handle(self, request: web.Request) -> web.Response:
        """Verify, deduplicate, normalise, publish."""
        now = self.clock()
        hint = request.match_info.get("account_id")
        account_hint = None
        if hint is not None:
            account_hint = as_id(hint)
            if account_hint is None:
                return self._answer("bad_request", 404, "unknown path")
        length = request.content_length
        if length is not None and length > self.cfg.max_bytes:
            return self._answer("too_large", 413, f"body above {self.cfg.max_bytes} bytes")
        body = await request.content.read(self.cfg.max_bytes + 1)
        if len(body) > self.cfg.max_bytes:
            return self._answer("too_large", 413, f"body above {self.cfg.max_bytes} bytes")
        verdict = verify(
            body,
            request.headers.get("X-Chatwoot-Signature"),
            request.headers.get("X-Chatwoot-Timestamp"),
            self._secrets,
            allow_unsigned=self.cfg.allow_unsigned,
            tolerance=self.cfg.tolerance,
            now=now,
        )
        if not verdict.ok:
            log.warning("webhook.refused", outcome=verdict.outcome)
            return self._answer(verdict.outcome, verdict.status, verdict.message)
        delivery = request.headers.get("X-Chatwoot-Delivery", "")[:200]
        if delivery and self.deliveries.seen_before(delivery, now):
            return self._answer("replayed", 200, "already delivered")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return self._answer("malformed", 400, "body is not JSON")
        event = from_webhook(
            payload,
            received_at=now,
            accounts=self.accounts(),
            account_hint=account_hint,
            ephemeral=self.ephemeral,
        )
        if isinstance(event, Dropped):
            self.metrics.events_dropped.labels(reason=event.reason).inc()
            status = 422 if event.reason in ("malformed", "no_account") else 200
            return self._answer(f"dropped_{event.reason}", status, event.detail)
        entry = await self.publish(event)
        self.metrics.webhooks.labels(outcome=verdict.outcome).inc()
        return web.json_response({"ok": True, "event": event.name, "published": entry is not None})

    def _answer(self, outcome: str, status: int, message: str) -> web.Response:
        self.metrics.webhooks.labels(outcome=outcome).inc()
        body = {"ok": status < 300, "outcome": outcome, "message": message}
        return web.json_response(body, status=status)
