"""``python -m bench`` (``make bench``): run the benchmarks, print tables, write JSON.

    python -m bench upstream [--events 60000]
    python -m bench fanout [--levels 100,1000,5000] [--idle 1000,5000,10000]
    python -m bench coalesce [--rates 1,5,20,50,200,400]
    python -m bench gapfill [--clients 100] [--rate 2] [--seconds 30]
    python -m bench            # upstream, fanout, coalesce, gapfill

Loopback only; each scenario is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import structlog

from bench import common, fanout, gapfill, polling, upstream_path


ALL = ["upstream", "fanout", "coalesce", "gapfill"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "which",
        nargs="*",
        choices=[*ALL, []],  # argparse checks an empty list against the choices
        help="benchmarks to run (default: all)",
    )
    parser.add_argument("--levels", default="100,1000,5000", help="fanout: client counts")
    parser.add_argument("--idle", default="1000,5000,10000", help="fanout: idle client counts")
    parser.add_argument("--rates", default="1,5,20,50,200,400", help="coalesce: events/s")
    parser.add_argument("--events", type=int, default=60_000, help="upstream path: events")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="traffic per scenario")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    args.which = args.which or ALL
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = {"machine": common.machine()}
    if "upstream" in args.which:
        out = asyncio.run(upstream_path.run(args.events))
        print(common.table("upstream path on one core", out["rows"]))
        results["upstream"] = out
    if "fanout" in args.which:
        levels = tuple(int(n) for n in args.levels.split(","))
        idle_levels = tuple(int(n) for n in args.idle.split(","))
        out = asyncio.run(fanout.run(levels, idle_levels))
        print(common.table("fan-out: the bridge against the reference relay", out["rows"]))
        results["fanout"] = out
    if "coalesce" in args.which:
        rates = tuple(float(r) for r in args.rates.split(","))
        ours = asyncio.run(fanout.by_rate(rates))
        seed = asyncio.run(polling.run(rates))
        rows = polling.compare_rows(ours, seed)
        print(
            common.table(
                "server CPU per delivery: bridge (coalescing on/off) vs the seed's polling", rows
            )
        )
        results["coalesce"] = {"rows": rows, "bridge": ours, "seed_polling": seed}
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
