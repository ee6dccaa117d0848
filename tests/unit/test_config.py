"""Configuration: defaults, env names of protocol.md §1, precedence, one line per problem."""

from pathlib import Path

import pytest

from bridge import config
from bridge.errors import ConfigError


BASE = {"CHATWOOT_URL": "https://chat.example.com", "CHATWOOT_API_TOKEN": "s3cret-token"}


def test_defaults_match_the_contract():
    """Every default of protocol.md §1."""
    cfg = config.load(BASE)
    assert cfg.upstream.cable_url == "wss://chat.example.com/cable"
    assert cfg.upstream.account_ids is None
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8765)
    assert cfg.poller.active_interval == 3.0
    assert cfg.poller.inactive_interval == 30.0
    assert cfg.poller.max_retries == 5
    assert cfg.poller.backoff == (1.0, 2.0, 5.0, 10.0)
    assert cfg.cache.ttl == 300.0
    assert cfg.cache.max_messages == 100
    assert cfg.eventlog.replay_size == 10_000
    assert cfg.upstream.presence is False
    assert cfg.log.format is None
    assert cfg.log.level == "info"
    assert cfg.upstream.subscribe_timeout == 10.0
    assert cfg.upstream.stale_after == 6.0
    assert cfg.upstream.reconnect_delays == (1.0, 2.0, 5.0, 10.0)


def test_values_are_parsed():
    """Lists, ms, switches, listen address, overrides."""
    cfg = config.load(
        {
            **BASE,
            "CHATWOOT_URL": "http://localhost:3000/sub/",
            "CHATWOOT_ACCOUNT_IDS": "2, 1,2",
            "CHATWOOT_PUBSUB_TOKEN": "pub",
            "CHATWOOT_USER_ID": "7",
            "BRIDGE_LISTEN": "[::1]:9000",
            "BRIDGE_POLL_BACKOFF_MS": "100,200",
            "BRIDGE_PRESENCE": "on",
            "BRIDGE_LOG_FORMAT": "console",
            "BRIDGE_LOG_LEVEL": "DEBUG",
            "BRIDGE_RECONCILE_MS": "0",
        }
    )
    assert cfg.upstream.url == "http://localhost:3000/sub"
    assert cfg.upstream.cable_url == "ws://localhost:3000/sub/cable"
    assert cfg.upstream.account_ids == (1, 2)
    assert cfg.upstream.pubsub_token == config.Secret("pub")
    assert cfg.upstream.user_id == 7
    assert (cfg.server.host, cfg.server.port) == ("::1", 9000)
    assert cfg.server.is_loopback
    assert cfg.poller.backoff == (0.1, 0.2)
    assert cfg.upstream.presence is True
    assert cfg.log.format == "console"
    assert cfg.log.level == "debug"
    assert cfg.poller.reconcile_interval == 0.0


def test_every_problem_is_reported_on_its_own_line():
    """All problems at once, each naming its variable."""
    with pytest.raises(ConfigError) as info:
        config.load(
            {
                "CHATWOOT_URL": "ftp://x",
                "BRIDGE_LISTEN": "nope",
                "BRIDGE_POLL_ACTIVE_MS": "-5",
                "BRIDGE_PRESENCE": "maybe",
                "BRIDGE_LOG_LEVEL": "loud",
                "CHATWOOT_ACCOUNT_IDS": "1,a",
            }
        )
    problems = info.value.problems
    names = [p.split(":")[0] for p in problems]
    assert names == [
        "CHATWOOT_URL",
        "CHATWOOT_API_TOKEN",
        "CHATWOOT_ACCOUNT_IDS",
        "BRIDGE_PRESENCE",
        "BRIDGE_POLL_ACTIVE_MS",
        "BRIDGE_LISTEN",
        "BRIDGE_LOG_LEVEL",
    ]


def test_secrets_are_never_echoed():
    """A bad secret value is reported without its value; repr hides secrets."""
    with pytest.raises(ConfigError) as info:
        config.load({**BASE, "CHATWOOT_URL": "https://user:pw-secret@x.example"})
    assert "pw-secret" not in str(info.value)
    cfg = config.load(BASE)
    assert "s3cret-token" not in repr(cfg)
    assert "s3cret-token" not in str(cfg.upstream.api_token)
    assert f"{cfg.upstream.api_token}" == "Secret('***')"
    assert cfg.secrets() == ["s3cret-token"]


def test_required_only_for_upstream_commands():
    """tail needs no Chatwoot settings."""
    cfg = config.load({}, require_upstream=False)
    assert cfg.upstream.url == ""
    with pytest.raises(ConfigError):
        config.load({})


def test_inactive_shorter_than_active_is_refused():
    """The inactive interval cannot be shorter than the active one."""
    with pytest.raises(ConfigError, match="BRIDGE_POLL_INACTIVE_MS"):
        config.load({**BASE, "BRIDGE_POLL_ACTIVE_MS": "5000", "BRIDGE_POLL_INACTIVE_MS": "1000"})


def test_file_then_env_then_flags(tmp_path: Path):
    """TOML file < environment < flags."""
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[chatwoot]\nurl = "https://file.example"\napi_token = "file-token"\naccount_ids = [3, 4]\n'
        '[bridge]\nlisten = "127.0.0.1:1111"\npoll_active_ms = 1500\npresence = true\n'
    )
    values = config.read_file(path)
    assert values["CHATWOOT_ACCOUNT_IDS"] == "3,4"
    assert values["BRIDGE_PRESENCE"] == "on"
    cfg = config.load(
        {"CHATWOOT_URL": "https://env.example", "UNRELATED": "x"},
        file_values=values,
        overrides={"BRIDGE_LISTEN": "127.0.0.1:2222"},
    )
    assert cfg.upstream.url == "https://env.example"
    assert cfg.upstream.api_token.get() == "file-token"
    assert cfg.upstream.account_ids == (3, 4)
    assert cfg.server.port == 2222
    assert cfg.poller.active_interval == 1.5


def test_file_problems(tmp_path: Path):
    """Unreadable, invalid and unknown settings are reported clearly."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.read_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.read_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[bridge]\npoll_actve_ms = 5\n[chatwoot]\nurl = {a = [{b = 1}]}\n")
    with pytest.raises(ConfigError) as info:
        config.read_file(unknown)
    assert any("BRIDGE_POLL_ACTVE_MS: unknown setting" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    """Only loopback listen addresses count as private."""
    assert config.ServerConfig(host=host).is_loopback is loopback


def test_parse_listen_errors():
    """host:port is required."""
    for raw in ("8765", ":80", "host:99999", "host:x"):
        with pytest.raises(ValueError):  # noqa: PT011
            config.parse_listen(raw)


def test_client_tables_become_static_tokens(tmp_path: Path):
    """[[bridge.clients]] in the file: name, digest and scope reach the auth config."""
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[bridge]\nauth = "token"\n'
        '[[bridge.clients]]\nname = "dash"\ntoken_sha256 = "'
        + "ab" * 32
        + '"\naccounts = [1]\nevents = ["message.*"]\n'
    )
    cfg = config.load(BASE, file_values=config.read_file(path))
    [token] = cfg.auth.tokens
    assert (token.name, token.sha256) == ("dash", "ab" * 32)
    assert dict(token.scope) == {"accounts": [1], "events": ["message.*"]}
    assert cfg.auth.modes == ("token",)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"BRIDGE_AUTH": "token"}, "BRIDGE_CLIENTS: token auth needs"),
        (
            {"BRIDGE_AUTH": "jwt", "BRIDGE_JWT_SECRET": "short"},
            "BRIDGE_JWT_SECRET: required for jwt",
        ),
        ({"BRIDGE_AUTH": "none,jwt"}, "BRIDGE_AUTH: must be"),
        (
            {"BRIDGE_LISTEN": "0.0.0.0:8765"},
            "BRIDGE_AUTH: none is only allowed while BRIDGE_LISTEN is loopback",
        ),
        (
            {"BRIDGE_SOURCES": "cable,webhook"},
            "BRIDGE_SOURCES: webhook needs BRIDGE_WEBHOOK_SECRETS",
        ),
        ({"BRIDGE_SOURCES": "carrier-pigeon"}, "BRIDGE_SOURCES: must be"),
        ({"BRIDGE_TRUSTED_PROXIES": "10.0.0.0/33"}, "BRIDGE_TRUSTED_PROXIES"),
        (
            {"BRIDGE_CLIENTS": '[{"name": "x", "token_sha256": "nothex"}]'},
            "token_sha256 must be 64 hex digits",
        ),
        (
            {
                "BRIDGE_CLIENTS": '[{"name": "x", "token_sha256": "'
                + "0" * 64
                + '", "admin": true}]'
            },
            "unknown keys",
        ),
    ],
)
def test_security_settings_are_validated(values, problem):
    """Auth, sources and proxies: clear problems, secrets never echoed."""
    with pytest.raises(ConfigError) as info:
        config.load({**BASE, **values})
    assert any(problem in p for p in info.value.problems), info.value.problems
    assert "short" not in str(info.value) or "BRIDGE_JWT_SECRET" not in problem


def test_security_defaults():
    """Loopback without auth, own origin only, cable and poll sources, bounded limits."""
    cfg = config.load(BASE)
    assert cfg.auth.modes == ("none",)
    assert cfg.auth.allowed_origins is None
    assert cfg.sources == frozenset({"cable", "poll"})
    assert cfg.limits.max_clients == 10_000
    assert cfg.server.client_buffer_bytes == 1024 * 1024
    assert cfg.webhook.allow_unsigned is False
    full = config.load(
        {
            **BASE,
            "BRIDGE_AUTH": "jwt",
            "BRIDGE_LISTEN": "0.0.0.0:8765",
            "BRIDGE_JWT_SECRET": "k" * 40,
            "BRIDGE_ALLOWED_ORIGINS": "https://a.example, https://*.b.example",
            "BRIDGE_SOURCES": "cable,poll,webhook",
            "BRIDGE_WEBHOOK_SECRETS": "s1,s2",
        }
    )
    assert full.auth.allowed_origins == ("https://a.example", "https://*.b.example")
    assert [s.get() for s in full.webhook.secrets] == ["s1", "s2"]
    assert set(full.secrets()) >= {"k" * 40, "s1", "s2"}


def test_coalescing_window():
    """50 ms by default, 0 turns it off, a bad value is a clear error."""
    assert config.load(BASE).limits.coalesce_max == 0.050
    assert config.load({**BASE, "BRIDGE_COALESCE_MAX_MS": "0"}).limits.coalesce_max == 0.0
    assert config.load({**BASE, "BRIDGE_COALESCE_MAX_MS": "20"}).limits.coalesce_max == 0.020
    with pytest.raises(config.ConfigError, match="BRIDGE_COALESCE_MAX_MS"):
        config.load({**BASE, "BRIDGE_COALESCE_MAX_MS": "soon"})


def test_compression_is_an_opt_in():
    """Per-message deflate is off unless switched on."""
    assert config.load(BASE).server.client_compression is False
    assert config.load({**BASE, "BRIDGE_CLIENT_COMPRESSION": "on"}).server.client_compression
    with pytest.raises(config.ConfigError, match="BRIDGE_CLIENT_COMPRESSION"):
        config.load({**BASE, "BRIDGE_CLIENT_COMPRESSION": "gzip"})
