"""Hypothesis fuzzing of the three parsers: upstream decoder, normaliser, client frames."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import actioncable as ac
from bridge import clientproto as cp
from bridge.events import Entry
from bridge.normalise import Dropped, from_cable


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
frames = st.one_of(
    st.text(),
    st.binary(),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "welcome",
                    "ping",
                    "confirm_subscription",
                    "reject_subscription",
                    "disconnect",
                    "x",
                ]
            )
        },
        optional={
            "identifier": json_values,
            "message": json_values,
            "reason": json_values,
            "reconnect": json_values,
        },
    ).map(json.dumps),
)
payloads = st.fixed_dictionaries(
    {
        "event": st.one_of(
            st.sampled_from(
                [
                    "message.created",
                    "conversation.updated",
                    "conversation.typing_on",
                    "notification.created",
                ]
            ),
            st.text(),
        ),
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"account_id": st.one_of(st.integers(), st.text(), st.none())},
                optional={
                    "id": json_values,
                    "conversation_id": json_values,
                    "created_at": json_values,
                    "updated_at": json_values,
                    "conversation": json_values,
                    "notification": json_values,
                    "contact_inbox": st.fixed_dictionaries({"pubsub_token": st.text()}),
                },
            ),
        ),
    }
)


@settings(max_examples=400, deadline=None)
@given(st.lists(frames, max_size=8))
def test_decoder_never_raises(texts):
    """Any sequence of server frames yields events, never an exception."""
    client = ac.CableClient(0.0)
    client.subscribe(ac.room_identifier("t", 1, 1), 0.0)
    for i, text in enumerate(texts):
        client.receive_text(text, float(i))
    for event in client.events_received():
        assert isinstance(
            event,
            ac.Welcome
            | ac.Ping
            | ac.Confirmed
            | ac.Rejected
            | ac.Disconnect
            | ac.Message
            | ac.Violation,
        )


@settings(max_examples=400, deadline=None)
@given(st.one_of(payloads, json_values))
def test_normaliser_never_raises_and_never_leaks(payload):
    """Any payload becomes an event or a Dropped; events encode and carry no pubsub_token key."""
    result = from_cable(payload, received_at=1.0, accounts=None)
    if isinstance(result, Dropped):
        return
    text = Entry.build("e", 1, result).text
    json.loads(text)
    assert '"pubsub_token"' not in text


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.binary(),
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["ping", "subscribe"])},
            optional={
                "ref": json_values,
                "accounts": json_values,
                "conversations": json_values,
                "events": json_values,
            },
        ).map(json.dumps),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["conversations", "messages", "send", "typing", "read"])},
            optional={
                "ref": json_values,
                "account_id": st.one_of(json_values, st.integers()),
                "conversation_id": st.one_of(json_values, st.integers()),
                "before": st.one_of(json_values, st.integers()),
                "page": st.one_of(json_values, st.integers()),
                "status": st.one_of(json_values, st.sampled_from(["open", "all", "x"])),
                "content": st.one_of(json_values, st.text(max_size=50)),
                "echo_id": json_values,
                "private": json_values,
                "on": json_values,
            },
        ).map(json.dumps),
    )
)
def test_client_frame_parser_only_raises_client_errors(text):
    """Client frames parse or raise ClientError with a protocol code."""
    try:
        frame = cp.parse_frame(text)
    except cp.ClientError as exc:
        assert exc.code in {"bad_request", "unsupported"}
        cp.error_frame(exc.code, exc.message, exc.ref)
    else:
        assert isinstance(frame, cp.Ping | cp.Subscribe | cp.Request)
        if isinstance(frame, cp.Request):
            assert frame.account_id > 0
            assert frame.kind == "conversations" or (frame.conversation_id or 0) > 0
