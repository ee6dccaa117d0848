"""The sans-I/O ActionCable client: every frame type, malformed input, subscription states."""

import json

import pytest

from bridge import actioncable as ac


TOKEN = "tok-123"
ID1 = ac.room_identifier(TOKEN, 1, 7)
ID2 = ac.room_identifier(TOKEN, 2, 7)


def opened(now: float = 0.0) -> ac.CableClient:
    client = ac.CableClient(now)
    client.subscribe(ID1, now)
    client.receive_text('{"type":"welcome"}', now)
    client.events_received()
    client.data_to_send()
    return client


def test_identifier_is_byte_identical_to_the_dashboards():
    """Key order and separators match BaseActionCableConnector.js."""
    assert ID1 == '{"channel":"RoomChannel","pubsub_token":"tok-123","account_id":1,"user_id":7}'


def test_subscribe_waits_for_welcome_then_sends():
    """Subscriptions are queued until the welcome and then sent in order."""
    client = ac.CableClient(0.0)
    client.subscribe(ID1, 0.0)
    client.subscribe(ID2, 0.0)
    assert client.data_to_send() == []
    assert client.subscriptions[ID1] is ac.SubscriptionState.QUEUED
    client.receive_text('{"type":"welcome"}', 1.0)
    assert client.events_received() == [ac.Welcome()]
    sent = [json.loads(frame) for frame in client.data_to_send()]
    assert sent == [
        {"command": "subscribe", "identifier": ID1},
        {"command": "subscribe", "identifier": ID2},
    ]
    assert client.state is ac.ConnectionState.OPEN
    assert client.subscriptions[ID1] is ac.SubscriptionState.PENDING


def test_subscribe_after_welcome_is_sent_at_once_and_only_once():
    """A subscription asked for twice is sent once: the server would ignore the repeat."""
    client = opened()
    client.subscribe(ID2, 2.0)
    client.subscribe(ID2, 2.5)
    assert client.data_to_send() == [ac.encode_command("subscribe", ID2)]


def test_confirm_marks_subscription_and_all_confirmed():
    """confirm_subscription moves PENDING to CONFIRMED."""
    client = opened()
    assert not client.all_confirmed
    client.receive_text(json.dumps({"identifier": ID1, "type": "confirm_subscription"}), 1.0)
    assert client.events_received() == [ac.Confirmed(ID1)]
    assert client.all_confirmed


def test_reject_marks_subscription_rejected():
    """reject_subscription (forks only) is reported."""
    client = opened()
    client.receive_text(json.dumps({"identifier": ID1, "type": "reject_subscription"}), 1.0)
    assert client.events_received() == [ac.Rejected(ID1)]
    assert client.subscriptions[ID1] is ac.SubscriptionState.REJECTED
    assert not client.all_confirmed


def test_confirm_for_unknown_identifier_is_a_violation():
    """A confirm we did not ask for is reported, not trusted."""
    client = opened()
    client.receive_text(json.dumps({"identifier": ID2, "type": "confirm_subscription"}), 1.0)
    [event] = client.events_received()
    assert isinstance(event, ac.Violation)
    assert ID2 not in client.subscriptions


def test_ping_updates_heartbeat_and_staleness():
    """Pings keep the socket fresh; more than the threshold without one is stale."""
    client = opened(0.0)
    client.receive_text('{"type":"ping","message":1795586400}', 5.0)
    assert client.events_received() == [ac.Ping(1795586400)]
    assert not client.is_stale(11.0, 6.0)
    assert client.is_stale(11.01, 6.0)


def test_ping_with_odd_message_still_counts():
    """A ping whose message is not an int is still a heartbeat."""
    client = opened()
    client.receive_text('{"type":"ping","message":"x"}', 1.0)
    assert client.events_received() == [ac.Ping(None)]
    assert client.last_heartbeat_at == 1.0


def test_message_for_confirmed_and_pending_subscriptions():
    """Broadcasts are delivered for confirmed and pending (Rails can send before the confirm)."""
    client = opened()
    payload = {"event": "presence.update", "data": {"account_id": 1}}
    client.receive_text(json.dumps({"identifier": ID1, "message": payload}), 1.0)
    assert client.events_received() == [ac.Message(ID1, payload)]
    client.receive_text(json.dumps({"identifier": ID1, "type": "confirm_subscription"}), 1.0)
    client.receive_text(json.dumps({"identifier": ID1, "message": payload}), 1.0)
    assert client.events_received()[-1] == ac.Message(ID1, payload)


def test_message_for_foreign_identifier_is_a_violation():
    """A broadcast for a subscription we never made is not passed on."""
    client = opened()
    client.receive_text(json.dumps({"identifier": ID2, "message": {"event": "x"}}), 1.0)
    [event] = client.events_received()
    assert isinstance(event, ac.Violation)


@pytest.mark.parametrize(
    ("frame", "reason", "reconnect"),
    [
        (
            {"type": "disconnect", "reason": "server_restart", "reconnect": True},
            "server_restart",
            True,
        ),
        (
            {"type": "disconnect", "reason": "unauthorized", "reconnect": False},
            "unauthorized",
            False,
        ),
        ({"type": "disconnect"}, None, True),
        ({"type": "disconnect", "reason": 5, "reconnect": "no"}, None, True),
    ],
)
def test_disconnect_frame(frame, reason, reconnect):
    """disconnect closes the state machine and carries the server's advice."""
    client = opened()
    client.receive_text(json.dumps(frame), 1.0)
    assert client.events_received() == [ac.Disconnect(reason, reconnect)]
    assert client.state is ac.ConnectionState.CLOSED
    client.receive_text('{"type":"ping","message":1}', 2.0)
    assert client.events_received() == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1,2,3]",
        '"string"',
        "{}",
        '{"type":"confirm_subscription"}',
        '{"type":"reject_subscription","identifier":5}',
        '{"message":{"event":"x"}}',
        '{"identifier":5,"message":{}}',
        '{"type":"hello"}',
        '{"type":"ping","message":NaN}',
        "[" * 100_000,
        b"\xff\xfe\x00",
    ],
)
def test_malformed_frames_become_violations(text):
    """Nothing the server sends can make the decoder raise."""
    client = opened()
    client.receive_text(text, 1.0)
    [event] = client.events_received()
    assert isinstance(event, ac.Violation)
    assert event.size == len(text)


def test_violation_never_quotes_the_frame():
    """Violation reasons are safe to log: a pubsub token in the frame is not echoed."""
    client = opened()
    client.receive_text('{"type":"weird","identifier":"' + TOKEN + '"}', 1.0)
    [event] = client.events_received()
    assert TOKEN not in event.reason


def test_overdue_and_next_deadline():
    """Pending subscriptions past the timeout are overdue; the deadline is the earliest timer."""
    client = ac.CableClient(0.0)
    client.subscribe(ID1, 0.0)
    client.receive_text('{"type":"welcome"}', 1.0)
    assert client.overdue(10.9, 10.0) == []
    assert client.overdue(11.1, 10.0) == [ID1]
    # stale deadline: welcome at 1.0 + 6 = 7.0; subscribe deadline 1.0 + 10 = 11.0
    assert client.next_deadline(6.0, 10.0) == 7.0
    client.receive_text('{"type":"ping","message":1}', 6.0)
    assert client.next_deadline(6.0, 10.0) == 11.0
    client.receive_text(json.dumps({"identifier": ID1, "type": "confirm_subscription"}), 6.5)
    assert client.overdue(100.0, 10.0) == []
    assert client.next_deadline(6.0, 10.0) == 12.0


def test_a_welcome_that_never_comes_times_out_too():
    """Queued subscriptions count from the socket's open: pings alone keep nothing alive."""
    client = ac.CableClient(0.0)
    client.subscribe(ID1, 0.0)
    client.receive_text('{"type":"ping","message":1}', 5.0)  # pings, but the welcome was lost
    assert not client.is_stale(9.0, 6.0)
    assert client.next_deadline(6.0, 10.0) == 10.0
    assert client.overdue(10.5, 10.0) == [ID1]


def test_perform_only_on_confirmed_subscription():
    """update_presence is sent as a message command with data as a JSON string."""
    client = opened()
    client.perform(ID1, "update_presence")
    assert client.data_to_send() == []
    client.receive_text(json.dumps({"identifier": ID1, "type": "confirm_subscription"}), 1.0)
    client.perform(ID1, "update_presence")
    [frame] = client.data_to_send()
    decoded = json.loads(frame)
    assert decoded["command"] == "message"
    assert decoded["identifier"] == ID1
    assert json.loads(decoded["data"]) == {"action": "update_presence"}


def test_closed_client_ignores_everything():
    """After close nothing is processed or sent."""
    client = opened()
    client.close()
    client.subscribe(ID2, 1.0)
    client.receive_text('{"type":"ping","message":1}', 1.0)
    assert client.events_received() == []
    assert client.data_to_send() == []


def test_last_frame_at_tracks_every_frame():
    """The gap-fill window starts at the last frame of any kind."""
    client = opened(0.0)
    assert client.last_frame_at == 0.0
    client.receive_text("garbage", 3.0)
    assert client.last_frame_at == 3.0
