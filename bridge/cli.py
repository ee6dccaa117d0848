"""Command line: ``run``, ``simulate``, ``demo``, ``tail``, ``check`` (protocol.md §1).

``main(argv) -> int`` loads the configuration, sets up logging and runs the asyncio
entry point under uvicorn-style signal handling: the first SIGTERM/SIGINT starts a
graceful stop, a second one forces the exit; SIGHUP reloads the log level.
Exit status: 0 clean stop, 1 fatal error, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import structlog

from bridge import __version__, config, logs
from bridge.errors import ConfigError, RestFatal
from bridge.simulator import cli as sim_cli


log = structlog.get_logger("bridge.cli")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
FORCED_EXIT = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatwoot-bridge",
        description="Realtime bridge for Chatwoot: ActionCable in, normalised events out.",
    )
    parser.add_argument("--version", action="version", version=f"chatwoot-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML configuration file (env overrides it)")
        p.add_argument("--listen", help="local endpoint host:port (BRIDGE_LISTEN)")
        p.add_argument("--log-level", choices=config.LOG_LEVELS, help="BRIDGE_LOG_LEVEL")
        p.add_argument("--log-format", choices=("json", "console"), help="BRIDGE_LOG_FORMAT")

    run = sub.add_parser("run", help="run the daemon")
    common(run)
    check = sub.add_parser("check", help="check that the configuration reaches Chatwoot")
    common(check)

    sim = sub.add_parser("simulate", help="run the bundled Chatwoot simulator")
    sim_cli.add_arguments(sim)
    sim.add_argument("--log-level", choices=config.LOG_LEVELS, default="info")

    demo = sub.add_parser("demo", help="simulator + bridge together, with live events printed")
    demo.add_argument("--listen", default="127.0.0.1:8765", help="bridge host:port")
    demo.add_argument("--sim-listen", default="127.0.0.1:3000", help="simulator host:port")
    demo.add_argument("--rate", type=float, default=2.0, help="simulated events per second")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--log-level", choices=config.LOG_LEVELS, default="warning")
    demo.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open the live page (it opens only where there is a graphical display)",
    )

    token = sub.add_parser(
        "token", help="make a static client token and its [[bridge.clients]] entry"
    )
    token.add_argument("--name", required=True, help="who the token is for")
    token.add_argument("--accounts", help="comma list of account ids (default: all)")
    token.add_argument("--inboxes", help="comma list of inbox ids")
    token.add_argument("--events", help="comma list of event globs")
    token.add_argument("--commands", help="comma list of commands the client may send")

    mint = sub.add_parser("jwt", help="mint a short-lived client JWT (what your backend does)")
    common(mint)
    mint.add_argument("--sub", default="dev", help="the client's name (sub claim)")
    mint.add_argument("--ttl", type=int, default=600, help="seconds until it expires")
    mint.add_argument("--accounts", help="comma list of account ids")
    mint.add_argument("--inboxes", help="comma list of inbox ids")
    mint.add_argument("--conversations", help="comma list of account:display ids")
    mint.add_argument("--events", help="comma list of event globs")
    mint.add_argument("--commands", help="comma list of commands")

    tail = sub.add_parser("tail", help="print the events of a running bridge")
    tail.add_argument("--url", default=None, help="bridge URL (default: http://BRIDGE_LISTEN)")
    tail.add_argument("--accounts", help="comma list of account ids")
    tail.add_argument("--conversations", help="comma list of display ids (or account:id)")
    tail.add_argument("--events", help="comma list of event globs, e.g. 'message.*'")
    tail.add_argument("--since", help="resume from <epoch>:<seq>")
    tail.add_argument("--json", action="store_true", help="print raw frames")
    tail.add_argument("--count", type=int, default=None, help="exit after this many events")
    tail.add_argument(
        "--max-retries", type=int, default=None, help="give up after N failed connects"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    flags = {
        "BRIDGE_LISTEN": getattr(args, "listen", None),
        "BRIDGE_LOG_LEVEL": getattr(args, "log_level", None),
        "BRIDGE_LOG_FORMAT": getattr(args, "log_format", None),
    }
    return {key: value for key, value in flags.items() if value}


def load_config(
    args: argparse.Namespace, env: Mapping[str, str], *, require_upstream: bool = True
) -> config.Config:
    """File < environment < flags.

    Raises:
        ConfigError: with one line per problem.
    """
    path = getattr(args, "config", None)
    file_values = config.read_file(path) if path else None
    return config.load(
        env, file_values=file_values, overrides=_overrides(args), require_upstream=require_upstream
    )


def run_async(
    entry: Callable[[asyncio.Event], Awaitable[int]],
    *,
    on_hup: Callable[[], None] | None = None,
) -> int:
    """Run ``entry(stop)`` with signal handling; a second signal forces exit."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("bridge.forced_exit", signal=signal.Signals(signum).name)
                os._exit(FORCED_EXIT)
            log.info("bridge.signal", signal=signal.Signals(signum).name)
            stop.set()

        handled = [signal.SIGTERM, signal.SIGINT]
        for signum in handled:
            loop.add_signal_handler(signum, on_signal, signum)
        if on_hup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hup)
            handled.append(signal.SIGHUP)
        try:
            return await entry(stop)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())


def _report_config_error(exc: ConfigError, err: TextIO) -> int:
    err.write("chatwoot-bridge: configuration error\n")
    for problem in exc.problems:
        err.write(f"  {problem}\n")
    return EXIT_CONFIG


def _cmd_run(args: argparse.Namespace, env: Mapping[str, str], err: TextIO) -> int:
    from bridge.app import Bridge  # noqa: PLC0415  (keeps `tail` and `--help` light)
    from bridge.systemd import Notifier  # noqa: PLC0415

    cfg = load_config(args, env)
    logs.configure(cfg.log, secrets=cfg.secrets())

    def reload() -> None:
        try:
            fresh = load_config(args, os.environ)
        except ConfigError as exc:
            log.warning("bridge.reload_failed", problems=list(exc.problems))
            return
        logs.set_level(fresh.log.level)
        log.info("bridge.reloaded", log_level=fresh.log.level)

    async def entry(stop: asyncio.Event) -> int:
        try:
            await Bridge(cfg, notifier=Notifier.from_env(os.environ)).run(stop)
        except RestFatal as exc:
            err.write(f"chatwoot-bridge: {exc}\n")
            return EXIT_FATAL
        return EXIT_OK

    return run_async(entry, on_hup=reload)


def _cmd_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bridge.check import check  # noqa: PLC0415

    cfg = load_config(args, env)
    logs.configure(config.LogConfig(format=cfg.log.format, level="critical"), secrets=cfg.secrets())
    ok = asyncio.run(check(cfg, sys.stdout))
    return EXIT_OK if ok else EXIT_FATAL


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.simulator import serve  # noqa: PLC0415

    sim_cfg = sim_cli.config_from_args(args)
    logs.configure(config.LogConfig(level=args.log_level))

    def ready(url: str) -> None:
        sys.stdout.write(
            f"Chatwoot simulator on {url}\n"
            f"  ActionCable {url.replace('http', 'ws', 1)}/cable   control {url}/_sim/state\n"
            f"  point the bridge at it: CHATWOOT_URL={url} "
            f"CHATWOOT_API_TOKEN={sim_cfg.api_token} chatwoot-bridge run\n"
        )
        sys.stdout.flush()

    async def entry(stop: asyncio.Event) -> int:
        await serve(sim_cfg, stop, on_ready=ready)
        return EXIT_OK

    return run_async(entry)


def _cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bridge.demo import DemoOptions, demo  # noqa: PLC0415

    bridge_host, bridge_port = config.parse_listen(args.listen)
    sim_host, sim_port = config.parse_listen(args.sim_listen)
    logs.configure(config.LogConfig(format=None, level=args.log_level))
    opts = DemoOptions(
        bridge_host=bridge_host,
        bridge_port=bridge_port,
        sim_host=sim_host,
        sim_port=sim_port,
        rate=args.rate,
        seed=args.seed,
        duration=args.duration,
        open_browser=not args.no_browser and has_display(env),
    )
    return run_async(lambda stop: demo(opts, stop, sys.stdout))


def has_display(env: Mapping[str, str]) -> bool:
    """A graphical session to open a browser in (never a text browser in this terminal)."""
    return sys.platform in ("darwin", "win32") or bool(
        env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
    )


def _cmd_tail(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bridge.tail import TailOptions, tail  # noqa: PLC0415

    url = args.url
    if url is None:
        cfg = load_config(args, env, require_upstream=False)
        url = f"http://{cfg.server.host}:{cfg.server.port}"
    opts = TailOptions(
        url=url,
        accounts=args.accounts,
        conversations=args.conversations,
        events=args.events,
        since=args.since,
        raw=args.json,
        count=args.count,
        max_retries=args.max_retries,
    )

    async def entry(stop: asyncio.Event) -> int:
        task = asyncio.ensure_future(tail(opts))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stopper):
            pending.cancel()
        return task.result() if task in done else EXIT_OK

    return run_async(entry)


def _scope_args(args: argparse.Namespace) -> dict[str, list[Any]]:
    def ints(raw: str | None) -> list[int] | None:
        return None if not raw else [int(x) for x in raw.split(",") if x.strip()]

    def strs(raw: str | None) -> list[str] | None:
        return None if not raw else [x.strip() for x in raw.split(",") if x.strip()]

    values: dict[str, list[Any] | None] = {
        "accounts": ints(getattr(args, "accounts", None)),
        "inboxes": ints(getattr(args, "inboxes", None)),
        "conversations": strs(getattr(args, "conversations", None)),
        "events": strs(getattr(args, "events", None)),
        "commands": strs(getattr(args, "commands", None)),
    }
    return {k: v for k, v in values.items() if v is not None}


def _cmd_token(args: argparse.Namespace) -> int:
    import secrets as random_tokens  # noqa: PLC0415

    from bridge.auth import scope_from_mapping, token_digest  # noqa: PLC0415

    scope = _scope_args(args)
    scope_from_mapping(scope, "--scope")  # refuses bad values before printing anything
    token = random_tokens.token_urlsafe(32)
    lines = [
        f"# token for {args.name}: give it to the client, keep only the digest below",
        f"#   {token}",
        "[[bridge.clients]]",
        f'name = "{args.name}"',
        f'token_sha256 = "{token_digest(token)}"',
        *(f"{key} = {json.dumps(value)}" for key, value in scope.items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_jwt(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import time  # noqa: PLC0415

    import jwt  # noqa: PLC0415

    from bridge.auth import scope_from_mapping  # noqa: PLC0415

    cfg = load_config(args, env, require_upstream=False)
    if cfg.auth.jwt_secret is None:
        raise ConfigError(["BRIDGE_JWT_SECRET: needed to sign a token"])
    scope = _scope_args(args)
    scope_from_mapping(scope, "--scope")
    if args.ttl <= 0 or args.ttl > cfg.auth.jwt_max_ttl:
        raise ConfigError(
            [f"--ttl: must be between 1 and {cfg.auth.jwt_max_ttl:g} s (BRIDGE_JWT_MAX_TTL_MS)"]
        )
    claims: dict[str, Any] = {"sub": args.sub, "exp": int(time.time()) + args.ttl, **scope}
    if cfg.auth.jwt_audience:
        claims["aud"] = cfg.auth.jwt_audience
    sys.stdout.write(jwt.encode(claims, cfg.auth.jwt_secret.get(), algorithm="HS256") + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The console script ``chatwoot-bridge``."""
    args = _parser().parse_args(argv)
    environ = os.environ if env is None else env
    try:
        match args.command:
            case "run":
                return _cmd_run(args, environ, sys.stderr)
            case "check":
                return _cmd_check(args, environ)
            case "simulate":
                return _cmd_simulate(args)
            case "demo":
                return _cmd_demo(args, environ)
            case "tail":
                return _cmd_tail(args, environ)
            case "token":
                return _cmd_token(args)
            case "jwt":
                return _cmd_jwt(args, environ)
            case _:
                return EXIT_FATAL
    except ConfigError as exc:
        return _report_config_error(exc, sys.stderr)
    except ValueError as exc:
        sys.stderr.write(f"chatwoot-bridge: {exc}\n")
        return EXIT_CONFIG
