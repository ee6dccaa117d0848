"""The upstream driver against a scripted ActionCable server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from bridge.config import Secret, UpstreamConfig
from bridge.errors import RestRetryable, Unauthorized
from bridge.metrics import Metrics
from bridge.upstream import CableState, Identity, Upstream

from .fake_cable import FakeCable


TOKEN = "pubsub-abc"


class Listener:
    """Records what the upstream reports, with events to await."""

    def __init__(self) -> None:
        self.states: list[tuple[CableState, str]] = []
        self.messages: list[object] = []
        self.accounts: list[int | None] = []
        self.changed = asyncio.Condition()

    def cable_state(self, state: CableState, reason: str) -> None:
        self.states.append((state, reason))
        asyncio.get_running_loop().create_task(self._notify())

    async def cable_message(
        self, payload: object, received_at: float, account_id: int | None
    ) -> None:
        self.messages.append(payload)
        self.accounts.append(account_id)
        await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait(self, predicate) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(predicate)


class Identities:
    """An identity source that counts refreshes."""

    def __init__(self, accounts=(1, 2)) -> None:
        self.calls: list[bool] = []
        self.accounts = accounts
        self.error: Exception | None = None

    async def __call__(self, refresh: bool) -> Identity:
        self.calls.append(refresh)
        if self.error is not None:
            raise self.error
        return Identity(Secret(TOKEN), 7, self.accounts)


def upstream_cfg(url: str, **overrides) -> UpstreamConfig:
    values = {
        "url": url.replace("ws://", "http://").removesuffix("/cable"),
        "cable_url": url,
        "subscribe_timeout": 0.3,
        "stale_after": 0.3,
        "reconnect_delays": (0.01, 0.02),
        "refused_delay": 0.05,
        "open_timeout": 2.0,
    }
    values.update(overrides)
    return UpstreamConfig(**values)


@pytest.fixture
async def cable() -> AsyncIterator[FakeCable]:
    async with FakeCable() as fake:
        yield fake


async def run_upstream(up: Upstream) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(up.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_subscribes_every_account_with_the_dashboard_identifier(cable, metrics: Metrics):
    """One RoomChannel subscription per account, subprotocol and Origin as the dashboard."""
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), Identities(), listener, metrics)
    task = await run_upstream(up)
    try:
        await listener.wait(lambda: (CableState.LIVE, "subscribed") in listener.states)
        conn = cable.connections[0]
        identifiers = [json.loads(f["identifier"]) for f in conn.received]
        assert identifiers == [
            {"channel": "RoomChannel", "pubsub_token": TOKEN, "account_id": 1, "user_id": 7},
            {"channel": "RoomChannel", "pubsub_token": TOKEN, "account_id": 2, "user_id": 7},
        ]
        assert conn.ws.subprotocol == "actioncable-v1-json"
        assert conn.headers["Origin"] == cable.url.replace("ws://", "http://").removesuffix(
            "/cable"
        )
        await cable.broadcast({"event": "message.created", "data": {"account_id": 1}})
        await listener.wait(lambda: len(listener.messages) == 2)
        assert listener.messages[0] == {"event": "message.created", "data": {"account_id": 1}}
        # the same broadcast arrives on both subscriptions, each tagged with its account
        assert listener.accounts == [1, 2]
        assert up.state is CableState.LIVE
        assert up.last_frame_at is not None
    finally:
        await stop(task)


async def test_silent_subscription_failure_refreshes_identity_and_opens_a_new_socket(
    cable, metrics
):
    """No confirm within the timeout: profile re-read, new socket (never resubscribe in place)."""
    cable.behaviour.confirm = False
    identities = Identities()
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), identities, listener, metrics)
    task = await run_upstream(up)
    try:
        first = await cable.wait_connections(1)
        await first.subscribed.wait()
        second = await cable.wait_connections(2)
        await asyncio.wait_for(first.closed.wait(), 5)
        # the dead socket got exactly one subscribe per account, never a repeat
        assert len(first.received) == 2
        cable.behaviour.confirm = True
        await listener.wait(lambda: any(s is CableState.LIVE for s, _ in listener.states))
        assert identities.calls[:2] == [False, True]
        assert metrics.subscribe_failures.labels(reason="timeout")._value.get() >= 1
        assert second is not first
    finally:
        await stop(task)


async def test_stopped_pings_mean_a_dead_socket(cable, metrics):
    """More than stale_after without a ping closes the socket and reconnects."""
    cable.behaviour.ping_interval = None
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), Identities(), listener, metrics)
    task = await run_upstream(up)
    try:
        first = await cable.wait_connections(1)
        await asyncio.wait_for(first.closed.wait(), 5)
        cable.behaviour.ping_interval = 0.05
        await cable.wait_connections(2)
        await listener.wait(lambda: [s for s, _ in listener.states][-1:] == [CableState.LIVE])
        assert any("no ping" in reason for _, reason in listener.states)
        assert metrics.upstream_reconnects._value.get() >= 1
    finally:
        await stop(task)


async def test_disconnect_reconnect_false_waits_long_and_reports_down(cable, metrics):
    """disconnect{reconnect:false} is a long wait, never a hot loop."""
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), Identities(), listener, metrics)
    task = await run_upstream(up)
    try:
        conn = await cable.wait_connections(1)
        await listener.wait(lambda: any(s is CableState.LIVE for s, _ in listener.states))
        await conn.send({"type": "disconnect", "reason": "unauthorized", "reconnect": False})
        await listener.wait(lambda: any(s is CableState.DOWN for s, _ in listener.states))
        _, reason = next(x for x in listener.states if x[0] is CableState.DOWN)
        assert "not to reconnect" in reason
    finally:
        await stop(task)


async def test_disconnect_frame_ends_session_with_refused_delay(cable, metrics):
    """attempt() reports the refused delay rather than the normal backoff."""
    up = Upstream(upstream_cfg(cable.url, refused_delay=123.0), Identities(), Listener(), metrics)
    attempt = asyncio.ensure_future(up.attempt())
    conn = await cable.wait_connections(1)
    await conn.subscribed.wait()
    await conn.send({"type": "disconnect", "reason": "unauthorized", "reconnect": False})
    end = await asyncio.wait_for(attempt, 5)
    assert end.delay == 123.0
    assert end.refresh


async def test_server_restart_disconnect_reconnects(cable, metrics):
    """disconnect{server_restart, reconnect:true} reconnects on the normal backoff."""
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), Identities(), listener, metrics)
    task = await run_upstream(up)
    try:
        conn = await cable.wait_connections(1)
        await conn.subscribed.wait()
        await conn.send({"type": "disconnect", "reason": "server_restart", "reconnect": True})
        await conn.ws.close()
        second = await cable.wait_connections(2)
        await second.subscribed.wait()
        assert any("server_restart" in reason for _, reason in listener.states)
    finally:
        await stop(task)


async def test_reject_refreshes_identity(cable, metrics):
    """A reject (forks) is a failed subscription: refresh and new socket."""
    cable.behaviour.reject = True
    up = Upstream(upstream_cfg(cable.url), Identities(), Listener(), metrics)
    end = await asyncio.wait_for(up.attempt(), 5)
    assert end.reason == "subscription rejected"
    assert end.refresh


async def test_wrong_subprotocol_is_fatal(cable, metrics):
    """A server that does not speak actioncable-v1-json is refused like the JS client does."""
    cable.behaviour.subprotocol = None
    up = Upstream(upstream_cfg(cable.url), Identities(), Listener(), metrics)
    end = await asyncio.wait_for(up.attempt(), 5)
    assert end.fatal
    assert "actioncable-v1-json" in end.reason


async def test_unreachable_cable_is_retryable(metrics):
    """Connection refused ends the attempt without raising."""
    up = Upstream(upstream_cfg("ws://127.0.0.1:9/cable"), Identities(), Listener(), metrics)
    end = await asyncio.wait_for(up.attempt(), 5)
    assert not end.fatal
    assert "cannot open the cable" in end.reason


async def test_bootstrap_errors_shape_the_retry(cable, metrics):
    """401 waits the long delay, other REST failures retry with a refresh."""
    identities = Identities()
    up = Upstream(upstream_cfg(cable.url, refused_delay=77.0), identities, Listener(), metrics)
    identities.error = Unauthorized("nope", endpoint="profile", status=401)
    end = await up.attempt()
    assert end.delay == 77.0
    identities.error = RestRetryable("down", endpoint="profile")
    end = await up.attempt()
    assert end.refresh
    assert end.delay is None
    assert not cable.connections


@pytest.mark.parametrize("presence", [False, True])
async def test_presence_heartbeat_only_when_switched_on(cable, metrics, presence):
    """update_presence is sent only with BRIDGE_PRESENCE=on (chatwoot.md §1.2)."""
    up = Upstream(
        upstream_cfg(cable.url, presence=presence, presence_interval=0.05),
        Identities((1,)),
        Listener(),
        metrics,
    )
    task = await run_upstream(up)
    try:
        conn = await cable.wait_connections(1)
        await conn.subscribed.wait()
        if presence:
            await asyncio.wait_for(conn.performed.wait(), 5)
            actions = [f for f in conn.received if f.get("command") == "message"]
            assert json.loads(actions[0]["data"]) == {"action": "update_presence"}
        else:
            # a negative needs a window: six heartbeat periods without any action
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.performed.wait(), 0.3)
    finally:
        await stop(task)


async def test_malformed_frames_are_counted_not_fatal(cable, metrics):
    """Garbage from the server is counted and the socket carries on."""
    listener = Listener()
    up = Upstream(upstream_cfg(cable.url), Identities((1,)), listener, metrics)
    task = await run_upstream(up)
    try:
        conn = await cable.wait_connections(1)
        await listener.wait(lambda: any(s is CableState.LIVE for s, _ in listener.states))
        await conn.ws.send("not json")
        await conn.ws.send('{"type":"mystery"}')
        await cable.broadcast({"event": "message.created", "data": {"account_id": 1}})
        await listener.wait(lambda: len(listener.messages) == 1)
        assert metrics.upstream_violations._value.get() == 2
        assert len(cable.connections) == 1
    finally:
        await stop(task)


async def test_untrusted_cable_certificate_is_fatal(metrics):
    """wss:// with a certificate the system does not trust is a clear TLS error."""
    import ssl  # noqa: PLC0415

    import trustme  # noqa: PLC0415
    from websockets.asyncio.server import serve  # noqa: PLC0415

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)

    async def handler(ws) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = upstream_cfg(f"wss://127.0.0.1:{port}/cable")
        up = Upstream(cfg, Identities(), Listener(), metrics)
        end = await asyncio.wait_for(up.attempt(), 5)
    assert end.fatal
    assert "TLS error" in end.reason


@pytest.mark.parametrize(
    ("hostile", "closes"),
    [
        (b"\xff\xfe not utf-8", True),  # invalid UTF-8 in a text frame: websockets closes 1007
        ("x" * 70_000, True),  # larger than max_frame_bytes: 1009
        ("[" * 20_000 + "]" * 20_000, False),  # deeply nested JSON: a violation, kept
        ('{"identifier":"nope","message":{"event":"x"}}', False),
    ],
)
async def test_hostile_upstream_frames_never_crash_the_cable(cable, metrics, hostile, closes):
    """Bad frames are counted or end the socket; the upstream reconnects and goes on."""
    listener = Listener()
    up = Upstream(
        upstream_cfg(cable.url, max_frame_bytes=64 * 1024), Identities((1,)), listener, metrics
    )
    task = await run_upstream(up)
    try:
        conn = await cable.wait_connections(1)
        await listener.wait(lambda: any(s is CableState.LIVE for s, _ in listener.states))
        if isinstance(hostile, bytes):
            await conn.ws.send(hostile, text=True)
        else:
            await conn.ws.send(hostile)
        if closes:
            await asyncio.wait_for(conn.closed.wait(), 5)
            second = await cable.wait_connections(2)
            await second.subscribed.wait()
            await cable.broadcast({"event": "message.created", "data": {"account_id": 1}}, second)
        else:
            await cable.broadcast({"event": "message.created", "data": {"account_id": 1}})
        await listener.wait(lambda: listener.messages)
        assert not task.done()
        if not closes:
            assert metrics.upstream_violations._value.get() == 1
            assert len(cable.connections) == 1
    finally:
        await stop(task)
