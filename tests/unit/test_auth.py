"""Credentials, scopes and origins: what a client may see, and who it is."""

import time
import warnings

import jwt
import pytest

from bridge import clientproto as cp
from bridge.auth import (
    FULL,
    Access,
    Authenticator,
    AuthError,
    ClientToken,
    Scope,
    build_authenticator,
    origin_allowed,
    scope_from_mapping,
    token_digest,
)
from bridge.config import AuthConfig, ClientTokenConfig, Secret
from bridge.errors import ConfigError
from bridge.events import AccountId, ConversationId, Event
from bridge.server import client_address


SECRET = "a-signing-key-of-at-least-32-characters!"


def ev(name="message.created", account=1, conv: int | None = 42, inbox: int | None = 3) -> Event:
    return Event(
        name,
        AccountId(account),
        ConversationId(conv) if conv else None,
        "cable",
        None,
        0.0,
        {},
        inbox_id=inbox,
    )


def mint(claims: dict, key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 300, **claims}, key, algorithm=alg)


def test_scope_allows_only_inside_every_dimension():
    """Accounts, inboxes, conversations and event globs all restrict."""
    scope = Scope.make(
        accounts=[1], inboxes=[3], conversations=[cp.ConversationRef(42, 1)], events=["message.*"]
    )
    assert scope.allows(ev())
    assert not scope.allows(ev(account=2))
    assert not scope.allows(ev(inbox=4))
    assert not scope.allows(ev(conv=43))
    assert not scope.allows(ev("conversation.updated"))


def test_narrow_scopes_do_not_see_conversationless_events():
    """Presence, contacts and notifications may concern any inbox: whole-account scopes only."""
    narrow = Scope.make(accounts=[1], inboxes=[3])
    wide = Scope.make(accounts=[1])
    presence = ev("presence.update", conv=None, inbox=None)
    assert not narrow.allows(presence)
    assert wide.allows(presence)
    typing = ev("conversation.typing_on")
    assert narrow.allows(typing)
    assert not narrow.allows(ev("conversation.typing_on", inbox=9))


def test_filters_may_narrow_but_not_widen():
    """A filter inside the scope passes; one naming anything outside it is forbidden."""
    scope = Scope.make(
        accounts=[1],
        conversations=[cp.ConversationRef(42, 1)],
        events=["message.*", "conversation.*"],
    )
    scope.check_filter(cp.Filter.make(accounts=frozenset({1}), events=("message.created",)))
    scope.check_filter(cp.Filter.make(conversations=frozenset({cp.ConversationRef(42, 1)})))
    for bad in (
        cp.Filter.make(accounts=frozenset({1, 2})),
        cp.Filter.make(conversations=frozenset({cp.ConversationRef(43, 1)})),
        cp.Filter.make(conversations=frozenset({cp.ConversationRef(42, 2)})),
        cp.Filter.make(events=("*",)),
        cp.Filter.make(events=("presence.update",)),
        cp.Filter.make(events=("contact.*",)),
    ):
        with pytest.raises(cp.ClientError) as info:
            scope.check_filter(bad, ref="r")
        assert (info.value.code, info.value.ref) == ("forbidden", "r")


def test_access_combines_filter_and_scope():
    """The hub's matcher: inside the filter and inside the scope."""
    access = Access(Scope.make(accounts=[1]), cp.Filter.make(events=("message.*",)))
    assert access.matches(ev())
    assert not access.matches(ev(account=2))
    assert not access.matches(ev("conversation.updated"))
    assert Access(FULL, cp.Filter.make()).matches(ev(account=9))
    # The hub skips matching only for the full scope with no filter.
    assert Access(FULL, cp.Filter.make()).everything
    assert not access.everything
    assert not Access(Scope.make(accounts=[1]), cp.Filter.make()).everything
    assert not Access(FULL, cp.Filter.make(accounts=frozenset({1}))).everything


def test_static_tokens_are_compared_by_digest():
    """The configured SHA-256 matches the token; anything else is invalid."""
    scope = Scope.make(accounts=[1])
    auth = Authenticator(
        ("token",),
        (ClientToken("dash", bytes.fromhex(token_digest("s3cret-client-token")), scope),),
    )
    identity = auth.authenticate("s3cret-client-token", time.time())
    assert (identity.name, identity.scope) == ("dash", scope)
    for bad, reason in (
        ("wrong", "invalid"),
        (None, "missing"),
        ("", "missing"),
        ("x" * 9000, "malformed"),
    ):
        with pytest.raises(AuthError) as info:
            auth.authenticate(bad, time.time())
        assert info.value.reason == reason


def test_jwt_scope_claims_become_the_scope():
    """A valid JWT's scope claims are the client's scope; sub names it; exp is kept."""
    auth = Authenticator(("jwt",), jwt_secret=SECRET)
    token = mint(
        {
            "sub": "agent-7",
            "accounts": [1],
            "conversations": ["1:42"],
            "events": ["message.*"],
            "commands": ["typing"],
        }
    )
    identity = auth.authenticate(token, time.time())
    assert identity.name == "agent-7"
    assert identity.scope.accounts == frozenset({1})
    assert identity.scope.commands == frozenset({"typing"})
    assert identity.expires_at is not None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode({"exp": int(time.time()) - 60}, SECRET, algorithm="HS256"), "expired"),
        (mint({}, key="another-key-that-is-also-32-characters-long"), "invalid"),
        (mint({})[:-3] + "abc", "invalid"),
        (jwt.encode({"accounts": [1]}, SECRET, algorithm="HS256"), "invalid"),  # no exp
        (jwt.encode({"exp": int(time.time()) + 86400}, SECRET, algorithm="HS256"), "too_long"),
        (mint({"accounts": "all"}), "bad_claims"),
        (mint({"commands": ["drop_database"]}), "bad_claims"),
        ("a.b.c", "invalid"),
    ],
)
def test_bad_jwts_are_refused(token, reason):
    """Expired, forged, tampered, exp-less, long-lived and badly scoped tokens are refused."""
    auth = Authenticator(("jwt",), jwt_secret=SECRET, jwt_max_ttl=3600)
    with pytest.raises(AuthError) as info:
        auth.authenticate(token, time.time())
    assert info.value.reason == reason


def test_stronger_algorithms_need_longer_keys():
    """HS512 is accepted with a 64-byte key, refused with a shorter one (RFC 7518 §3.2)."""
    long_key = "k" * 64
    assert Authenticator(("jwt",), jwt_secret=long_key).authenticate(
        mint({}, key=long_key, alg="HS512"), time.time()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = mint({}, alg="HS512")
    with pytest.raises(AuthError):
        Authenticator(("jwt",), jwt_secret=SECRET).authenticate(short, time.time())


def test_none_algorithm_is_refused():
    """alg=none tokens never pass."""
    token = jwt.encode({"exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        Authenticator(("jwt",), jwt_secret=SECRET).authenticate(token, time.time())


def test_audience_is_checked_when_configured():
    """With an audience configured, a token for another audience is refused."""
    auth = Authenticator(("jwt",), jwt_secret=SECRET, jwt_audience="chatwoot-bridge")
    assert auth.authenticate(mint({"aud": "chatwoot-bridge"}), time.time())
    with pytest.raises(AuthError):
        auth.authenticate(mint({"aud": "other"}), time.time())


def test_open_mode_gives_a_full_scope():
    """none: everyone is anonymous with every event."""
    identity = Authenticator(("none",)).authenticate(None, time.time())
    assert identity.scope is FULL


def test_build_authenticator_reports_bad_scopes():
    """A bad client table is a configuration error naming the table."""
    cfg = AuthConfig(
        modes=("token",),
        tokens=(ClientTokenConfig("dash", token_digest("t"), (("accounts", ["one"]),)),),
    )
    with pytest.raises(ConfigError, match=r"bridge.clients\[0\] \(dash\): accounts"):
        build_authenticator(cfg)
    ok = AuthConfig(modes=("jwt",), jwt_secret=Secret(SECRET))
    assert build_authenticator(ok).jwt_secret == SECRET


def test_scope_round_trips_through_claims():
    """to_claims and scope_from_mapping agree."""
    scope = Scope.make(
        accounts=[1, 2],
        inboxes=[3],
        conversations=[cp.ConversationRef(42, 1)],
        events=["message.*"],
        commands=["typing"],
    )
    assert scope_from_mapping(scope.to_claims(), "x") == scope


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "h", None, True),
        ("http://127.0.0.1:8765", "127.0.0.1:8765", None, True),
        ("http://evil.example", "127.0.0.1:8765", None, False),
        ("https://app.example.com", "b", ("https://app.example.com",), True),
        ("https://app.example.com/", "b", ("https://app.example.com",), True),
        ("http://app.example.com", "b", ("https://app.example.com",), False),
        ("https://eu.app.example.com", "b", ("https://*.example.com",), True),
        ("https://example.com", "b", ("https://*.example.com",), False),
        ("https://evilexample.com", "b", ("https://*.example.com",), False),
        ("https://example.com.evil.org", "b", ("https://*.example.com",), False),
        ("https://anything", "b", ("*",), True),
    ],
)
def test_origins(origin, host, allowed, ok):
    """Exact origins, wildcard subdomains, the own origin by default."""
    assert origin_allowed(origin, host, allowed) is ok


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("10.0.0.5", None, (), "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4", (), "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", ("10.0.0.0/8",), "1.2.3.4"),
        ("9.9.9.9", "1.2.3.4", ("10.0.0.0/8",), "9.9.9.9"),
        ("10.0.0.5", "garbage", ("10.0.0.0/8",), "garbage"),
        (None, None, (), "unknown"),
    ],
)
def test_client_address_behind_trusted_proxies(peer, xff, trusted, expected):
    """X-Forwarded-For is believed only from trusted proxies, right-most untrusted hop."""
    assert client_address(peer, xff, trusted) == expected
