"""lag-monitor: consumer-group lag of every group of this prefix → ``lag_samples``, every few seconds.

Not a topic consumer: every ``--interval`` seconds (default 5) it asks the cluster, through the admin API,
for every consumer group whose id starts with ``settings.topic_prefix``:

* the partitions the group has committed (``list_consumer_group_offsets``) plus the partitions its live
  members are assigned (``describe_consumer_groups``) — a member that never committed still shows up;
* the end offset (``list_offsets`` latest) and start offset (earliest) of each of those partitions;
* ``lag = end − committed`` (``committed_offset`` NULL and ``lag = end − start`` when nothing is committed).

Each round's rows share one ``sampled_at`` and are inserted in one transaction. ``sample_lag(settings)``
is the plain function the status command and the UI reuse. A round that fails (broker or warehouse
unreachable) is logged and skipped; the next round tries again. Same CLI shape as the consumers:
``mbyn consume lag-monitor [--interval 5] [--duration S]``, SIGTERM → finish the round, JSON summary.
(``--idle-exit`` is accepted for symmetry and means nothing here: the monitor has no input to go idle.)

Lag of a group using Kafka transactions counts the commit markers as offsets, so a caught-up
order-enricher shows lag 0 (its committed offset is past the marker), never a negative value.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from mbyn.settings import Settings

log = logging.getLogger("mbyn.lag")

NAME = "lag-monitor"
ADMIN_TIMEOUT_S = 15.0


def sample_lag(settings: Settings, admin: Any = None) -> list[dict[str, Any]]:
    """One lag sample per (group, topic, partition) for the groups of ``settings.topic_prefix``.

    Rows: ``consumer_group, topic, partition, end_offset, committed_offset (None if never committed),
    lag`` — sorted by group, topic, partition. Raises confluent_kafka.KafkaException if the cluster does
    not answer within 15 s.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import OffsetSpec

    from mbyn.kafka.admin import admin_client

    admin = admin or admin_client(settings)
    listing = admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result()
    groups = sorted(g.group_id for g in listing.valid if g.group_id.startswith(settings.topic_prefix))
    if not groups:
        return []
    partitions: dict[str, dict[tuple[str, int], int | None]] = {g: {} for g in groups}
    for group in groups:
        futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                    request_timeout=ADMIN_TIMEOUT_S)
        for tp in futures[group].result().topic_partitions or []:
            if tp.error is None:
                partitions[group][(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    described = admin.describe_consumer_groups(groups, request_timeout=ADMIN_TIMEOUT_S)
    for group, future in described.items():
        for member in future.result().members or []:
            for tp in (member.assignment.topic_partitions if member.assignment else []):
                partitions[group].setdefault((tp.topic, tp.partition), None)
    wanted = {key for per_group in partitions.values() for key in per_group}
    if not wanted:
        return []
    ends = _offsets(admin, wanted, OffsetSpec.latest())
    starts = _offsets(admin, {k for g in partitions.values() for k, v in g.items() if v is None},
                      OffsetSpec.earliest())
    rows = []
    for group in groups:
        for (topic, partition), committed in sorted(partitions[group].items()):
            end = ends.get((topic, partition))
            if end is None:  # the topic was deleted meanwhile
                continue
            base = committed if committed is not None else starts.get((topic, partition), 0)
            rows.append({"consumer_group": group, "topic": topic, "partition": partition, "end_offset": end,
                         "committed_offset": committed, "lag": max(0, end - base)})
    return rows


def _offsets(admin: Any, keys: set[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
    from confluent_kafka import KafkaException, TopicPartition

    if not keys:
        return {}
    futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in sorted(keys)},
                                 request_timeout=ADMIN_TIMEOUT_S)
    out = {}
    for tp, future in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(future.result().offset)
        except KafkaException as exc:  # e.g. the topic was deleted between listing and asking
            log.warning("%s: no offset for %s[%d]: %s", NAME, tp.topic, tp.partition, exc)
    return out


def write_samples(engine: Any, rows: list[dict[str, Any]], sampled_at: datetime) -> int:
    """Insert one round of samples in one transaction; returns the row count."""
    from mbyn.warehouse import schema, sink_errors

    if not rows:
        return 0
    with sink_errors(f"{NAME}: warehouse"), engine.begin() as conn:
        conn.execute(schema.lag_samples.insert(), [{**r, "sampled_at": sampled_at} for r in rows])
    return len(rows)


def monitor(settings: Settings, *, interval: float = 5.0, duration: float | None = None,
            stop: Any = None) -> dict[str, Any]:
    """Sample every ``interval`` seconds until stopped or ``duration`` elapsed; the summary dict."""
    from confluent_kafka import KafkaException

    from mbyn.errors import MbynError
    from mbyn.kafka.admin import admin_client
    from mbyn.kafka.producer import wait_for_broker
    from mbyn.process import StopFlag
    from mbyn.warehouse import init_schema, warehouse_engine

    stop = stop or StopFlag()
    started = time.monotonic()
    wait_for_broker(settings, NAME, stop=stop)
    engine = warehouse_engine(settings)
    admin = admin_client(settings)
    rounds = rows_written = failed = 0
    groups: set[str] = set()
    stopped_by = "stop"
    try:
        init_schema(engine)
        while True:
            tick = time.monotonic()
            try:
                rows = sample_lag(settings, admin)
                rows_written += write_samples(engine, rows, datetime.now(UTC))
                groups.update(r["consumer_group"] for r in rows)
                rounds += 1
                total = sum(r["lag"] for r in rows)
                log.info("%s: round %d: %d partition(s) in %d group(s), total lag %d", NAME, rounds, len(rows),
                         len({r["consumer_group"] for r in rows}), total)
            except (KafkaException, MbynError) as exc:
                failed += 1
                log.warning("%s: sample skipped: %s", NAME, exc)
            if duration is not None and time.monotonic() - started >= duration:
                stopped_by = "duration"
                break
            wait = max(0.0, interval - (time.monotonic() - tick))
            if duration is not None:
                wait = min(wait, max(0.0, duration - (time.monotonic() - started)))
            if stop.wait(wait):
                stopped_by = stop.reason or "stop"
                break
    finally:
        engine.dispose()
    return {"consumer": NAME, "rounds": rounds, "failed_rounds": failed, "rows": rows_written,
            "groups": sorted(groups), "stopped_by": stopped_by, "seconds": round(time.monotonic() - started, 2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.process import StopFlag, setup_logging

    if args.interval <= 0:
        raise SystemExit("mbyn: --interval must be more than 0 seconds")
    setup_logging()
    stop = StopFlag().install()
    summary = monitor(settings, interval=args.interval, duration=args.duration, stop=stop)
    print(json.dumps(summary), flush=True)
    return 0
