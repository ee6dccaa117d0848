"""Webhook signatures, replay protection and mapping to the push shapes."""

import hashlib
import hmac
import json
import time

import pytest

from bridge.normalise import Dropped, from_cable, from_webhook, webhook_account
from bridge.webhooks import DeliveryLog, verify
from tests.conftest import load_fixture


SECRET = "whsec-0123456789"


def sign(body: bytes, ts: int, secret: str = SECRET) -> str:
    return (
        "sha256="
        + hmac.new(secret.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def check(
    body: bytes,
    signature: str | None,
    ts: str | None,
    *,
    now: float,
    allow_unsigned=False,
    secrets=(SECRET,),
):
    return verify(
        body, signature, ts, secrets, allow_unsigned=allow_unsigned, tolerance=300, now=now
    )


def test_valid_signature_passes_with_any_of_the_secrets():
    """HMAC-SHA256 over '<timestamp>.<body>', checked against every configured secret."""
    body, now = b'{"event":"message_created"}', time.time()
    ts = int(now)
    assert check(body, sign(body, ts), str(ts), now=now).ok
    assert check(
        body, sign(body, ts, "other-secret"), str(ts), now=now, secrets=("x", "other-secret")
    ).ok


@pytest.mark.parametrize(
    ("mutate", "outcome"),
    [
        (lambda b, s, t: (b + b" ", s, t), "bad_signature"),  # tampered body
        (lambda b, s, t: (b, sign(b, int(t), "wrong"), t), "bad_signature"),
        (lambda b, s, t: (b, s.replace("sha256=", "sha1="), t), "bad_signature"),
        (lambda b, s, t: (b, "sha256=", t), "bad_signature"),
        (lambda b, s, t: (b, s, str(int(t) + 1)), "bad_signature"),  # timestamp not the signed one
        (lambda b, s, t: (b, s, None), "bad_timestamp"),
        (lambda b, s, t: (b, s, "soon"), "bad_timestamp"),
        (lambda b, s, t: (b, None, t), "unsigned"),
    ],
)
def test_bad_deliveries_are_refused(mutate, outcome):
    """Tampered, wrongly signed, unsigned and badly stamped deliveries get 401."""
    now = time.time()
    body, ts = b'{"event":"message_created"}', str(int(now))
    verdict = check(*mutate(body, sign(body, int(ts)), ts), now=now)
    assert (verdict.ok, verdict.outcome, verdict.status) == (False, outcome, 401)


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_and_future_timestamps_are_refused(skew):
    """Outside the tolerance either way (replays of old captures, clocks far off)."""
    now = time.time()
    ts = int(now) + skew
    body = b"{}"
    assert check(body, sign(body, ts), str(ts), now=now).outcome == "stale"


def test_unsigned_allowed_only_when_configured():
    """Chatwoot up to v4.10 does not sign: allowed only with the explicit switch."""
    assert check(b"{}", None, None, now=0, allow_unsigned=True).ok
    assert not check(b"{}", None, None, now=0).ok


def test_delivery_ids_are_remembered_within_the_window_and_bounded():
    """A repeated delivery id is a replay; ids older than the window or beyond the size go."""
    log = DeliveryLog(window=300, size=3)
    assert not log.seen_before("a", 0)
    assert log.seen_before("a", 10)
    assert not log.seen_before("a", 400)  # outside the window: Chatwoot would not retry this late
    for d in ("b", "c", "d"):
        log.seen_before(d, 401)
    assert not log.seen_before("a", 402)  # pushed out by the size bound


def test_message_webhook_maps_to_the_cable_shape_and_key():
    """String message_type, ISO created_at, account/inbox objects: same event as the cable's."""
    cable = from_cable(
        load_fixture("cable/message.created.json")["message"], received_at=1.0, accounts=None
    )
    hook = from_webhook(
        load_fixture("webhook/message_created.json"), received_at=2.0, accounts=None
    )
    assert not isinstance(hook, Dropped)
    assert not isinstance(cable, Dropped)
    assert (hook.name, hook.account_id, hook.conversation_id, hook.source) == (
        "message.created",
        1,
        42,
        "webhook",
    )
    assert hook.dedupe_key == f"message.created:{hook.data['id']}"
    assert isinstance(hook.data["message_type"], int)
    assert isinstance(hook.data["created_at"], int)
    assert hook.inbox_id == 3
    assert "pubsub_token" not in json.dumps(hook.data)


def test_conversation_webhook_has_the_cable_version():
    """conversation_status_changed carries the float updated_at: it deduplicates with the cable."""
    cable = from_cable(
        load_fixture("cable/conversation.status_changed.json")["message"],
        received_at=1,
        accounts=None,
    )
    hook = from_webhook(
        load_fixture("webhook/conversation_status_changed.json"),
        received_at=2,
        accounts=None,
        account_hint=1,
    )
    assert not isinstance(hook, Dropped)
    assert not isinstance(cable, Dropped)
    assert hook.name == "conversation.status_changed"
    assert hook.dedupe_key == cable.dedupe_key
    assert "changed_attributes" not in hook.data
    assert "LEAKED-CONTACT-PUBSUB-TOKEN" not in json.dumps(hook.data)


def test_conversation_webhook_without_account_needs_the_url_hint():
    """Conversation payloads name no account: /webhooks/chatwoot/<account id> does."""
    payload = load_fixture("webhook/conversation_created.json")
    payload["messages"] = []
    result = from_webhook(payload, received_at=1, accounts=None)
    assert isinstance(result, Dropped)
    assert result.reason == "no_account"
    assert webhook_account(load_fixture("webhook/message_created.json")) == 1


def test_contact_updates_deduplicate_across_sources():
    """contact_updated (webhook) and contact.updated (cable) of the same state share a key."""
    hook = from_webhook(load_fixture("webhook/contact_updated.json"), received_at=1, accounts=None)
    assert not isinstance(hook, Dropped)
    assert hook.name == "contact.updated"
    cable_data = dict(hook.data.items())
    cable = from_cable(
        {"event": "contact.updated", "data": cable_data}, received_at=2, accounts=None
    )
    assert not isinstance(cable, Dropped)
    assert hook.dedupe_key == cable.dedupe_key


def test_typing_comes_from_the_cable_when_it_is_on():
    """Typing has nothing to deduplicate by: with the cable on, webhook typing is dropped."""
    payload = load_fixture("webhook/conversation_typing_on.json")
    assert from_webhook(
        payload, received_at=1, accounts=None, account_hint=1, ephemeral=False
    ) == Dropped("ephemeral", "typing comes from the cable", "conversation.typing_on")
    event = from_webhook(payload, received_at=1, accounts=None, account_hint=1)
    assert not isinstance(event, Dropped)
    assert event.conversation_id == 42


def test_other_webhooks_pass_through_and_bad_ones_are_dropped():
    """inbox_created is not a push event: it passes through; garbage is dropped with a reason."""
    inbox = from_webhook(
        load_fixture("webhook/inbox_created.json"), received_at=1, accounts=None, account_hint=1
    )
    assert not isinstance(inbox, Dropped)
    assert (inbox.name, inbox.known) == ("inbox.created", False)
    assert from_webhook([], received_at=1, accounts=None).reason == "malformed"  # type: ignore[union-attr]
    assert from_webhook({"event": 5}, received_at=1, accounts=None).reason == "malformed"  # type: ignore[union-attr]
    assert (
        from_webhook(
            load_fixture("webhook/message_created.json"), received_at=1, accounts={2}
        ).reason
        == "not_bridged"
    )  # type: ignore[union-attr]
