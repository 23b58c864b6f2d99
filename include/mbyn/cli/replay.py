"""``mbyn replay --topic T --group G --from-ts ISO [--source kafka|lake] [--no-reload] [--dry-run] [--idle-exit S]``:
rewind a consumer group and re-process (:mod:`mbyn.replay`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mbyn.kafka.security import ADMIN
from mbyn.process import StopFlag, setup_logging
from mbyn.replay import DEFAULT_IDLE_EXIT_S, SOURCES, replay
from mbyn.settings import Settings


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    setup_logging()
    summary = replay(settings, args.topic, args.group, args.from_ts, source=args.source,
                     reload=not args.no_reload, idle_exit=args.idle_exit, stop=StopFlag().install(),
                     dry_run=args.dry_run)
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: Any) -> None:
    """Add ``replay``."""
    p = sub.add_parser("replay", help="rewind a consumer group on a topic to a timestamp and re-process",
                       description="Rewind GROUP's offsets on TOPIC to the first record at or after FROM_TS (Kafka "
                                   "and, for warehouse consumers, kafka_offsets) and re-load; the group must have "
                                   "no active members. Prints a JSON summary.")
    p.add_argument("--topic", required=True, help="catalog topic, e.g. orders")
    p.add_argument("--group", required=True, help="consumer name as in `mbyn consume NAME`, e.g. warehouse-loader")
    p.add_argument("--from-ts", required=True, help="ISO-8601 time, e.g. 2026-11-25T10:00:00Z (naive = UTC)")
    p.add_argument("--source", choices=SOURCES, default="kafka", help="where to re-read from (default: kafka)")
    p.add_argument("--no-reload", action="store_true",
                   help="only rewind; the group's consumers re-read on their next start")
    p.add_argument("--dry-run", action="store_true",
                   help="only preview what would be re-read (per partition: from, to, records); move nothing")
    p.add_argument("--idle-exit", type=float, default=DEFAULT_IDLE_EXIT_S,
                   help=f"in-process re-load stops after S seconds without records (default {DEFAULT_IDLE_EXIT_S:g})")
    p.set_defaults(handler=_replay, reads_pipeline=True, principal=ADMIN)
