"""Replay a topic for one consumer group from a point in time (``mbyn replay``, DAG ``replay_topic``).

``replay(settings, topic, group, from_ts)`` moves the group back so that it reads ``topic`` again from
the first record whose Kafka timestamp is at or after ``from_ts``, then lets it re-process:

1. **The group must be idle.** Offsets of a group with active members cannot be moved safely (the
   members would overwrite them): ConsumerGroupActiveError names the group and its members. Stop its
   consumers first (Ctrl-C / SIGTERM; they finish their batch and leave the group).
2. **Target offsets** come from ``offsets_for_times``; a partition with no record that recent targets
   its end offset. A partition is never moved forward: one whose position is already before the target
   stays put, so a replay cannot skip records.
3. **Rewind.** The group's committed offsets in Kafka are altered (``alter_consumer_group_offsets``, which
   the broker also refuses for a non-empty group). Consumers that store their offsets in the warehouse
   (``kafka_offsets``: warehouse-loader, dead-letters) read those instead, so the same partitions are
   rewound there too, in one database transaction. ``store_offsets`` only moves forward during normal
   operation; this is the one place that moves an offset back, on purpose.
4. **Re-load.** For a consumer mbyn can run in-process (``replay_class`` in its registry entry) one copy runs
   right here until it has been idle for ``idle_exit`` seconds — the simplest design that can also *report* the outcome:
   the group is stopped anyway (step 1), so no running copy would pick the work up, and the summary can
   compare row counts before and after. The loaders upsert on business keys, so re-processed records
   change no row count; records that were new anyway (a backlog on the group's other topics) do, and
   ``new_records`` says how many there were. With ``reload=False`` (``--no-reload``), or for any other
   group (e.g. the Airflow DAGs' groups), the group's own consumers re-read on their next start.

The summary dict says what moved (per partition: from, to, records), how many records were re-processed
(exact: the rewound ranges the in-process copy read past again), the row counts of the tables it wrote
before and after, and ``rows_unchanged``.

**Dry run** (``dry_run=True``, the replay DAG's ``dry_run`` param): steps 1–2 without 3–4 — the same checks and the
same per-partition table (from offset, to offset, records) for ``from_ts``, nothing moved or re-loaded. A group with
active members is previewed (they are listed) rather than refused.

**Additive sinks are refused** (``adds_to`` in the registry): the sales-aggregator adds every order to its windows, so
re-reading part of ``orders`` would count those orders twice, and a window's rows cannot be split back
into the records before and after ``from_ts``. ``replay`` raises ReplayError naming the group and how to
rebuild the table from scratch instead (``additive_refusal``), before anything is moved.

``source="lake"`` (re-reading records archived outside Kafka) is refused: this checkout has no lake
archive yet, so only ``source="kafka"`` (within the topic's retention) is available.

Record timestamps are the producer's create time (``message.timestamp.type=CreateTime``), which is set
when the record was produced — usually within milliseconds of the envelope's ``event_time``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import func, inspect, select, update

from mbyn.catalog import load_catalog
from mbyn.consumers.runtime import run_consumer
from mbyn.errors import CatalogError, ConsumerGroupActiveError, ReplayError
from mbyn.kafka.inspect import Member, committed_offsets, group_members, offsets_for_time, open_admin, partitions_of
from mbyn.settings import Settings
from mbyn.warehouse import load_offsets, sink_errors, utc_now, warehouse_engine
from mbyn.warehouse.schema import kafka_offsets as ko
from mbyn.warehouse.schema import metadata
from mbyn.workers import WORKERS

if TYPE_CHECKING:
    from mbyn.consumers.contract import StreamConsumer
    from mbyn.process import StopFlag

log = logging.getLogger("mbyn.replay")

SOURCES = ("kafka", "lake")
DEFAULT_IDLE_EXIT_S = 5.0
KAFKA_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PartitionMove:
    partition: int
    from_offset: int  # the group's position before the replay
    to_offset: int  # the position after the rewind (<= from_offset)

    @property
    def records(self) -> int:
        return self.from_offset - self.to_offset


def parse_timestamp(text: str | datetime) -> datetime:
    """An ISO-8601 timestamp (``Z``, offset or naive = UTC) as an aware UTC datetime; ReplayError if invalid."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ReplayError(f"from-ts: {text!r} is not an ISO-8601 timestamp "
                              "(e.g. 2026-11-25T10:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > datetime.now(UTC):
        raise ReplayError(f"from-ts: {value.isoformat()} is in the future; nothing could be replayed")
    return value


def group_id_for(settings: Settings, group: str) -> str:
    """The Kafka group id of ``group``: the consumer name with the topic prefix, as the runtime builds it.

    A name that already carries the prefix is taken as is.
    """
    if not group or not group.strip():
        raise ReplayError("group: a consumer group name is required, e.g. warehouse-loader")
    prefix = settings.topic_prefix
    return group if prefix and group.startswith(prefix) else prefix + group


def replay(settings: Settings, topic: str, group: str, from_ts: str | datetime, *, source: str = "kafka",
           reload: bool = True, idle_exit: float = DEFAULT_IDLE_EXIT_S, stop: StopFlag | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    """Rewind ``group`` on ``topic`` to ``from_ts`` and re-process (see the module docstring); the summary.

    ``stop`` ends the in-process re-load early (the CLI installs one for SIGTERM/Ctrl-C); what it had not
    re-read yet is re-read by the group's next start, and ``reprocessed`` counts only what it did.

    ``dry_run`` previews and moves nothing: the same checks and the same ``partitions`` (per partition the
    group's position now, the offset it would rewind to and the records between) as a real replay, plus
    ``active_members`` — a group with members is previewed, not refused, so the preview can be read before
    its consumers are stopped (the real replay still refuses them).
    """
    if source not in SOURCES:
        raise ReplayError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    if source == "lake":
        raise ReplayError("source lake: this installation has no lake archive to replay from; use source kafka "
                          "(records within the topic's retention)")
    catalog = load_catalog()
    logical = topic[len(settings.topic_prefix):] if settings.topic_prefix and topic.startswith(
        settings.topic_prefix) else topic
    try:
        physical = catalog.get(logical).physical
    except CatalogError:
        raise ReplayError(f"topic: {topic!r} is not a catalog topic; choose one of "
                          f"{', '.join(sorted(catalog.topics))}") from None
    when = parse_timestamp(from_ts)
    group_id = group_id_for(settings, group)
    consumer_name = group_id[len(settings.topic_prefix):]
    if _adds_to(consumer_name):
        raise ReplayError(additive_refusal(group_id, consumer_name, physical))
    log.info("replay: %s for group %s from %s", physical, group_id, when.isoformat())

    admin = open_admin(settings, timeout_s=KAFKA_TIMEOUT_S)
    members = active_members(admin, group_id)
    if members and not dry_run:
        raise ConsumerGroupActiveError(
            f"consumer group {group_id} has {len(members)} active member(s) ({members_text(members)}); stop its "
            "consumers (Ctrl-C or SIGTERM) and replay again")
    partitions = partitions_of(admin, physical, timeout_s=KAFKA_TIMEOUT_S)
    if partitions is None:
        raise ReplayError(f"topic {physical} does not exist on {settings.bootstrap()}; run `mbyn topics apply`")
    targets = offsets_for_time(settings, physical, partitions, when, timeout_s=KAFKA_TIMEOUT_S)
    committed = {p: o for (_, p), o in committed_offsets(admin, group_id, [(physical, p) for p in partitions],
                                                           timeout_s=KAFKA_TIMEOUT_S).items() if o is not None}
    stored = _stored_offsets(settings, group_id, physical)
    positions = {p: stored.get(p, committed.get(p)) for p in partitions}
    if all(v is None for v in positions.values()):
        raise ReplayError(f"group {group_id} has no committed or stored offsets on {physical}: it has not read "
                          "this topic yet (a new group reads from the earliest record anyway)")
    moves = [PartitionMove(p, pos, min(pos, targets[p])) for p, pos in sorted(positions.items())
             if pos is not None and targets[p] < pos]
    rewound = sum(m.records for m in moves)
    log.info("replay: %d record(s) to re-read on %d partition(s)", rewound, len(moves))

    summary: dict[str, Any] = {
        "topic": physical, "group": group_id, "from_ts": when.isoformat(), "source": source,
        "partitions": [{"partition": m.partition, "from_offset": m.from_offset, "to_offset": m.to_offset,
                        "records": m.records} for m in moves],
        "rewound_records": rewound, "warehouse_offsets_rewound": 0, "dry_run": dry_run,
    }
    factory = _in_process_factory(consumer_name)
    if dry_run:
        summary.update(active_members=[members_text((m,)) for m in members],
                       reload="none: nothing would be rewound" if not moves else
                       f"would run an in-process copy of {consumer_name} until idle" if reload and factory else
                       "would be left to the group's consumers: they re-read on their next start")
        log.info("replay: dry run, nothing moved")
        return summary
    if moves:
        _alter_committed(admin, group_id, physical, moves)
        if stored:
            summary["warehouse_offsets_rewound"] = rewind_stored_offsets(settings, group_id, physical, moves)
    if not reload or factory is None or not moves:
        summary.update(reload="none: nothing was rewound" if not moves else
                       "left to the group's consumers: they re-read from the rewound offsets on their next start",
                       reprocessed=0 if not moves else None)
        return summary
    summary.update(_reload(settings, factory, group_id, physical, moves, idle_exit, stop))
    return summary


# Steps ----------------------------------------------------------------------------------------------

def additive_refusal(group_id: str, consumer_name: str, physical: str) -> str:
    """Why ``group_id`` cannot be replayed and how to rebuild its table instead."""
    table = _adds_to(consumer_name)
    return (f"group {group_id}: {consumer_name} adds every record to {table}, so replaying {physical} would count "
            f"the re-read records twice; mbyn replay refuses it. To recompute {table}: stop every {consumer_name} "
            f"copy, delete all rows of {table} and this group's rows of kafka_offsets and stream_watermarks "
            f"(consumer_group = '{group_id}'), then start {consumer_name} again: it re-reads from the earliest "
            "record still retained (windows older than the retention are lost)")


def active_members(admin: AdminClient, group_id: str) -> tuple[Member, ...]:
    """The live members of ``group_id`` (an unknown group has none); ReplayError if it cannot be described."""
    try:
        return group_members(admin, group_id, timeout_s=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot describe consumer group {group_id}: {exc}") from None


def members_text(members: Iterable[Member]) -> str:
    """``client-id@host`` of each member, comma-separated (for messages and the dry-run summary)."""
    return ", ".join(f"{m.client_id}@{m.host.strip('/')}" for m in members)


def _alter_committed(admin: AdminClient, group_id: str, physical: str, moves: list[PartitionMove]) -> None:
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(physical, m.partition, m.to_offset)
                                                      for m in moves])
    try:
        result = admin.alter_consumer_group_offsets([request], request_timeout=KAFKA_TIMEOUT_S)[group_id].result()
    except KafkaException as exc:
        # The broker's own guard: a member joined between our check and the change.
        raise ConsumerGroupActiveError(f"consumer group {group_id}: the broker refused to move its offsets "
                                       f"({exc}); stop its consumers and replay again") from None
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise ReplayError(f"consumer group {group_id}: offsets not moved for "
                          + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed))


def _stored_offsets(settings: Settings, group_id: str, physical: str) -> dict[int, int]:
    """The group's offsets on ``physical`` in ``kafka_offsets`` (empty when it does not store them there)."""
    engine = warehouse_engine(settings)
    try:
        with sink_errors("replay: reading kafka_offsets"):
            if not inspect(engine).has_table("kafka_offsets"):
                return {}
            with engine.begin() as conn:
                return {p: o for (t, p), o in load_offsets(conn, group_id).items() if t == physical}
    finally:
        engine.dispose()


def rewind_stored_offsets(settings: Settings, group_id: str, physical: str, moves: list[PartitionMove]) -> int:
    """Set the group's stored offsets of the moved partitions back, in one transaction; rows changed."""
    engine = warehouse_engine(settings)
    changed = 0
    try:
        with sink_errors("replay: rewinding kafka_offsets"), engine.begin() as conn:
            now = utc_now()
            for m in moves:
                result = conn.execute(update(ko).where(ko.c.consumer_group == group_id, ko.c.topic == physical,
                                                       ko.c.partition == m.partition)
                                      .values(next_offset=m.to_offset, updated_at=now))
                changed += result.rowcount
    finally:
        engine.dispose()
    log.info("replay: rewound %d stored offset(s) of %s in the warehouse", changed, group_id)
    return changed


def _adds_to(consumer_name: str) -> str:
    """The table a registered consumer's writes add up in ("" for upserting sinks and unknown groups)."""
    entry = WORKERS.get(consumer_name)
    return entry.adds_to if entry is not None and entry.kind == "consumer" else ""


def _in_process_factory(consumer_name: str) -> Callable[[Settings], StreamConsumer] | None:
    """The class replay runs in-process for this consumer, imported from its module (None: not in-process)."""
    entry = WORKERS.get(consumer_name)
    if entry is None or entry.kind != "consumer" or not entry.replay_class:
        return None
    return getattr(importlib.import_module(entry.module), entry.replay_class)  # type: ignore[no-any-return]


def _row_counts(settings: Settings) -> dict[str, int]:
    engine = warehouse_engine(settings)
    try:
        with sink_errors("replay: counting rows"), engine.connect() as conn:
            existing = set(inspect(conn).get_table_names())
            return {name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                    for name, table in metadata.tables.items() if name in existing and name != "kafka_offsets"}
    finally:
        engine.dispose()


def _reload(settings: Settings, factory: Callable[[Settings], StreamConsumer], group_id: str, physical: str,
            moves: list[PartitionMove], idle_exit: float, stop: StopFlag | None) -> dict[str, Any]:
    """Run one copy of the consumer until idle; what it re-processed and what it did to the row counts."""
    before = _row_counts(settings)
    consumer = factory(settings)
    log.info("replay: running %s in-process until idle for %.0fs", consumer.name, idle_exit)
    run = run_consumer(consumer, settings, stop=stop, idle_exit=idle_exit)
    after = _row_counts(settings)
    stored = _stored_offsets(settings, group_id, physical)
    # Exact: of each rewound range [to, from), the part the copy has now read past again.
    reprocessed = sum(max(0, min(stored.get(m.partition, m.to_offset), m.from_offset) - m.to_offset) for m in moves)
    written = sorted(run.get("rows_by_table", {}))
    if run.get("abandoned"):
        raise ReplayError(f"replay: {consumer.name} stopped with {run['abandoned']} record(s) unwritten "
                          "(the warehouse was unavailable); they are re-read on its next start")
    return {
        "reload": f"in-process copy of {consumer.name} (idle exit {idle_exit:g}s)",
        "reprocessed": reprocessed,
        "consumed": run["consumed"], "processed": run["processed"], "dead_lettered": run["dead_lettered"],
        "new_records": max(0, run["consumed"] - reprocessed),
        "row_counts_before": {t: before.get(t, 0) for t in written},
        "row_counts_after": {t: after.get(t, 0) for t in written},
        "rows_unchanged": all(before.get(t, 0) == after.get(t, 0) for t in written),
    }

