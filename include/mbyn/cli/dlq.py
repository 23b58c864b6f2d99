"""``mbyn dlq list`` and ``mbyn dlq replay [--topic T] [--since ISO-TS]``: the quarantined dead letters of
:mod:`mbyn.consumers.dead_letters`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from mbyn.kafka.security import ADMIN
from mbyn.settings import Settings


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.consumers.dead_letters import quarantine_counts  # noqa: PLC0415 - a worker module (see _replay)

    counts = quarantine_counts(settings)
    if not counts:
        print("quarantine is empty")
        return 0
    print(f"{'topic':<36} {'reason':<24} {'records':>8} {'replayed':>9}")
    for topic, reason, n, replayed in counts:
        print(f"{topic:<36} {reason:<24} {n:>8} {replayed:>9}")
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    # The dead-letters sink is a worker module: imported here, a sink that cannot be imported breaks `mbyn dlq`
    # and `mbyn consume dead-letters` only, not every mbyn command.
    from mbyn.consumers.dead_letters import replay  # noqa: PLC0415 - a worker module (see above)

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            raise SystemExit(f"mbyn: --since must be an ISO-8601 timestamp, got {args.since!r}") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        since = since.astimezone(UTC)  # SQLite stores UTC text: compare like with like
    count = replay(settings, topic=args.topic, since=since)
    print(f"replayed {count} record(s)")
    return 0


def register(sub: Any) -> None:
    """Add the ``dlq`` command group."""
    dlq = sub.add_parser("dlq", help="quarantined dead letters").add_subparsers(dest="action", required=True)
    p = dlq.add_parser("list", help="count quarantined records by topic and reason")
    p.set_defaults(handler=_list, reads_pipeline=True)  # the warehouse only: no Kafka principal
    p = dlq.add_parser("replay", help="re-publish quarantined records (not yet replayed) to their original topic")
    p.add_argument("--topic", default=None, help="only records from this topic (catalog or physical name)")
    p.add_argument("--since", default=None, help="only records quarantined at or after this ISO-8601 time")
    p.set_defaults(handler=_replay, reads_pipeline=True, principal=ADMIN)
