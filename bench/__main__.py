"""``python -m bench`` (``make bench``): run the benchmarks, print tables, write JSON.

    python -m bench gapfill [--clients 100] [--rate 2] [--seconds 30]
    python -m bench upstream [--events 60000]
    python -m bench idle [--levels 1000,5000,10000]
    python -m bench            # every benchmark

Loopback only; each scenario is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bench import common, gapfill, idle, upstream_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "which",
        nargs="*",
        default=["upstream", "idle", "gapfill"],
        choices=["upstream", "idle", "gapfill"],
    )
    parser.add_argument("--levels", default="1000,5000,10000", help="idle: client counts")
    parser.add_argument("--events", type=int, default=60_000, help="upstream path: events")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="traffic per scenario")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    results = {"machine": common.machine()}
    if "upstream" in args.which:
        out = asyncio.run(upstream_path.run(args.events))
        print(common.table("upstream path on one core", out["rows"]))
        results["upstream"] = out
    if "idle" in args.which:
        levels = tuple(int(n) for n in args.levels.split(","))
        out = asyncio.run(idle.run(levels))
        print(common.table("idle clients: memory and connection setup", out["rows"]))
        results["idle"] = out
    if "gapfill" in args.which:
        out = asyncio.run(
            gapfill.run(clients=args.clients, rate=args.rate, seconds=args.seconds, seed=args.seed)
        )
        print(common.table("gap fill: delivery delay and Chatwoot REST load", out["rows"]))
        results["gapfill"] = out
    path = common.save("latest", results)
    print(
        f"\nmachine: {results['machine']['cpu']} x{results['machine']['cores']}, "
        f"python {results['machine']['python']}; JSON: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
