"""Flags of ``chatwoot-bridge simulate``: parsing into a :class:`SimConfig`.

``bridge.cli`` owns the subcommand and its signal handling. Must not contain simulation logic.
"""

from __future__ import annotations

import argparse

from bridge.simulator.config import SimConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags (defaults from ``SimConfig``) to ``parser``."""
    defaults = SimConfig()
    parser.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events/s, 0 pauses")
    parser.add_argument(
        "--ping-interval", type=float, default=defaults.ping_interval, help="seconds between pings"
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=defaults.conversations_per_account,
        help="conversations created per account at start",
    )
    parser.add_argument(
        "--api-token", default=defaults.api_token, help="admin access token (public demo value)"
    )
    parser.add_argument(
        "--pubsub-token", default=defaults.pubsub_token, help="admin pubsub_token (demo value)"
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build a ``SimConfig`` from parsed flags.

    Raises:
        ValueError: A value out of range (see ``SimConfig.__post_init__``).
    """
    return SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        rate=args.rate,
        ping_interval=args.ping_interval,
        conversations_per_account=args.conversations,
        api_token=args.api_token,
        pubsub_token=args.pubsub_token,
    )
