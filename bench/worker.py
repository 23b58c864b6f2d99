"""Subprocess entry points of the bench (one process per measured producer).

* ``produce-generator`` — the Python generator producer exactly as ``mbyn produce clickstream`` runs it
  (``shop_events`` → ``stream_to_kafka``), with ``--profile FILE`` to write cProfile statistics.
* ``produce-payloads`` — mbyn's produce path over pre-built bytes: ``TopicProducer.send_raw`` (mbyn's
  producer settings, delivery callbacks, ``poll(0)`` in bunches) of the lines of ``--payload-file`` to
  ``--topic``, unkeyed and without headers (as ProducerPerformance sends them); ``--warmup`` records are
  sent and flushed before the timer starts, then ``--records`` are timed up to the last acknowledgement.
* ``generate`` — the Faker generator alone: ``shop_events`` iterated in this (single-threaded) process,
  ``--warmup`` records untimed, then ``--records`` timed; records/s on one core.
* ``profile-mbyn OUT ARGS...`` — run ``mbyn ARGS...`` in this process under cProfile (e.g. the loader).

Each prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from itertools import islice
from pathlib import Path
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


def produce_payloads(args: argparse.Namespace) -> dict[str, Any]:
    from mbyn.kafka.clients import wait_for_broker
    from mbyn.kafka.producer import TopicProducer
    from mbyn.settings import get_settings

    values = [line for line in Path(args.payload_file).read_bytes().split(b"\n") if line]
    settings = get_settings()
    wait_for_broker(settings, "bench-payloads")
    producer = TopicProducer("bench-payloads", settings)
    send, topic, n = producer.send_raw, args.topic, len(values)

    def send_range(first: int, count: int) -> None:
        for i in range(first, first + count):
            send(topic, values[i % n], None, None)
        if producer.flush(120):
            raise RuntimeError("records still in flight 120 s after the last send")

    send_range(0, args.warmup)
    started = time.perf_counter()
    cpu = time.process_time()
    send_range(args.warmup, args.records)
    seconds = time.perf_counter() - started
    return {**producer.counters.as_dict(), "records": args.records, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu, "payloads": n}


def generate(args: argparse.Namespace) -> dict[str, Any]:
    from mbyn.sources.generator import shop_events

    events = shop_events(args.seed)
    for _ in islice(events, args.warmup):
        pass
    started = time.perf_counter()
    cpu = time.process_time()
    records = 0  # counted, not assumed: a generator that stops early must not look fast
    for _ in islice(events, args.records):
        records += 1
    seconds = time.perf_counter() - started
    return {"records": records, "seconds": round(seconds, 3), "records_per_s": records / seconds,
            "cpu_seconds": round(time.process_time() - cpu, 3)}


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
    p = sub.add_parser("produce-payloads")
    p.add_argument("--payload-file", required=True, help="pre-built values, one per line")
    p.add_argument("--topic", required=True, help="physical topic name")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--records", type=int, required=True)
    p.set_defaults(func=produce_payloads)
    p = sub.add_parser("generate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--records", type=int, required=True)
    p.set_defaults(func=generate)
    args = parser.parse_args(argv)
    summary = args.func(args)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
