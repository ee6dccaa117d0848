"""Simulator configuration defaults, validation and command line."""

from __future__ import annotations

import argparse

import pytest

from bridge.cli import main
from bridge.simulator import SimConfig
from bridge.simulator.cli import add_arguments, config_from_args


def test_documented_defaults() -> None:
    """The defaults are the documented demo world: port 3000, 1 event/s, 3 s pings."""
    cfg = SimConfig()
    assert (cfg.host, cfg.port, cfg.rate, cfg.ping_interval) == ("127.0.0.1", 3000, 1.0, 3.0)
    assert (cfg.api_token, cfg.user_id, cfg.pubsub_token, cfg.bot_token) == (
        "sim-api-token",
        1,
        "sim-pubsub-token",
        "sim-bot-token",
    )
    spec = cfg.world_spec()
    admin, agent = spec.users
    assert admin.roles == ((1, "administrator"), (2, "administrator"))
    assert agent.roles == ((1, "agent"),)
    assert agent.inbox_ids == (1,)
    assert [b.access_token for b in spec.bots] == ["sim-bot-token"]
    assert spec.conversations_per_account == 5


def test_invalid_values_are_all_reported() -> None:
    """Every out-of-range value is named in one ValueError."""
    with pytest.raises(ValueError, match="port") as info:
        SimConfig(port=70000, rate=-1, ping_interval=0, accounts=())
    message = str(info.value)
    for word in ("rate", "ping_interval", "accounts"):
        assert word in message


def test_flags_map_onto_config() -> None:
    """Command-line flags become SimConfig fields."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--rate", "0", "--ping-interval", "0.5", "--seed", "9"]
    )
    cfg = config_from_args(args)
    assert (cfg.port, cfg.rate, cfg.ping_interval, cfg.seed) == (0, 0.0, 0.5, 9)


def test_bad_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration error exits with status 2 and one readable line."""
    assert main(["simulate", "--rate", "-3"]) == 2
    assert "rate must be >= 0" in capsys.readouterr().err
