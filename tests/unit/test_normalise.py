"""The normaliser, table-driven over payload fixtures in Chatwoot's real shapes."""

import json
from pathlib import Path

import pytest

from bridge.events import Entry, format_time
from bridge.normalise import Dropped, as_id, from_cable, parse_time, scrub
from tests.conftest import FIXTURES, load_fixture


EXPECTED = load_fixture("cable/_expected.json")
RECEIVED_AT = 1795590000.5
LEAK = "LEAKED-CONTACT-PUBSUB-TOKEN"


def _normalise(name: str, accounts=frozenset({1, 2})):
    frame = load_fixture(f"cable/{name}")
    return from_cable(frame["message"], received_at=RECEIVED_AT, accounts=accounts)


def test_every_cable_fixture_has_an_expectation():
    """The table covers every fixture file (a new fixture cannot go untested)."""
    files = {str(p.relative_to(FIXTURES / "cable")) for p in (FIXTURES / "cable").rglob("*.json")}
    files.discard("_expected.json")
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_normalises_as_expected(name):
    """Event name, account, display id and occurred_at follow the documented rules."""
    expected = EXPECTED[name]
    event = _normalise(name)
    assert not isinstance(event, Dropped), event
    assert event.name == expected["event"]
    assert event.account_id == expected["account_id"]
    assert event.conversation_id == expected["conversation_id"]
    occurred = None if event.occurred_at is None else format_time(event.occurred_at)
    assert occurred == expected["occurred_at"]
    assert event.source == "cable"
    assert event.received_at == RECEIVED_AT


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_pubsub_token_survives(name):
    """Every pubsub_token is removed from data, at any depth, and from the encoded frame."""
    frame = load_fixture(f"cable/{name}")
    event = _normalise(name)
    assert not isinstance(event, Dropped)
    text = Entry.build("e", 1, event).text
    assert "pubsub_token" not in text
    assert LEAK not in text
    # the identifier (with the subscriber's token) is never part of the event either
    token = json.loads(frame["identifier"])["pubsub_token"]
    assert token not in text


def test_leaked_token_is_really_in_the_fixtures():
    """The scrub test above is not vacuous: the fixtures do carry the leak."""
    raw = (FIXTURES / "cable" / "conversation.created.json").read_text()
    assert LEAK in raw


def test_data_keeps_the_push_shape():
    """Apart from the token, data is Chatwoot's payload unchanged (types included)."""
    frame = load_fixture("cable/message.created.json")
    event = _normalise("message.created.json")
    assert not isinstance(event, Dropped)
    assert event.data == frame["message"]["data"]
    assert isinstance(event.data["created_at"], int)
    assert isinstance(event.data["updated_at"], str)


def test_conversation_events_carry_a_version_and_dedupe_key():
    """Conversation state events are versioned by float updated_at."""
    event = _normalise("conversation.status_changed.json")
    assert not isinstance(event, Dropped)
    assert event.version == pytest.approx(1795586820.903999)
    assert event.dedupe_key == f"conversation.status_changed:1:42:{event.version!r}"
    stale = _normalise("variants/stale.conversation.updated.json")
    assert not isinstance(stale, Dropped)
    assert stale.version is not None
    assert stale.version < event.version


def test_message_dedupe_key_is_the_message_id():
    """message.created from any source dedupes on the message id."""
    event = _normalise("message.created.json")
    assert not isinstance(event, Dropped)
    assert event.dedupe_key == f"message.created:{event.data['id']}"


def test_events_of_unbridged_accounts_are_dropped():
    """data.account_id outside the bridged accounts is dropped (chatwoot.md §2.2)."""
    result = _normalise("variants/other_account.message.created.json", accounts=frozenset({1}))
    assert result == Dropped("not_bridged", "account 2 is not bridged", "message.created")


def test_token_stream_copies_on_other_subscriptions_are_dropped():
    """A token broadcast arrives once per subscription; only the own account's copy is kept."""
    frame = load_fixture("cable/message.created.json")
    kept = from_cable(frame["message"], received_at=1.0, accounts=None, via_account=1)
    copy = from_cable(frame["message"], received_at=1.0, accounts=None, via_account=2)
    assert not isinstance(kept, Dropped)
    assert isinstance(copy, Dropped)
    assert copy.reason == "other_subscription"


def test_unknown_event_passes_through():
    """An unknown name is kept with its data, flagged as unknown."""
    event = _normalise("variants/unknown_event.some.future_event.json")
    assert not isinstance(event, Dropped)
    assert event.name == "some.future_event"
    assert not event.known


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "malformed"),
        ([], "malformed"),
        ({"event": "message.created"}, "malformed"),
        ({"event": 5, "data": {}}, "malformed"),
        ({"event": "", "data": {}}, "malformed"),
        ({"event": "x" * 300, "data": {"account_id": 1}}, "malformed"),
        ({"event": "message.created", "data": []}, "malformed"),
        ({"event": "message.created", "data": {}}, "no_account"),
        ({"event": "message.created", "data": {"account_id": "one"}}, "no_account"),
        ({"event": "message.created", "data": {"account_id": True}}, "no_account"),
        ({"event": "message.created", "data": {"account_id": -1}}, "no_account"),
    ],
)
def test_bad_payloads_are_dropped_with_a_reason(payload, reason):
    """Malformed broadcasts never raise."""
    result = from_cable(payload, received_at=1.0, accounts=None)
    assert isinstance(result, Dropped)
    assert result.reason == reason


def test_wrong_types_inside_data_do_not_crash():
    """Odd field types give None fields, not exceptions."""
    payload = {
        "event": "message.created",
        "data": {"account_id": 1, "conversation_id": "x", "created_at": "yesterday", "id": None},
    }
    event = from_cable(payload, received_at=1.0, accounts=None)
    assert not isinstance(event, Dropped)
    assert event.conversation_id is None
    assert event.occurred_at is None
    assert event.dedupe_key is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1795586400, 1795586400.0),
        (1795586820.903999, 1795586820.903999),
        ("2026-11-25T06:04:01.012Z", 1795586641.012),
        ("2026-11-25T07:04:01+01:00", 1795586641.0),
        (0, None),
        (None, None),
        (True, None),
        ("", None),
        ("not a time", None),
        ("2026-11-25T06:04:01", None),
        (float("nan"), None),
        (float("inf"), None),
        ([], None),
        # found by the fuzzer: a year-10000 value made format_time raise
        (253402300800, None),
        ("10000-01-01T00:00:00Z", None),
        ("1999-12-31T23:59:59Z", None),
    ],
)
def test_parse_time_handles_every_chatwoot_spelling(value, expected):
    """Unix ints, floats and ISO strings; 0 means null."""
    assert parse_time(value) == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("5", 5), (0, None), (-3, None), (True, None), ("5a", None), (None, None)],
)
def test_as_id(value, expected):
    """Positive integer ids only."""
    assert as_id(value) == expected


def test_scrub_removes_secret_keys_at_any_depth_and_copies():
    """Nested dicts and lists are copied without pubsub_token; the input is untouched."""
    data = {"a": [{"pubsub_token": "x", "b": [{"pubsub_token": "y", "c": 1}]}], "pubsub_token": "z"}
    clean = scrub(data)
    assert clean == {"a": [{"b": [{"c": 1}]}]}
    assert data["pubsub_token"] == "z"


def test_scrub_survives_deep_nesting():
    """A pathologically deep payload is scrubbed without recursion."""
    deep: dict = {}
    node = deep
    for _ in range(50_000):
        node["n"] = {}
        node = node["n"]
    node["pubsub_token"] = "secret"
    clean = scrub(deep)
    node = clean
    depth = 0
    while "n" in node:
        node = node["n"]
        depth += 1
    assert depth == 50_000
    assert "pubsub_token" not in node


def test_fixture_files_are_json_objects():
    """Sanity: every fixture is an ActionCable message frame."""
    for path in Path(FIXTURES / "cable").rglob("*.json"):
        if path.name == "_expected.json":
            continue
        frame = json.loads(path.read_text())
        assert set(frame) == {"identifier", "message"}, path


def test_rest_message_maps_to_the_push_shape():
    """A REST message gets the push fields REST leaves out, derived where Chatwoot derives them."""
    from bridge.normalise import message_from_rest  # noqa: PLC0415

    rest = load_fixture("rest/messages_index.json")["payload"]
    conversation = load_fixture("rest/conversations_index.json")["data"]["payload"][0]
    push_keys = set(load_fixture("cable/message.created.json")["message"]["data"])
    for message in rest:
        mapped = message_from_rest(1, message, conversation)
        missing = push_keys - set(mapped) - {"echo_id", "sender", "attachments", "performer"}
        assert not missing, (message["id"], missing)
        assert mapped["account_id"] == 1
        assert isinstance(mapped["updated_at"], str)
    private_note = message_from_rest(1, rest[0], conversation)
    assert private_note["sender_type"] == "User"
    assert private_note["sender_id"] == 2
    assert private_note["conversation"]["assignee_id"] == 1


def test_rest_conversation_maps_to_the_push_shape():
    """channel leaves meta, first_reply_created_at becomes ISO, messages: the last chat one."""
    from bridge.normalise import conversation_from_rest  # noqa: PLC0415

    rest = load_fixture("rest/conversations_index.json")["data"]["payload"][0]
    push = load_fixture("cable/conversation.status_changed.json")["message"]["data"]
    mapped = conversation_from_rest(1, rest)
    assert set(push) - set(mapped) == set()
    assert mapped["channel"] == "Channel::Api"
    assert "channel" not in mapped["meta"]
    assert isinstance(mapped["first_reply_created_at"], str)
    assert [m["id"] for m in mapped["messages"]] == [905]
    assert "uuid" not in mapped
    assert isinstance(mapped["updated_at"], float)
