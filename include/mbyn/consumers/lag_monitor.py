"""lag-monitor: consumer-group lag of every group of this prefix → ``lag_samples``, every few seconds.

Not a topic consumer: every ``--interval`` seconds (default 5) it asks the cluster, through the admin API,
for every consumer group whose id starts with ``settings.topic_prefix``:

* the partitions the group has committed (``list_consumer_group_offsets``) plus the partitions its live
  members are assigned (``describe_consumer_groups``) — a member that never committed still shows up;
* the end offset (``list_offsets`` latest) and start offset (earliest) of each of those partitions;
* ``lag = end − committed`` (``committed_offset`` NULL and ``lag = end − start`` when nothing is committed);
* ``held``: records of that lag the group has read but holds by design (a join window; its commit metadata),
  ``members``: the group's live members;
* ``lag_seconds``: how long the next record the group has not read (at committed + held) has waited — its
  timestamp against now, read with an assign-only reader that fetches one record per lagging partition
  (0 when nothing waits, NULL when unknown). ``mbyn.consumers.lag_state`` turns these into ok | lagging |
  held | stuck.

Each round's rows share one ``sampled_at`` and are inserted in one transaction. ``sample_lag(settings)``
is one round without the write (the broker side is ``mbyn.kafka.inspect.committed_lag``). A round that
fails (broker or warehouse unreachable) is logged and skipped; the next round tries again. Same CLI shape as
the consumers: ``mbyn consume lag-monitor [--interval 5] [--duration S] [--objective S] [--alert-rounds N]``,
SIGTERM → finish the round, JSON summary. Each round also judges the groups against their lag objectives and
raises / clears lag alerts on ``ops-alerts`` (``mbyn.consumers.lag_objectives``).
(``--idle-exit`` is accepted for symmetry and means nothing here: the monitor has no input to go idle.)

Lag of a group using Kafka transactions counts the commit markers as offsets, so a caught-up
order-enricher shows lag 0 (its committed offset is past the marker), never a negative value. A group that read
every record of a transactional topic commits the offset after the last one, the commit marker's; that tail (or
offsets retention deleted) holds no record to read, so it counts as no lag once the reader has looked there.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException

from mbyn.consumers.lag_objectives import OPTIONS as ALERT_OPTIONS
from mbyn.consumers.lag_objectives import LagAlerts, check_options
from mbyn.errors import MbynError
from mbyn.kafka.clients import admin_client, wait_for_broker
from mbyn.kafka.inspect import committed_lag, lag_reader
from mbyn.options import Args, Option, option
from mbyn.process import StopFlag, setup_logging
from mbyn.settings import Settings
from mbyn.warehouse import init_schema, schema, sink_errors, warehouse_engine

log = logging.getLogger("mbyn.lag")

NAME = "lag-monitor"
ADMIN_TIMEOUT_S = 15.0


def sample_lag(settings: Settings, admin: Any = None, reader: Any = None) -> list[dict[str, Any]]:
    """One lag sample per (group, topic, partition) for the groups of ``settings.topic_prefix``.

    Rows: ``consumer_group, topic, partition, end_offset, committed_offset (None if never committed),
    lag, held, members, lag_seconds`` — sorted by group, topic, partition (``mbyn.kafka.inspect.committed_lag``;
    ``mbyn.consumers.lag_state`` says what they mean together). ``reader`` (``lag_reader``) reads the time of
    the next unread record; without one a short-lived reader is opened. Raises
    confluent_kafka.KafkaException if the cluster does not answer within 15 s.
    """
    own = reader is None
    reader = lag_reader(settings, NAME) if own else reader
    try:
        return committed_lag(admin or admin_client(settings), settings.topic_prefix, NAME, ADMIN_TIMEOUT_S,
                             timestamps=reader)
    finally:
        if own:
            reader.close()


def write_samples(engine: Any, rows: list[dict[str, Any]], sampled_at: datetime) -> int:
    """Insert one round of samples in one transaction; returns the row count."""
    if not rows:
        return 0
    with sink_errors(f"{NAME}: warehouse"), engine.begin() as conn:
        conn.execute(schema.lag_samples.insert(), [{**r, "sampled_at": sampled_at} for r in rows])
    return len(rows)


def monitor(settings: Settings, *, interval: float = 5.0, duration: float | None = None,
            stop: Any = None, alerts: LagAlerts | None = None) -> dict[str, Any]:
    """Sample every ``interval`` seconds until stopped or ``duration`` elapsed; the summary dict.

    Each round's samples also go to ``alerts`` (default: the registry's objectives): a group over its lag
    objective raises a lag alert on ``ops-alerts`` (``mbyn.consumers.lag_objectives``).
    """
    stop = stop or StopFlag()
    started = time.monotonic()
    wait_for_broker(settings, NAME, stop=stop)
    engine = warehouse_engine(settings)
    admin = admin_client(settings)
    reader = lag_reader(settings, NAME)  # kept across rounds: the time of each group's next unread record
    alerts = alerts or LagAlerts(settings)
    rounds = rows_written = failed = 0
    groups: set[str] = set()
    stopped_by = "stop"
    try:
        init_schema(engine)
        while True:
            tick = time.monotonic()
            try:
                rows = sample_lag(settings, admin, reader)
                rows_written += write_samples(engine, rows, datetime.now(UTC))
                alerts.observe(rows, admin)  # raises / clears lag alerts (once per transition)
                groups.update(r["consumer_group"] for r in rows)
                rounds += 1
                total = sum(r["lag"] for r in rows)
                log.info("%s: round %d: %d partition(s) in %d group(s), total lag %d", NAME, rounds, len(rows),
                         len({r["consumer_group"] for r in rows}), total)
            except (KafkaException, MbynError) as exc:
                failed += 1
                log.warning("%s: sample skipped: %s", NAME, exc)
            except Exception:  # anything a hostile client left in the cluster: log it, the next round tries again
                failed += 1
                log.exception("%s: sample skipped: unexpected error", NAME)
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
        alerts.close()
        reader.close()
        engine.dispose()
    return {"consumer": NAME, "rounds": rounds, "failed_rounds": failed, "rows": rows_written,
            "lag_alerts": len(alerts.sent), "groups": sorted(groups), "stopped_by": stopped_by,
            "seconds": round(time.monotonic() - started, 2)}


OPTIONS: tuple[Option, ...] = (
    option("--interval", type=float, default=5.0, help="seconds between samples (default 5)"),
    *ALERT_OPTIONS,
)


def run(settings: Settings, args: Args) -> int:
    if args.interval <= 0:
        raise SystemExit("mbyn: --interval must be more than 0 seconds")
    check_options(args.objective, args.alert_rounds)
    setup_logging()
    stop = StopFlag().install()
    alerts = LagAlerts(settings, objective=args.objective, rounds=args.alert_rounds)
    summary = monitor(settings, interval=args.interval, duration=args.duration, stop=stop, alerts=alerts)
    print(json.dumps(summary), flush=True)
    return 0
