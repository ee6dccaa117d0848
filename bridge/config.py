"""Configuration: environment variables, an optional TOML file, command-line overrides.

Owns the names and defaults of protocol.md §1 and validates them; never reads
``os.environ`` itself (the caller passes the mapping) and never prints a secret.
Precedence: file < environment < flags.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import ConfigError


T = TypeVar("T")

LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; only call this where it is sent to its owner."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Where Chatwoot is and how the ActionCable side behaves."""

    # Base URL of Chatwoot, e.g. https://chat.example.com (CHATWOOT_URL).
    url: str = ""
    # ws(s)://host/cable, derived from ``url`` unless CHATWOOT_CABLE_URL is set.
    cable_url: str = ""
    # A *User* access token, sent as the ``api_access_token`` header (CHATWOOT_API_TOKEN).
    api_token: Secret = field(default_factory=lambda: Secret(""))
    # Accounts to bridge; None means every account of the profile (CHATWOOT_ACCOUNT_IDS).
    account_ids: tuple[int, ...] | None = None
    # Overrides of what GET /api/v1/profile says (CHATWOOT_PUBSUB_TOKEN, CHATWOOT_USER_ID).
    pubsub_token: Secret | None = None
    user_id: int | None = None
    # Send update_presence heartbeats, which keeps the agent "online" (BRIDGE_PRESENCE).
    presence: bool = False
    # Heartbeat period when presence is on, seconds (Chatwoot's dashboard uses 20 s).
    presence_interval: float = 20.0
    # No confirm_subscription within this many seconds is a failure, s (10).
    subscribe_timeout: float = 10.0
    # No ping or welcome for longer than this means a dead socket, s (6, as the JS client).
    stale_after: float = 6.0
    # Reconnect delays, s, jittered; the last one repeats (1, 2, 5, 10).
    reconnect_delays: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    # Delay after a disconnect frame with reconnect:false, s (300).
    refused_delay: float = 300.0
    # Opening handshake timeout for the cable socket, s (10).
    open_timeout: float = 10.0
    # Largest upstream frame accepted, bytes (4 MiB).
    max_frame_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RestConfig:
    """How the REST client talks to Chatwoot."""

    # Timeout of one request, s (BRIDGE_REQUEST_TIMEOUT_MS, 10 s).
    timeout: float = 10.0
    # Requests to Chatwoot in flight at once (BRIDGE_REST_CONCURRENCY, 4).
    concurrency: int = 4


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """The REST fallback policy (seed plan, phase 1)."""

    # Interval for active conversations while the cable is not live, s (3).
    active_interval: float = 3.0
    # Interval for the rest, s (30).
    inactive_interval: float = 30.0
    # Consecutive failures before the upstream is reported down (5).
    max_retries: int = 5
    # Error backoff steps, s, jittered (1, 2, 5, 10).
    backoff: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    # Reconciliation poll period while live, s; 0 switches it off (60).
    reconcile_interval: float = 60.0
    # Margin by which each pass reaches back before the last one, s (30).
    gap_margin: float = 30.0
    # While live, changes younger than this wait for the next reconciliation, s (10).
    reconcile_settle: float = 10.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The per-conversation message cache."""

    # Time to live of a conversation's cached messages, s (300).
    ttl: float = 300.0
    # Messages kept per conversation (100).
    max_messages: int = 100


@dataclass(frozen=True, slots=True)
class EventLogConfig:
    """The replay buffer."""

    # Events kept for resume (BRIDGE_REPLAY_SIZE, 10000).
    replay_size: int = 10_000
    # Dedupe keys remembered (5 x replay size by default).
    dedupe_size: int = 50_000
    # Encoded size kept for replay, bytes (BRIDGE_REPLAY_MAX_BYTES, 64 MiB).
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The local endpoint."""

    host: str = "127.0.0.1"
    port: int = 8765
    # Bytes a client may have unsent before it is dropped as a slow consumer (1 MiB).
    client_buffer_bytes: int = 1024 * 1024
    # Largest client frame, bytes (64 KiB); larger ones close with 1009.
    client_max_frame_bytes: int = 64 * 1024
    # Offer per-message deflate (BRIDGE_CLIENT_COMPRESSION): welcome, replay, history and
    # results go compressed; live events stay shared uncompressed frames. About 300 KiB of
    # zlib state per client that accepts it, so off by default.
    client_compression: bool = False
    # Grace period for shutdown, s (5).
    shutdown_grace: float = 5.0

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can reach the listen address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


AuthMode = Literal["none", "token", "jwt"]
SourceName = Literal["cable", "poll", "webhook"]


@dataclass(frozen=True, slots=True)
class ClientTokenConfig:
    """A static client token from the file: its SHA-256 and what it may see and do."""

    name: str
    sha256: str
    # The scope table as written (accounts, inboxes, conversations, events, commands).
    scope: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How local clients prove who they are (BRIDGE_AUTH)."""

    modes: tuple[AuthMode, ...] = ("none",)
    tokens: tuple[ClientTokenConfig, ...] = ()
    # HMAC key for client JWTs (BRIDGE_JWT_SECRET), at least 32 characters.
    jwt_secret: Secret | None = None
    jwt_audience: str | None = None
    # The longest lifetime a JWT may have left, s (1 h).
    jwt_max_ttl: float = 3600.0
    # Browser origins allowed to open the socket; None: the bridge's own origin only.
    allowed_origins: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds on what clients may do."""

    max_clients: int = 10_000
    max_clients_per_ip: int = 200
    # TCP accept to finished WebSocket handshake, s.
    handshake_timeout: float = 10.0
    # Client frames per second (the burst is twice this); above: close 4029.
    frames_per_second: float = 20.0
    # Filter changes per minute (burst 10); above: an error frame.
    subscribes_per_minute: float = 30.0
    # History requests and commands per minute per client (burst 20); above: an error frame.
    commands_per_minute: float = 60.0
    # WebSocket ping period for idle clients, s; 0 switches it off.
    ping_interval: float = 30.0
    # Seconds between SSE keep-alive comments (proxies cut silent streams).
    sse_keepalive: float = 15.0
    # Longest wait for coalescing event frames under bursts, s; 0 switches it off.
    coalesce_max: float = 0.050
    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs).
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Chatwoot webhooks at POST /webhooks/chatwoot."""

    secrets: tuple[Secret, ...] = ()
    allow_unsigned: bool = False
    # Oldest X-Chatwoot-Timestamp accepted, s (5 min).
    tolerance: float = 300.0
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging."""

    # None means: console on a TTY, json otherwise.
    format: LogFormat | None = None
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the daemon needs, validated."""

    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    rest: RestConfig = field(default_factory=RestConfig)
    poller: PollerConfig = field(default_factory=PollerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    eventlog: EventLogConfig = field(default_factory=EventLogConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    # The event sources switched on (BRIDGE_SOURCES): the seed plan's feature flags.
    sources: frozenset[SourceName] = frozenset({"cable", "poll"})

    def secrets(self) -> list[str]:
        """Every secret value configured, for the log redaction processor."""
        found = [self.upstream.api_token.get()]
        if self.upstream.pubsub_token is not None:
            found.append(self.upstream.pubsub_token.get())
        if self.auth.jwt_secret is not None:
            found.append(self.auth.jwt_secret.get())
        found += [s.get() for s in self.webhook.secrets]
        return [s for s in found if s]


# Variables whose values are secret: never echoed back in an error.
SECRET_VARIABLES = frozenset(
    {"CHATWOOT_API_TOKEN", "CHATWOOT_PUBSUB_TOKEN", "BRIDGE_JWT_SECRET", "BRIDGE_WEBHOOK_SECRETS"}
)

# Every variable we know, for the "unknown variable" hint in TOML files.
KNOWN_VARIABLES = frozenset(
    {
        "CHATWOOT_URL",
        "CHATWOOT_CABLE_URL",
        "CHATWOOT_API_TOKEN",
        "CHATWOOT_ACCOUNT_IDS",
        "CHATWOOT_PUBSUB_TOKEN",
        "CHATWOOT_USER_ID",
        "BRIDGE_LISTEN",
        "BRIDGE_POLL_ACTIVE_MS",
        "BRIDGE_POLL_INACTIVE_MS",
        "BRIDGE_POLL_MAX_RETRIES",
        "BRIDGE_POLL_BACKOFF_MS",
        "BRIDGE_RECONCILE_MS",
        "BRIDGE_GAP_MARGIN_MS",
        "BRIDGE_RECONCILE_SETTLE_MS",
        "BRIDGE_CACHE_TTL_MS",
        "BRIDGE_CACHE_MAX_MESSAGES",
        "BRIDGE_REPLAY_SIZE",
        "BRIDGE_REPLAY_MAX_BYTES",
        "BRIDGE_PRESENCE",
        "BRIDGE_LOG_FORMAT",
        "BRIDGE_LOG_LEVEL",
        "BRIDGE_SUBSCRIBE_TIMEOUT_MS",
        "BRIDGE_STALE_AFTER_MS",
        "BRIDGE_RECONNECT_BACKOFF_MS",
        "BRIDGE_RECONNECT_REFUSED_MS",
        "BRIDGE_REQUEST_TIMEOUT_MS",
        "BRIDGE_REST_CONCURRENCY",
        "BRIDGE_CLIENT_BUFFER_BYTES",
        "BRIDGE_CLIENT_MAX_FRAME_BYTES",
        "BRIDGE_CLIENT_COMPRESSION",
        "BRIDGE_SHUTDOWN_GRACE_MS",
        "BRIDGE_AUTH",
        "BRIDGE_CLIENTS",
        "BRIDGE_JWT_SECRET",
        "BRIDGE_JWT_AUDIENCE",
        "BRIDGE_JWT_MAX_TTL_MS",
        "BRIDGE_ALLOWED_ORIGINS",
        "BRIDGE_TRUSTED_PROXIES",
        "BRIDGE_MAX_CLIENTS",
        "BRIDGE_MAX_CLIENTS_PER_IP",
        "BRIDGE_HANDSHAKE_TIMEOUT_MS",
        "BRIDGE_CLIENT_FRAMES_PER_SECOND",
        "BRIDGE_SUBSCRIBES_PER_MINUTE",
        "BRIDGE_COMMANDS_PER_MINUTE",
        "BRIDGE_CLIENT_PING_MS",
        "BRIDGE_SSE_KEEPALIVE_MS",
        "BRIDGE_COALESCE_MAX_MS",
        "BRIDGE_SOURCES",
        "BRIDGE_WEBHOOK_SECRETS",
        "BRIDGE_WEBHOOK_ALLOW_UNSIGNED",
        "BRIDGE_WEBHOOK_TOLERANCE_MS",
        "BRIDGE_WEBHOOK_MAX_BYTES",
    }
)


class _Reader:
    """Collects problems while converting raw strings; one readable line per problem."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def _bad(self, name: str, raw: str, why: str) -> None:
        shown = "(hidden)" if name in SECRET_VARIABLES else repr(raw)
        self.problems.append(f"{name}: {why} (got {shown})")

    def get(self, name: str, convert: Callable[[str], T], default: T, why: str) -> T:
        raw = self.values.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return convert(raw.strip())
        except ValueError:
            self._bad(name, raw, why)
            return default

    def string(self, name: str, default: str = "") -> str:
        raw = self.values.get(name)
        return default if raw is None else raw.strip()


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _ms(raw: str) -> float:
    return _positive_int(raw) / 1000.0


def _ms_or_zero(raw: str) -> float:
    return _non_negative_int(raw) / 1000.0


def _ms_list(raw: str) -> tuple[float, ...]:
    steps = tuple(_ms(part) for part in raw.split(",") if part.strip())
    if not steps:
        raise ValueError(raw)
    return steps


def _id_list(raw: str) -> tuple[int, ...]:
    ids = tuple(_positive_int(part.strip()) for part in raw.split(",") if part.strip())
    if not ids:
        raise ValueError(raw)
    return tuple(sorted(set(ids)))


def _switch(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"on", "true", "1", "yes"}:
        return True
    if lowered in {"off", "false", "0", "no"}:
        return False
    raise ValueError(raw)


def _log_format(raw: str) -> LogFormat:
    if raw == "json":
        return "json"
    if raw == "console":
        return "console"
    raise ValueError(raw)


def _log_level(raw: str) -> str:
    lowered = raw.lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(raw)
    return lowered


def parse_listen(raw: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    Raises:
        ValueError: when it is not a host and a port in 0..65535.
    """
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ValueError(raw)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(raw)
    return host, port


def derive_cable_url(base_url: str) -> str:
    """``https://host/prefix`` becomes ``wss://host/prefix/cable`` (Rails' default mount)."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/cable"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _check_url(reader: _Reader, name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.hostname:
        reader.problems.append(
            f"{name}: must be a {' or '.join(schemes)} URL with a host (got {raw!r})"
        )
        return ""
    if parts.username or parts.password:
        reader.problems.append(f"{name}: must not contain credentials; use CHATWOOT_API_TOKEN")
        return ""
    return raw.rstrip("/")


def load(
    env: Mapping[str, str],
    *,
    file_values: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    require_upstream: bool = True,
) -> Config:
    """Build a validated :class:`Config`.

    Args:
        env: the environment (``os.environ`` at the call site).
        file_values: variables read from a TOML file by :func:`read_file`.
        overrides: variables set by command-line flags.
        require_upstream: whether CHATWOOT_URL and CHATWOOT_API_TOKEN must be set
            (``run`` and ``check`` need them; ``tail`` does not).

    Raises:
        ConfigError: with one line per problem.
    """
    merged: dict[str, str] = {}
    merged.update(file_values or {})
    merged.update({k: v for k, v in env.items() if k in KNOWN_VARIABLES})
    merged.update(overrides or {})
    r = _Reader(merged)

    url = r.string("CHATWOOT_URL")
    if url:
        url = _check_url(r, "CHATWOOT_URL", url, ("http", "https"))
    elif require_upstream:
        r.problems.append("CHATWOOT_URL: required, e.g. https://chat.example.com")
    cable_url = r.string("CHATWOOT_CABLE_URL")
    if cable_url:
        cable_url = _check_url(r, "CHATWOOT_CABLE_URL", cable_url, ("ws", "wss"))
    elif url:
        cable_url = derive_cable_url(url)
    token = r.string("CHATWOOT_API_TOKEN")
    if not token and require_upstream:
        r.problems.append(
            "CHATWOOT_API_TOKEN: required, a User access token (Profile settings > Access token)"
        )
    pubsub = r.string("CHATWOOT_PUBSUB_TOKEN")

    upstream = UpstreamConfig(
        url=url,
        cable_url=cable_url,
        api_token=Secret(token),
        account_ids=r.get(
            "CHATWOOT_ACCOUNT_IDS", _id_list, None, "must be a comma list of account ids"
        ),
        pubsub_token=Secret(pubsub) if pubsub else None,
        user_id=r.get("CHATWOOT_USER_ID", _positive_int, None, "must be a positive integer"),
        presence=r.get("BRIDGE_PRESENCE", _switch, False, "must be on or off"),
        subscribe_timeout=r.get(
            "BRIDGE_SUBSCRIBE_TIMEOUT_MS", _ms, 10.0, "must be a positive number of ms"
        ),
        stale_after=r.get("BRIDGE_STALE_AFTER_MS", _ms, 6.0, "must be a positive number of ms"),
        reconnect_delays=r.get(
            "BRIDGE_RECONNECT_BACKOFF_MS",
            _ms_list,
            (1.0, 2.0, 5.0, 10.0),
            "must be a comma list of positive ms values",
        ),
        refused_delay=r.get(
            "BRIDGE_RECONNECT_REFUSED_MS", _ms, 300.0, "must be a positive number of ms"
        ),
    )
    rest = RestConfig(
        timeout=r.get("BRIDGE_REQUEST_TIMEOUT_MS", _ms, 10.0, "must be a positive number of ms"),
        concurrency=r.get(
            "BRIDGE_REST_CONCURRENCY", _positive_int, 4, "must be a positive integer"
        ),
    )
    poller = PollerConfig(
        active_interval=r.get("BRIDGE_POLL_ACTIVE_MS", _ms, 3.0, "must be a positive number of ms"),
        inactive_interval=r.get(
            "BRIDGE_POLL_INACTIVE_MS", _ms, 30.0, "must be a positive number of ms"
        ),
        max_retries=r.get(
            "BRIDGE_POLL_MAX_RETRIES", _positive_int, 5, "must be a positive integer"
        ),
        backoff=r.get(
            "BRIDGE_POLL_BACKOFF_MS",
            _ms_list,
            (1.0, 2.0, 5.0, 10.0),
            "must be a comma list of positive ms values",
        ),
        reconcile_interval=r.get(
            "BRIDGE_RECONCILE_MS", _ms_or_zero, 60.0, "must be a number of ms, 0 for off"
        ),
        gap_margin=r.get(
            "BRIDGE_GAP_MARGIN_MS", _ms_or_zero, 30.0, "must be a number of ms (0 or more)"
        ),
        reconcile_settle=r.get(
            "BRIDGE_RECONCILE_SETTLE_MS", _ms_or_zero, 10.0, "must be a number of ms (0 or more)"
        ),
    )
    cache = CacheConfig(
        ttl=r.get("BRIDGE_CACHE_TTL_MS", _ms, 300.0, "must be a positive number of ms"),
        max_messages=r.get(
            "BRIDGE_CACHE_MAX_MESSAGES", _positive_int, 100, "must be a positive integer"
        ),
    )
    replay = r.get("BRIDGE_REPLAY_SIZE", _positive_int, 10_000, "must be a positive integer")
    eventlog = EventLogConfig(
        replay_size=replay,
        dedupe_size=max(5 * replay, 1000),
        max_bytes=r.get(
            "BRIDGE_REPLAY_MAX_BYTES", _positive_int, 64 * 1024 * 1024, "must be a positive integer"
        ),
    )
    host, port = r.get(
        "BRIDGE_LISTEN", parse_listen, ("127.0.0.1", 8765), "must be host:port, e.g. 127.0.0.1:8765"
    )
    server = ServerConfig(
        host=host,
        port=port,
        client_buffer_bytes=r.get(
            "BRIDGE_CLIENT_BUFFER_BYTES", _positive_int, 1024 * 1024, "must be a positive integer"
        ),
        client_max_frame_bytes=r.get(
            "BRIDGE_CLIENT_MAX_FRAME_BYTES", _positive_int, 64 * 1024, "must be a positive integer"
        ),
        client_compression=r.get("BRIDGE_CLIENT_COMPRESSION", _switch, False, "must be on or off"),
        shutdown_grace=r.get(
            "BRIDGE_SHUTDOWN_GRACE_MS", _ms, 5.0, "must be a positive number of ms"
        ),
    )
    log = LogConfig(
        format=r.get("BRIDGE_LOG_FORMAT", _log_format, None, "must be json or console"),
        level=r.get(
            "BRIDGE_LOG_LEVEL", _log_level, "info", f"must be one of {', '.join(LOG_LEVELS)}"
        ),
    )
    if poller.inactive_interval < poller.active_interval:
        r.problems.append("BRIDGE_POLL_INACTIVE_MS: must not be shorter than BRIDGE_POLL_ACTIVE_MS")
    auth = _auth(r, server)
    limits = LimitsConfig(
        max_clients=r.get(
            "BRIDGE_MAX_CLIENTS", _positive_int, 10_000, "must be a positive integer"
        ),
        max_clients_per_ip=r.get(
            "BRIDGE_MAX_CLIENTS_PER_IP", _positive_int, 200, "must be a positive integer"
        ),
        handshake_timeout=r.get(
            "BRIDGE_HANDSHAKE_TIMEOUT_MS", _ms, 10.0, "must be a positive number of ms"
        ),
        frames_per_second=r.get(
            "BRIDGE_CLIENT_FRAMES_PER_SECOND", _positive_float, 20.0, "must be a positive number"
        ),
        subscribes_per_minute=r.get(
            "BRIDGE_SUBSCRIBES_PER_MINUTE", _positive_float, 30.0, "must be a positive number"
        ),
        commands_per_minute=r.get(
            "BRIDGE_COMMANDS_PER_MINUTE", _positive_float, 60.0, "must be a positive number"
        ),
        ping_interval=r.get(
            "BRIDGE_CLIENT_PING_MS", _ms_or_zero, 30.0, "must be a number of ms, 0 for off"
        ),
        sse_keepalive=r.get(
            "BRIDGE_SSE_KEEPALIVE_MS", _ms, 15.0, "must be a positive number of ms"
        ),
        coalesce_max=r.get(
            "BRIDGE_COALESCE_MAX_MS", _ms_or_zero, 0.050, "must be a number of ms, 0 for off"
        ),
        trusted_proxies=r.get(
            "BRIDGE_TRUSTED_PROXIES", _networks, (), "must be a comma list of addresses or CIDRs"
        ),
    )
    webhook = WebhookConfig(
        secrets=tuple(Secret(s) for s in _split_list(r.string("BRIDGE_WEBHOOK_SECRETS"))),
        allow_unsigned=r.get("BRIDGE_WEBHOOK_ALLOW_UNSIGNED", _switch, False, "must be on or off"),
        tolerance=r.get(
            "BRIDGE_WEBHOOK_TOLERANCE_MS", _ms, 300.0, "must be a positive number of ms"
        ),
        max_bytes=r.get(
            "BRIDGE_WEBHOOK_MAX_BYTES", _positive_int, 1024 * 1024, "must be a positive integer"
        ),
    )
    default_sources: frozenset[SourceName] = frozenset({"cable", "poll"})
    sources = r.get(
        "BRIDGE_SOURCES", _sources, default_sources, "must be a comma list of cable, poll, webhook"
    )
    if "webhook" in sources and not (webhook.secrets or webhook.allow_unsigned):
        r.problems.append(
            "BRIDGE_SOURCES: webhook needs BRIDGE_WEBHOOK_SECRETS "
            "(or BRIDGE_WEBHOOK_ALLOW_UNSIGNED=on for Chatwoot versions that do not sign)"
        )
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        upstream=upstream,
        rest=rest,
        poller=poller,
        cache=cache,
        eventlog=eventlog,
        server=server,
        log=log,
        auth=auth,
        limits=limits,
        webhook=webhook,
        sources=sources,
    )


def _auth(r: _Reader, server: ServerConfig) -> AuthConfig:
    default: tuple[AuthMode, ...] = ("none",)
    modes = r.get("BRIDGE_AUTH", _auth_modes, default, "must be none, token, jwt or token,jwt")
    if "none" in modes and not server.is_loopback:
        r.problems.append(
            f"BRIDGE_AUTH: none is only allowed while BRIDGE_LISTEN is loopback "
            f"(it is {server.host}); set token and/or jwt"
        )
    secret = r.string("BRIDGE_JWT_SECRET")
    if "jwt" in modes and len(secret) < 32:
        r.problems.append("BRIDGE_JWT_SECRET: required for jwt, at least 32 characters")
    tokens = _client_tokens(r, r.string("BRIDGE_CLIENTS"))
    if "token" in modes and not tokens:
        r.problems.append("BRIDGE_CLIENTS: token auth needs [[bridge.clients]] entries in --config")
    origins = r.string("BRIDGE_ALLOWED_ORIGINS")
    return AuthConfig(
        modes=modes,
        tokens=tokens,
        jwt_secret=Secret(secret) if secret else None,
        jwt_audience=r.string("BRIDGE_JWT_AUDIENCE") or None,
        jwt_max_ttl=r.get("BRIDGE_JWT_MAX_TTL_MS", _ms, 3600.0, "must be a positive number of ms"),
        allowed_origins=tuple(_split_list(origins)) if origins else None,
    )


def _client_tokens(r: _Reader, raw: str) -> tuple[ClientTokenConfig, ...]:
    if not raw:
        return ()
    try:
        tables = json.loads(raw)
    except ValueError:
        r.problems.append("BRIDGE_CLIENTS: must be [[bridge.clients]] tables")
        return ()
    if not isinstance(tables, list):
        r.problems.append("BRIDGE_CLIENTS: must be [[bridge.clients]] tables")
        return ()
    tokens = []
    for i, table in enumerate(tables):
        where = f"bridge.clients[{i}]"
        if not isinstance(table, dict):
            r.problems.append(f"{where}: must be a table")
            continue
        name, digest = table.get("name"), table.get("token_sha256")
        if not isinstance(name, str) or not name:
            r.problems.append(f"{where}: needs a name")
            continue
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest.lower())
        ):
            r.problems.append(
                f"{where} ({name}): token_sha256 must be 64 hex digits (chatwoot-bridge token)"
            )
            continue
        unknown = set(table) - {
            "name",
            "token_sha256",
            "accounts",
            "inboxes",
            "conversations",
            "events",
            "commands",
        }
        if unknown:
            r.problems.append(f"{where} ({name}): unknown keys {sorted(unknown)}")
            continue
        scope = tuple(sorted((k, v) for k, v in table.items() if k not in ("name", "token_sha256")))
        tokens.append(ClientTokenConfig(name, digest.lower(), scope))
    return tuple(tokens)


def _auth_modes(raw: str) -> tuple[AuthMode, ...]:
    modes: list[AuthMode] = []
    for part in _split_list(raw):
        if part == "none":
            modes.append("none")
        elif part == "token":
            modes.append("token")
        elif part == "jwt":
            modes.append("jwt")
        else:
            raise ValueError(raw)
    if not modes or ("none" in modes and len(modes) > 1):
        raise ValueError(raw)
    return tuple(dict.fromkeys(modes))


def _sources(raw: str) -> frozenset[SourceName]:
    found: set[SourceName] = set()
    for part in _split_list(raw):
        if part == "cable":
            found.add("cable")
        elif part == "poll":
            found.add("poll")
        elif part == "webhook":
            found.add("webhook")
        else:
            raise ValueError(raw)
    if not found:
        raise ValueError(raw)
    return frozenset(found)


def _networks(raw: str) -> tuple[str, ...]:
    nets = _split_list(raw)
    for net in nets:
        ipaddress.ip_network(net, strict=False)
    return tuple(nets)


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


def _split_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _flatten(
    prefix: str, table: Mapping[str, Any], out: dict[str, str], problems: list[str]
) -> None:
    for key, value in table.items():
        name = f"{prefix}_{key}".upper() if prefix else key.upper()
        if isinstance(value, Mapping):
            _flatten(name, value, out, problems)
        elif isinstance(value, bool):
            out[name] = "on" if value else "off"
        elif isinstance(value, int | float | str):
            out[name] = str(value)
        elif isinstance(value, list) and all(isinstance(v, int | float | str) for v in value):
            out[name] = ",".join(str(v) for v in value)
        elif name == "BRIDGE_CLIENTS" and isinstance(value, list):
            # [[bridge.clients]] tables travel as JSON to load(), which validates them.
            out[name] = json.dumps(value, default=str)
        else:
            problems.append(f"{name}: unsupported value type {type(value).__name__}")


def read_file(path: Path) -> dict[str, str]:
    """Read a TOML file whose tables spell the variable names.

    ``[chatwoot] url = "…"`` sets CHATWOOT_URL and ``[bridge] poll_active_ms = 3000``
    sets BRIDGE_POLL_ACTIVE_MS; top-level keys may also be written in full.

    Raises:
        ConfigError: when the file cannot be read or parsed, or names unknown keys.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"--config: cannot read {path}: {exc.strerror}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"--config: {path} is not valid TOML: {exc}"]) from None
    out: dict[str, str] = {}
    problems: list[str] = []
    _flatten("", data, out, problems)
    problems.extend(
        f"{name}: unknown setting in {path}" for name in sorted(set(out) - KNOWN_VARIABLES)
    )
    if problems:
        raise ConfigError(problems)
    return out
