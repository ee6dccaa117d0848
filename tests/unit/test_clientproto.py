"""The local socket protocol: query and frame parsing, filters, server frames."""

import json

import pytest

from bridge import clientproto as cp
from bridge.events import AccountId, ConversationId, Event


def ev(name="message.created", account=1, conv: int | None = 42) -> Event:
    return Event(
        name=name,
        account_id=AccountId(account),
        conversation_id=ConversationId(conv) if conv else None,
        source="cable",
        occurred_at=None,
        received_at=0.0,
        data={},
    )


def test_empty_query_matches_everything():
    """No filter means every event and no resume."""
    flt, resume = cp.parse_query({})
    assert resume is None
    assert flt.matches(ev())
    assert flt.matches(ev("presence.update", conv=None))
    assert flt.everything


def test_only_the_empty_filter_is_everything():
    """``everything`` lets the hub skip matching: only a filter with no dimension has it."""
    assert not cp.Filter.make(accounts=frozenset({1})).everything
    assert not cp.Filter.make(events=("message.*",)).everything
    by_conv = cp.Filter.make(conversations=frozenset({cp.ConversationRef(42)}))
    assert not by_conv.everything
    assert by_conv.matches(ev(account=7))
    assert not by_conv.matches(ev(conv=43))
    scoped = cp.Filter.make(conversations=frozenset({cp.ConversationRef(42, 1)}))
    assert scoped.matches(ev())
    assert not scoped.matches(ev(account=2))
    assert not scoped.matches(ev(conv=None))


def test_query_filters_by_account_conversation_and_glob():
    """All three dimensions must match."""
    flt, resume = cp.parse_query(
        {
            "accounts": "1,2",
            "conversations": "42,2:7",
            "events": "message.*,conversation.status_changed",
            "since": "abc:17",
        }
    )
    assert resume == cp.Resume("abc", 17)
    assert flt.matches(ev())
    assert flt.matches(ev("conversation.status_changed"))
    assert not flt.matches(ev("conversation.updated"))
    assert not flt.matches(ev(account=3))
    assert not flt.matches(ev(conv=43))
    assert not flt.matches(ev(conv=None))
    assert flt.matches(ev(account=2, conv=7))
    assert not flt.matches(ev(account=1, conv=7))


def test_glob_does_not_overmatch():
    """'message.*' does not match 'messages' nor 'first.reply.created'."""
    flt = cp.Filter.make(events=("message.*",))
    assert not flt.matches(ev("first.reply.created"))
    assert not flt.matches(ev("messagexcreated"))
    assert cp.Filter.make(events=()).matches(ev()) is False


@pytest.mark.parametrize(
    "query",
    [
        {"accounts": "a"},
        {"accounts": "-1"},
        {"accounts": "0"},
        {"conversations": "1:x"},
        {"events": "message created"},
        {"events": "x" * 200},
        {"since": "nocolon"},
        {"since": "ep:-1"},
        {"since": ":5"},
        {"conversations": ",".join(str(i) for i in range(1, 1100))},
    ],
)
def test_bad_queries_are_bad_request(query):
    """Malformed filters give a bad_request error, never an exception of another kind."""
    with pytest.raises(cp.ClientError) as info:
        cp.parse_query(query)
    assert info.value.code == "bad_request"


def test_parse_ping_and_subscribe():
    """Client frames parse into typed values; subscribe keeps its ref."""
    assert cp.parse_frame('{"type":"ping"}') == cp.Ping()
    frame = cp.parse_frame(
        '{"type":"subscribe","ref":"x1","accounts":[1],"conversations":[42,"2:7"],"events":["message.*"]}'
    )
    assert isinstance(frame, cp.Subscribe)
    assert frame.ref == "x1"
    assert frame.filter.accounts == frozenset({1})
    assert frame.filter.conversations == frozenset(
        {cp.ConversationRef(42), cp.ConversationRef(7, 2)}
    )
    everything = cp.parse_frame('{"type":"subscribe","ref":2}')
    assert isinstance(everything, cp.Subscribe)
    assert everything.filter.accounts is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_request"),
        ("[]", "bad_request"),
        ('{"no":"type"}', "bad_request"),
        ('{"type":5}', "bad_request"),
        ('{"type":"dance"}', "unsupported"),
        ('{"type":"subscribe","accounts":"1"}', "bad_request"),
        ('{"type":"subscribe","accounts":[true]}', "bad_request"),
        ('{"type":"subscribe","conversations":[{"a":1}]}', "bad_request"),
        ('{"type":"subscribe","events":[5]}', "bad_request"),
        ('{"type":"ping","x":NaN}', "bad_request"),
        ("[" * 50_000, "bad_request"),
        (b"binary", "bad_request"),
    ],
)
def test_bad_frames(text, code):
    """Bad client frames give the protocol's error codes."""
    with pytest.raises(cp.ClientError) as info:
        cp.parse_frame(text)
    assert info.value.code == code


def test_request_frames():
    """History and command frames parse into one Request shape with defaults."""
    assert cp.parse_frame('{"type":"conversations","ref":1,"account_id":2}') == cp.Request(
        "conversations", 1, 2, status="open", page=1
    )
    messages = cp.parse_frame(
        '{"type":"messages","ref":"m","account_id":1,"conversation_id":42,"before":900}'
    )
    assert (messages.kind, messages.conversation_id, messages.before) == ("messages", 42, 900)
    send = cp.parse_frame(
        '{"type":"send","ref":"s","account_id":1,"conversation_id":4,"content":"hi","echo_id":"e"}'
    )
    assert (send.content, send.echo_id, send.private) == ("hi", "e", False)
    typing = cp.parse_frame('{"type":"typing","account_id":1,"conversation_id":4,"on":false}')
    assert typing.on is False


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"type": "conversations"}, "account_id: a positive integer is required"),
        ({"type": "conversations", "account_id": True}, "account_id: a positive integer"),
        ({"type": "conversations", "account_id": 1, "status": "x"}, "status: one of"),
        ({"type": "conversations", "account_id": 1, "page": 0}, "page: a positive integer"),
        ({"type": "messages", "account_id": 1}, "conversation_id: a positive integer"),
        ({"type": "messages", "account_id": 1, "conversation_id": 2, "before": "9"}, "before"),
        ({"type": "send", "account_id": 1, "conversation_id": 2}, "content: 1 to 20000"),
        ({"type": "send", "account_id": 1, "conversation_id": 2, "content": "  "}, "content"),
        (
            {"type": "send", "account_id": 1, "conversation_id": 2, "content": "x" * 20_001},
            "content",
        ),
        (
            {"type": "send", "account_id": 1, "conversation_id": 2, "content": "x", "echo_id": 5},
            "echo_id",
        ),
        ({"type": "typing", "account_id": 1, "conversation_id": 2, "on": "yes"}, "on: must be"),
    ],
)
def test_bad_request_frames_say_which_field(frame, message):
    """A bad request is bad_request naming the field, with the request's ref."""
    with pytest.raises(cp.ClientError) as info:
        cp.parse_frame(json.dumps({"ref": "r", **frame}))
    assert (info.value.code, info.value.ref) == ("bad_request", "r")
    assert message in info.value.message


def test_error_keeps_ref_of_subscribe():
    """An error answering a subscribe names its ref."""
    with pytest.raises(cp.ClientError) as info:
        cp.parse_frame('{"type":"subscribe","ref":"r9","accounts":["x"]}')
    assert info.value.ref == "r9"


def test_server_frames_shapes():
    """welcome, reset, status, error, subscribed, pong as protocol.md §2."""
    assert json.loads(cp.welcome_frame("ep", 5, "live", 2)) == {
        "type": "welcome",
        "protocol": 1,
        "epoch": "ep",
        "seq": 5,
        "upstream": "live",
        "replayed": 2,
    }
    assert json.loads(cp.reset_frame("too_old", "ep", 9)) == {
        "type": "reset",
        "reason": "too_old",
        "epoch": "ep",
        "seq": 9,
    }
    assert json.loads(cp.status_frame("polling", "t", "r"))["upstream"] == "polling"
    assert json.loads(cp.error_frame("forbidden", "no", "r"))["code"] == "forbidden"
    flt = cp.Filter.make(
        accounts=frozenset({2, 1}), conversations=frozenset({cp.ConversationRef(7, 2)})
    )
    assert json.loads(cp.subscribed_frame("x", flt)) == {
        "type": "subscribed",
        "ref": "x",
        "filter": {"accounts": [1, 2], "conversations": ["2:7"], "events": None},
    }
    assert json.loads(cp.PONG_FRAME) == {"type": "pong"}
