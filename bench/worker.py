"""Subprocess entry points of the bench (one process per measured producer or sampler).

* ``produce-generator`` — the Python generator producer exactly as ``mbyn produce generator`` runs it
  (``shop_events`` → ``stream_to_kafka``), with ``--profile FILE`` to write cProfile statistics.
* ``profile-mbyn OUT ARGS...`` — run ``mbyn ARGS...`` in this process under cProfile (e.g. the loader).
* ``memory`` — generation only (no Kafka): iterate ``shop_events`` and sample this process's RSS
  (psutil) every ``--every`` records; stops at ``--records`` or after ``--max-seconds``.

Each prints one JSON object as its last stdout line; ``memory`` prints one per sample before it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from typing import Any


def produce_generator(args: argparse.Namespace) -> dict[str, Any]:
    from mbyn.process import StopFlag, setup_logging
    from mbyn.settings import get_settings
    from mbyn.sources.base import stream_to_kafka
    from mbyn.sources.generator import SOURCE, shop_events

    setup_logging()
    stop = StopFlag().install()
    settings = get_settings()
    events = shop_events(args.seed)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    result = stream_to_kafka(SOURCE, events, settings, count=args.count, rate=args.rate, duration=args.duration,
                             stop=stop)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return {"records": result.records, **result.counters, "seconds": result.seconds, "stopped_by": result.stopped_by}


def memory(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from mbyn.sources.generator import shop_events

    proc = psutil.Process()
    started = time.monotonic()
    deadline = started + args.max_seconds if args.max_seconds else None
    stopped_by = "records"
    count = 0
    print(json.dumps({"records": 0, "rss": proc.memory_info().rss, "seconds": 0.0}), flush=True)
    for _ in shop_events(args.seed):
        count += 1
        if count % args.every == 0:
            elapsed = time.monotonic() - started
            print(json.dumps({"records": count, "rss": proc.memory_info().rss, "seconds": round(elapsed, 3)}),
                  flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                stopped_by = "max-seconds"
                break
        if count >= args.records:
            break
    return {"records": count, "seconds": time.monotonic() - started, "stopped_by": stopped_by,
            "rss": proc.memory_info().rss}


def profile_mbyn(args: argparse.Namespace) -> dict[str, Any]:
    from mbyn.cli.main import main as mbyn_main

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        code = mbyn_main(args.mbyn_args)
    finally:
        profiler.disable()
        profiler.dump_stats(args.out)
    if code != 0:
        raise SystemExit(code)
    return {"profiled": args.mbyn_args, "stats": args.out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/worker.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce-generator")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--profile", default=None, help="write cProfile statistics to this file")
    p.set_defaults(func=produce_generator)
    p = sub.add_parser("profile-mbyn")
    p.add_argument("out", help="cProfile statistics file")
    p.add_argument("mbyn_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=profile_mbyn)
    p = sub.add_parser("memory")
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--every", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=memory)
    args = parser.parse_args(argv)
    summary = args.func(args)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
