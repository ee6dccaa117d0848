"""The REST client: shapes, error mapping (401, 429, 5xx, timeouts, TLS, unreachable), metrics."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
import trustme
from aiohttp import web

from bridge.config import RestConfig, Secret
from bridge.errors import RestFatal, RestRetryable, Unauthorized
from bridge.metrics import Metrics
from bridge.rest import ChatwootREST, parse_profile
from tests.conftest import load_fixture


TOKEN = "rest-test-token"


def make_app(handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def client_for(aiohttp_server, handler, metrics: Metrics, timeout: float = 2.0):
    server = await aiohttp_server(make_app(handler))
    session = aiohttp.ClientSession()
    rest = ChatwootREST(
        session, str(server.make_url("/")), Secret(TOKEN), RestConfig(timeout=timeout), metrics
    )
    return rest, session


async def test_profile_is_read_with_the_api_access_token_header(aiohttp_server, metrics):
    """The token goes in api_access_token; the profile fixture parses."""
    seen = {}

    async def handler(request: web.Request) -> web.Response:
        seen["token"] = request.headers.get("api_access_token")
        seen["path"] = request.path
        return web.json_response(load_fixture("rest/profile.json"))

    rest, session = await client_for(aiohttp_server, handler, metrics)
    async with session:
        profile = await rest.profile()
    assert seen == {"token": TOKEN, "path": "/api/v1/profile"}
    assert profile.user_id == 1
    assert [a.id for a in profile.accounts] == [1, 2]
    assert profile.pubsub_token.get()
    assert metrics.poll_requests.labels(endpoint="profile", outcome="ok")._value.get() == 1


@pytest.mark.parametrize(
    ("status", "body", "error", "outcome"),
    [
        (401, {"error": "Invalid Access Token"}, Unauthorized, "unauthorized"),
        (429, "Retry later", RestRetryable, "rate_limited"),
        (500, {"status": 500}, RestRetryable, "server_error"),
        (503, "", RestRetryable, "server_error"),
        (404, {"error": "not found"}, RestFatal, "client_error"),
        (200, "{broken", RestRetryable, "malformed"),
        (200, {"no": "profile"}, RestRetryable, "malformed"),
        (200, ["list"], RestRetryable, "malformed"),
    ],
)
async def test_failures_map_to_retryable_or_fatal(
    aiohttp_server, metrics, status, body, error, outcome
):
    """Every HTTP failure has a class and an outcome label."""

    async def handler(_: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    rest, session = await client_for(aiohttp_server, handler, metrics)
    async with session:
        with pytest.raises(error) as info:
            await rest.profile()
    assert info.value.outcome == outcome
    assert metrics.poll_requests.labels(endpoint="profile", outcome=outcome)._value.get() == 1
    assert TOKEN not in str(info.value)


async def test_401_message_names_the_right_kind_of_token(aiohttp_server, metrics):
    """A 401 explains that a User access token is needed (bot tokens get 401)."""

    async def handler(_: web.Request) -> web.Response:
        return web.json_response({"error": "Invalid Access Token"}, status=401)

    rest, session = await client_for(aiohttp_server, handler, metrics)
    async with session:
        with pytest.raises(Unauthorized, match="User access token"):
            await rest.profile()


async def test_429_retry_after_is_read_when_present(aiohttp_server, metrics):
    """Retry-After, when a proxy adds one, is passed on."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "7"})

    rest, session = await client_for(aiohttp_server, handler, metrics)
    async with session:
        with pytest.raises(RestRetryable) as info:
            await rest.profile()
    assert info.value.retry_after == 7.0


async def test_hanging_server_times_out(aiohttp_server, metrics):
    """Every request has a timeout."""
    release = asyncio.Event()

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    rest, session = await client_for(aiohttp_server, handler, metrics, timeout=0.2)
    async with session:
        with pytest.raises(RestRetryable, match=r"no answer within 0\.2 s") as info:
            await rest.profile()
        release.set()
    assert info.value.outcome == "timeout"


async def test_unreachable_host_is_retryable(metrics):
    """Connection refused is a clear retryable error."""
    async with aiohttp.ClientSession() as session:
        rest = ChatwootREST(session, "http://127.0.0.1:9", Secret(TOKEN), RestConfig(), metrics)
        with pytest.raises(RestRetryable, match="cannot reach Chatwoot") as info:
            await rest.profile()
    assert info.value.outcome == "unreachable"


async def test_untrusted_certificate_is_a_clear_fatal_tls_error(metrics):
    """A certificate the system does not trust is reported as a TLS error, not retried."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def handler(_: web.Request) -> web.Response:
        return web.json_response({})

    runner = web.AppRunner(make_app(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            rest = ChatwootREST(
                session, f"https://127.0.0.1:{port}", Secret(TOKEN), RestConfig(), metrics
            )
            with pytest.raises(RestFatal, match="TLS error") as info:
                await rest.profile()
        assert info.value.outcome == "tls_error"
    finally:
        await runner.cleanup()


async def test_lists_are_validated(aiohttp_server, metrics):
    """conversations needs data.payload, messages needs payload; non-objects are skipped."""

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/messages"):
            assert request.query["after"] == "5"
            return web.json_response({"meta": {}, "payload": [{"id": 6}, "junk"]})
        assert request.query["updated_within"] == "60"
        assert request.query["status"] == "all"
        return web.json_response(load_fixture("rest/conversations_index.json"))

    rest, session = await client_for(aiohttp_server, handler, metrics)
    async with session:
        conversations = await rest.conversations(1, updated_within=60)
        messages = await rest.messages(1, 42, after=5)
    assert [c["id"] for c in conversations] == [42, 41]
    assert messages == [{"id": 6}]


def test_parse_profile_ignores_odd_accounts():
    """Accounts without an integer id are skipped; missing token is malformed."""
    profile = parse_profile(
        {"id": 3, "pubsub_token": "p", "accounts": [{"id": "x"}, {"id": 4, "name": 5}]}
    )
    assert [a.id for a in profile.accounts] == [4]
    assert profile.accounts[0].name == ""
    with pytest.raises(RestRetryable):
        parse_profile({"id": 3})
