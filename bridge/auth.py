"""Who a local client is and what it may see: credentials, scopes, origins.

Three modes (``BRIDGE_AUTH``): ``none`` (loopback only), static ``token``s from the
configuration file (kept as SHA-256 digests, compared in constant time), and short-lived
``jwt``s (HS256/384/512, verified by PyJWT) minted by the frontend's own backend, so a
browser never holds a long-lived secret. A credential resolves to a :class:`Scope`; a
client's filter may narrow its scope, never widen it. No I/O; time is passed in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

from bridge.clientproto import ClientError, ConversationRef, Filter, filter_from_lists
from bridge.config import AuthConfig, AuthMode
from bridge.errors import ConfigError
from bridge.events import KNOWN_EVENTS, Event


# Accepted when the key is long enough for them (RFC 7518 §3.2: at least the hash size).
JWT_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
# Commands a scope may allow (the frontend's writes through the bridge).
COMMANDS = frozenset({"messages.create", "typing", "conversations.read", "history"})


@dataclass(frozen=True, slots=True)
class Scope:
    """What one credential may see and do; ``None`` for a dimension means everything."""

    accounts: frozenset[int] | None = None
    inboxes: frozenset[int] | None = None
    conversations: frozenset[ConversationRef] | None = None
    events: tuple[str, ...] | None = None
    commands: frozenset[str] = frozenset()
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(
        cls,
        accounts: Iterable[int] | None = None,
        inboxes: Iterable[int] | None = None,
        conversations: Iterable[ConversationRef] | None = None,
        events: Iterable[str] | None = None,
        commands: Iterable[str] = (),
    ) -> Scope:
        """Build a scope and compile its event globs once."""
        globs = None if events is None else tuple(events)
        pattern = None
        if globs is not None:
            pattern = re.compile("|".join(fnmatch.translate(g) for g in globs) or "(?!)")
        return cls(
            None if accounts is None else frozenset(accounts),
            None if inboxes is None else frozenset(inboxes),
            None if conversations is None else frozenset(conversations),
            globs,
            frozenset(commands),
            pattern,
        )

    @property
    def narrow(self) -> bool:
        """Restricted below the account level (by inbox or conversation)."""
        return self.inboxes is not None or self.conversations is not None

    def allows(self, event: Event) -> bool:
        """Whether a client with this scope may see ``event``."""
        if self.accounts is not None and event.account_id not in self.accounts:
            return False
        if self.narrow:
            # Events about no conversation (contacts, presence, notifications, cache
            # keys) may concern any inbox: only scopes that cover whole accounts see them.
            if event.conversation_id is None:
                return False
            if self.inboxes is not None and event.inbox_id not in self.inboxes:
                return False
            if self.conversations is not None and not _ref_in(
                self.conversations, event.account_id, event.conversation_id
            ):
                return False
        return self._pattern is None or self._pattern.fullmatch(event.name) is not None

    def check_filter(self, flt: Filter, ref: object = None) -> None:
        """Refuse a filter that names something outside the scope.

        Raises:
            ClientError: ``forbidden``, naming what is out of scope.
        """
        if self.accounts is not None and flt.accounts is not None:
            outside = sorted(flt.accounts - self.accounts)
            if outside:
                raise ClientError("forbidden", f"accounts {outside} are outside your scope", ref)
        if flt.conversations is not None:
            for conv in flt.conversations:
                if (
                    self.accounts is not None
                    and conv.account_id is not None
                    and conv.account_id not in self.accounts
                ):
                    raise ClientError(
                        "forbidden", f"conversation {conv} is outside your scope", ref
                    )
                if self.conversations is not None and not any(
                    s.display_id == conv.display_id
                    and (conv.account_id is None or s.account_id in (None, conv.account_id))
                    for s in self.conversations
                ):
                    raise ClientError(
                        "forbidden", f"conversation {conv} is outside your scope", ref
                    )
        if self._pattern is not None and flt.events is not None:
            for glob in flt.events:
                if not self._glob_inside(glob):
                    raise ClientError("forbidden", f"events {glob!r} are outside your scope", ref)

    def to_claims(self) -> dict[str, Any]:
        """The scope as JWT claims (what ``chatwoot-bridge jwt`` mints)."""
        claims: dict[str, Any] = {}
        if self.accounts is not None:
            claims["accounts"] = sorted(self.accounts)
        if self.inboxes is not None:
            claims["inboxes"] = sorted(self.inboxes)
        if self.conversations is not None:
            claims["conversations"] = sorted(str(c) for c in self.conversations)
        if self.events is not None:
            claims["events"] = list(self.events)
        if self.commands:
            claims["commands"] = sorted(self.commands)
        return claims

    # Private methods

    def _glob_inside(self, glob: str) -> bool:
        if self._pattern is None:
            return True
        regex = re.compile(fnmatch.translate(glob))
        names = [n for n in KNOWN_EVENTS if regex.fullmatch(n)]
        literal = not any(c in glob for c in "*?[")
        if literal:
            names.append(glob)
        return bool(names) and all(self._pattern.fullmatch(n) for n in names)


FULL = Scope.make(commands=COMMANDS)


def _ref_in(refs: frozenset[ConversationRef], account: int, display: int) -> bool:
    return ConversationRef(display) in refs or ConversationRef(display, account) in refs


def scope_from_mapping(data: Mapping[str, Any], where: str) -> Scope:
    """A scope from a TOML table or JWT claims.

    Raises:
        ValueError: naming the bad key.
    """

    def ints(key: str) -> list[int] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        ):
            raise ValueError(f"{where}: {key} must be a list of positive ids")
        return value

    try:
        flt = filter_from_lists(None, data.get("conversations"), data.get("events"))
    except ClientError as exc:
        raise ValueError(f"{where}: {exc.message}") from None
    commands = data.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise ValueError(f"{where}: commands must be a list of names")
    unknown = sorted(set(commands) - COMMANDS)
    if unknown:
        raise ValueError(
            f"{where}: unknown commands {unknown} (known: {', '.join(sorted(COMMANDS))})"
        )
    return Scope.make(ints("accounts"), ints("inboxes"), flt.conversations, flt.events, commands)


def token_digest(token: str) -> str:
    """What the configuration stores for a static token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A static client credential from the configuration file."""

    name: str
    digest: bytes
    scope: Scope


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated client."""

    name: str
    scope: Scope
    # Unix time the credential stops being valid (JWT exp), or None.
    expires_at: float | None = None


class AuthError(Exception):
    """A refused credential; ``reason`` is a metric label, the message is for the client."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Authenticator:
    """Turns a presented credential into an :class:`Identity`.

    Args:
        modes: the enabled modes; ``none`` lets everyone in with a full scope.
        tokens: the static tokens.
        jwt_secret: the HMAC key for JWTs.
        jwt_audience: the required ``aud`` claim, if any.
        jwt_max_ttl: the longest lifetime (``exp`` - now) a JWT may claim, s.
    """

    def __init__(
        self,
        modes: tuple[AuthMode, ...],
        tokens: tuple[ClientToken, ...] = (),
        jwt_secret: str | None = None,
        jwt_audience: str | None = None,
        jwt_max_ttl: float = 3600.0,
    ) -> None:
        self.modes = modes
        self.tokens = tokens
        self.jwt_secret = jwt_secret
        self.jwt_audience = jwt_audience
        self.jwt_max_ttl = jwt_max_ttl
        key_length = len(jwt_secret.encode()) if jwt_secret else 0
        self.jwt_algorithms = [alg for alg, least in JWT_ALGORITHMS.items() if key_length >= least]

    @property
    def open(self) -> bool:
        """No credential needed."""
        return "none" in self.modes

    def authenticate(self, credential: str | None, now: float) -> Identity:
        """Check a credential.

        Raises:
            AuthError: missing, unknown, expired, forged or malformed.
        """
        if self.open:
            return Identity("anonymous", FULL)
        if not credential:
            raise AuthError(
                "missing", "a token is required (token query parameter or Authorization: Bearer)"
            )
        if len(credential) > 8192:
            raise AuthError("malformed", "token too long")
        if "jwt" in self.modes and credential.count(".") == 2:
            return self._jwt(credential, now)
        if "token" in self.modes:
            return self._static(credential)
        raise AuthError("invalid", "invalid token")

    # Private methods

    def _static(self, credential: str) -> Identity:
        digest = hashlib.sha256(credential.encode()).digest()
        found = None
        # Compare against every token, always: the time taken does not say which matched.
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        if found is None:
            raise AuthError("invalid", "invalid token")
        return Identity(found.name, found.scope)

    def _jwt(self, credential: str, now: float) -> Identity:
        if not self.jwt_secret:
            raise AuthError("invalid", "invalid token")
        try:
            claims = jwt.decode(
                credential,
                self.jwt_secret,
                algorithms=self.jwt_algorithms,
                audience=self.jwt_audience,
                options={"require": ["exp"], "verify_aud": self.jwt_audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid", "invalid token") from None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp - now > self.jwt_max_ttl:
            raise AuthError("too_long", f"token lifetime above {self.jwt_max_ttl:g} s")
        try:
            scope = scope_from_mapping(claims, "token")
        except ValueError as exc:
            raise AuthError("bad_claims", str(exc)) from None
        name = claims.get("sub")
        return Identity(name if isinstance(name, str) else "jwt", scope, float(exp))


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a browser handshake from ``origin`` may proceed.

    No ``Origin`` (not a browser) is allowed. With no allow-list, only the bridge's own
    origin is (cross-site WebSocket hijacking works against loopback too). ``*`` allows
    any; ``https://*.example.com`` allows its subdomains.
    """
    if origin is None:
        return True
    if allowed is None:
        return host is not None and urlsplit(origin).netloc.lower() == host.lower()
    origin = origin.lower().rstrip("/")
    for allowed_origin in allowed:
        pattern = allowed_origin.lower().rstrip("/")
        if pattern in ("*", origin):
            return True
        scheme, sep, rest = pattern.partition("://*.")
        if sep and origin.startswith(scheme + "://") and origin.endswith("." + rest):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Access:
    """A client's scope and its current filter: what the hub delivers to it."""

    scope: Scope
    filter: Filter
    # No filter and the full scope: the hub skips ``matches`` (run per client per event).
    everything: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "everything", self.filter.everything and self.scope is FULL)

    @property
    def conversations(self) -> frozenset[ConversationRef] | None:
        """The conversations the client watches (they are *active* for polling)."""
        return self.filter.conversations

    def matches(self, event: Event) -> bool:
        """Inside the scope and the filter."""
        return self.filter.matches(event) and (self.scope is FULL or self.scope.allows(event))


def build_authenticator(cfg: AuthConfig) -> Authenticator:
    """The authenticator a configuration describes.

    Raises:
        ConfigError: a client table with a bad scope.
    """
    problems: list[str] = []
    tokens = []
    for i, token in enumerate(cfg.tokens):
        try:
            scope = scope_from_mapping(dict(token.scope), f"bridge.clients[{i}] ({token.name})")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        tokens.append(ClientToken(token.name, bytes.fromhex(token.sha256), scope))
    if problems:
        raise ConfigError(problems)
    return Authenticator(
        cfg.modes,
        tuple(tokens),
        None if cfg.jwt_secret is None else cfg.jwt_secret.get(),
        cfg.jwt_audience,
        cfg.jwt_max_ttl,
    )
