"""POST /webhooks/chatwoot over loopback: verification, replays, and one stream with the cable."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest
from aiohttp.test_utils import TestClient

from bridge.config import Secret, ServerConfig, WebhookConfig
from bridge.eventlog import MemoryEventLog
from bridge.hub import Hub
from bridge.pipeline import Pipeline
from bridge.ports import LocalEventStore
from bridge.server import LocalServer
from bridge.status import StatusBoard
from bridge.webhooks import WebhookReceiver
from tests.conftest import load_fixture


SECRET = "whsec-component-0123"


def headers(
    body: bytes, *, ts: int | None = None, delivery: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Chatwoot-Signature": f"sha256={sig}",
        "X-Chatwoot-Timestamp": str(ts),
        "X-Chatwoot-Delivery": delivery or str(uuid.uuid4()),
    }


@pytest.fixture
async def rig(aiohttp_client, metrics):
    log = MemoryEventLog("ep", 100)
    store = LocalEventStore(log)
    pipeline = Pipeline(store, Hub(), metrics)
    pipeline.accounts = frozenset({1})
    server = LocalServer(ServerConfig(port=0), Hub(), store, StatusBoard(0), metrics, poll_window=1)
    receiver = WebhookReceiver(
        WebhookConfig(secrets=(Secret("old-secret"), Secret(SECRET)), max_bytes=64 * 1024),
        pipeline.publish,
        lambda: pipeline.accounts,
        metrics,
        ephemeral=False,
    )
    server.routes.extend(receiver.routes())
    client: TestClient = await aiohttp_client(server.build_app())
    return client, pipeline, log, metrics


async def test_valid_delivery_is_published_once_even_when_redelivered(rig):
    """A signed delivery is published; its delivery id again gets 200 and no republication."""
    client, _, log, metrics = rig
    body = json.dumps(load_fixture("webhook/message_created.json")).encode()
    delivery = str(uuid.uuid4())
    first = await client.post(
        "/webhooks/chatwoot", data=body, headers=headers(body, delivery=delivery)
    )
    assert first.status == 200
    assert (await first.json())["published"] is True
    again = await client.post(
        "/webhooks/chatwoot", data=body, headers=headers(body, delivery=delivery)
    )
    assert again.status == 200
    assert (await again.json())["outcome"] == "replayed"
    assert log.last_seq == 1
    assert metrics.webhooks.labels(outcome="replayed")._value.get() == 1


@pytest.mark.parametrize(
    ("make", "status", "outcome"),
    [
        (lambda b: (b + b" ", headers(b)), 401, "bad_signature"),
        (lambda b: (b, headers(b, secret="attacker")), 401, "bad_signature"),
        (lambda b: (b, headers(b, ts=int(time.time()) - 3600)), 401, "stale"),
        (lambda b: (b, {"Content-Type": "application/json"}), 401, "unsigned"),
        (lambda b: (b"x" * 70_000, headers(b"x" * 70_000)), 413, "too_large"),
        (lambda b: (b"{not json", headers(b"{not json")), 400, "malformed"),
    ],
)
async def test_bad_deliveries_are_refused_and_counted(rig, make, status, outcome):
    """Tampered, forged, stale, unsigned, oversized and malformed deliveries publish nothing."""
    client, _, log, metrics = rig
    body, hdrs = make(json.dumps(load_fixture("webhook/message_created.json")).encode())
    response = await client.post("/webhooks/chatwoot", data=body, headers=hdrs)
    assert response.status == status
    assert (await response.json())["outcome"] == outcome
    assert log.last_seq == 0
    assert metrics.webhooks.labels(outcome=outcome)._value.get() == 1


async def test_a_message_by_cable_and_webhook_is_published_once(rig):
    """Cable first, webhook second: one event; the webhook counts as a duplicate with its lead."""
    client, pipeline, log, metrics = rig
    webhook = load_fixture("webhook/message_created.json")
    # the same message (901) as the cable broadcasts it: its push data
    push = webhook["conversation"]["messages"][0]
    await pipeline.cable_message({"event": "message.created", "data": push}, time.time(), 1)
    body = json.dumps(webhook).encode()
    response = await client.post("/webhooks/chatwoot", data=body, headers=headers(body))
    assert (await response.json())["published"] is False
    assert log.last_seq == 1
    assert metrics.events_deduplicated.labels(source="webhook")._value.get() == 1
    assert metrics.events_first.labels(source="cable")._value.get() == 1
    lead = metrics.source_lead.labels(first="cable", later="webhook")
    assert lead._sum.get() >= 0
    assert sum(b.get() for b in lead._buckets) == 1


async def test_webhook_first_then_cable(rig):
    """Webhook first: the cable copy is the duplicate, and the conversation event too."""
    client, pipeline, log, metrics = rig
    body = json.dumps(load_fixture("webhook/conversation_status_changed.json")).encode()
    response = await client.post("/webhooks/chatwoot/1", data=body, headers=headers(body))
    assert (await response.json())["published"] is True
    await pipeline.cable_message(
        load_fixture("cable/conversation.status_changed.json")["message"], time.time(), 1
    )
    assert log.last_seq == 1
    assert metrics.events_first.labels(source="webhook")._value.get() == 1
    assert metrics.events_deduplicated.labels(source="cable")._value.get() == 1


async def test_account_in_the_path_must_be_an_id(rig):
    """A non-numeric account in the path is not found."""
    client, *_ = rig
    response = await client.post("/webhooks/chatwoot/abc", data=b"{}", headers=headers(b"{}"))
    assert response.status == 404
