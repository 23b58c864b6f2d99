"""``mbyn status [--json]``: topics, consumer groups, the warehouse — and whether everything produced is accounted for.

``collect_status(settings)`` reads the broker (offsets, groups), the warehouse (row counts, quarantine,
stored offsets) and, for the reconciliation, the records themselves; ``mbyn status`` prints it as compact
tables, ``mbyn status --json`` as one JSON document. **Exit status: 0 when balanced, 4 when not** (1 and 2
as for every mbyn command: an error, a wrong setting).

The verdict
-----------
For every raw topic the warehouse-loader reads, each committed record below the loader's stored position
(``kafka_offsets``, written in the same transaction as the rows) must be either a warehouse row or a
quarantine row. The topic is read (``read_committed``) from its start to its end offsets and every record is
put in exactly one bucket:

* ``pending`` — at or past the loader's stored offset: not processed yet (loader lag);
* ``quarantined`` — its (topic, partition, offset) is in ``quarantine`` for the loader's group;
* ``awaiting_quarantine`` — dead-lettered by the loader (found on ``dead-letters``) but not yet quarantined;
* ``unreadable`` — below the stored offset, neither quarantined nor dead-lettered, and no row key can be read
  from it: a lost record;
* ``loaded`` — the rest; its row key (see ``LOADED_TABLES``) is collected.

The table then must hold one row per distinct key: ``expected_rows`` = distinct keys of the loaded records,
``collapsed`` = loaded − tombstones without a row − expected_rows (re-sent records with the same event id,
successive versions of one customer, SKU or order). ``offsets_without_record`` = end − start − records:
transaction markers, aborted transactions and records removed by compaction occupy offsets but are never
delivered. When the log start offset is above 0 (retention, compaction), rows loaded from deleted records
can no longer be matched, so the table may hold *more* rows than expected — explained, not a failure.

**Balanced** = for every raw topic pending = awaiting_quarantine = unreadable = 0 and rows == expected_rows
(rows ≥ expected_rows when records expired, or when every extra row belongs to a record past the loader's
position: another writer of the table, such as the shipments batch DAG, or a row committed after the
positions were read), and the dead-letters sink has stored a position past every
dead letter. "Loader caught up" therefore means: no committed record at or after the stored offset — not
"stored == end offset", which a transaction marker at the end of a partition would make false forever.

Reading costs time: when the raw topics and ``dead-letters`` hold more than ``scan_limit`` offsets
(default 200 000), only the stretch between each stored offset and the end is read ("counted_by":
"offsets"), so the positions are still exact but rows are not compared with records.

JSON document (``"schema": "mbyn.status/1"``; fields are only ever added)
-------------------------------------------------------------------------
* ``schema``, ``generated_at`` (ISO-8601 UTC), ``bootstrap_servers``, ``topic_prefix``, ``warehouse_url``
  (password hidden).
* ``topics``: logical name → ``physical``, ``exists``, ``partitions`` (list of ``partition``, ``start``,
  ``end``), ``start_sum``, ``end_sum``, ``span`` (end_sum − start_sum).
* ``groups``: group id → ``consumer`` (name without the prefix), ``registered`` (in ``mbyn consume``),
  ``state`` (broker's group state, ``"absent"`` when the broker does not know it), ``member_count``,
  ``client_ids``, ``members`` (``member_id``, ``client_id``, ``host``, ``assignment``: ``"topic[p]"``),
  ``partitions`` (``topic``, ``partition``, ``committed`` (Kafka), ``stored`` (warehouse ``kafka_offsets``),
  ``end``, ``lag``), ``lag`` (sum). Lag = end − (stored, else committed, else start).
* ``warehouse``: ``reachable``, ``error``, ``tables`` (table → rows), ``quarantine`` (list of ``topic``,
  ``reason``, ``consumer_group``, ``count``, ``replayed``), ``quarantined`` (total).
* ``reconciliation``: ``loader_group``, ``dead_letter_group``, ``counted_by`` (``"reading"`` |
  ``"offsets"``), ``incomplete`` (partitions a read did not finish), ``topics`` (logical → ``table``,
  ``key``, ``span``, ``expired``, ``records``, ``offsets_without_record``, ``pending``, ``quarantined``,
  ``quarantine_reasons``, ``awaiting_quarantine``, ``unreadable``, ``loaded``, ``tombstones``,
  ``collapsed``, ``expected_rows``, ``rows``, ``caught_up``, ``balanced``, ``notes`` (list of sentences));
  fields that need a full read are ``null`` when ``counted_by`` is ``"offsets"``), ``dead_letters``
  (``span``, ``records``, ``pending``, ``from_loader``, ``caught_up``).
* ``lag``: records the loader has not processed yet (sum of ``pending``).
* ``balanced`` (bool), ``verdict`` (``"balanced"`` | ``"not balanced"``), ``problems`` (sentences; empty
  when balanced).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mbyn.errors import BrokerUnavailableError
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("mbyn.status")

SCHEMA = "mbyn.status/1"
EXIT_BALANCED = 0
EXIT_NOT_BALANCED = 4
DEFAULT_SCAN_LIMIT = 200_000
SCAN_TIMEOUT_S = 120.0
OFFSET_ATTEMPTS = 8
LOADER = "warehouse-loader"
DEAD_LETTER_SINK = "dead-letters"
DEAD_LETTER_TOPIC = "dead-letters"

Coord = tuple[str, int, int]  # physical topic, partition, offset
PartitionKey = tuple[str, int]

# What the warehouse-loader makes of each raw topic: table and row key (mirrors the table in
# ``mbyn.consumers.warehouse_loader``'s docstring). ``key`` returns None when the record makes no row.
KeyFn = Callable[[dict[str, Any] | None, bytes | None], Any]


def _event_id(env: dict[str, Any] | None, key: bytes | None) -> Any:
    return None if env is None else env["event_id"]


def _payload(field_name: str) -> KeyFn:
    def key_of(env: dict[str, Any] | None, key: bytes | None) -> Any:
        if env is None:  # a tombstone: the record key names the row (marked deleted)
            return None if key is None else key.decode("utf-8", errors="replace")
        return env["payload"][field_name]
    return key_of


def _fx_key(env: dict[str, Any] | None, key: bytes | None) -> Any:
    return None if env is None else (env["payload"]["currency"], env["payload"]["rate_date"])


@dataclass(frozen=True)
class LoadedTable:
    table: str
    key: str
    key_of: KeyFn
    collapse: str  # how several records become one row, for the notes


LOADED_TABLES: dict[str, LoadedTable] = {
    "clickstream": LoadedTable("clicks", "event_id", _event_id, "duplicate(s) by event_id collapsed"),
    "orders": LoadedTable("orders", "order_id", _payload("order_id"), "version(s) of the same order_id collapsed"),
    "payments": LoadedTable("payments", "event_id", _event_id, "duplicate(s) by event_id collapsed"),
    "shipments": LoadedTable("shipments", "event_id", _event_id, "duplicate(s) by event_id collapsed"),
    "alerts": LoadedTable("alerts", "alert_id", _payload("alert_id"), "duplicate(s) by alert_id collapsed"),
    "customers": LoadedTable("customers", "customer_id", _payload("customer_id"),
                             "update(s) of the same customer_id collapsed (last version wins)"),
    "inventory": LoadedTable("inventory", "sku", _payload("sku"),
                             "update(s) of the same sku collapsed (last version wins)"),
    "fx-rates": LoadedTable("fx_rates", "(currency, rate_date)", _fx_key,
                            "re-published rate(s) of the same currency and day collapsed"),
}


# Kafka side -----------------------------------------------------------------------------------------


def _admin(settings: Settings) -> AdminClient:
    from mbyn.kafka.admin import admin_client

    return admin_client(settings, timeout_s=15.0)


def reader(settings: Settings) -> Consumer:
    """A consumer for reading ranges by ``assign`` (never subscribes, never commits: no group is created)."""
    from confluent_kafka import Consumer

    from mbyn.kafka.security import client_config

    return Consumer({**client_config(settings), "group.id": f"mbyn-status-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "isolation.level": "read_committed", "enable.partition.eof": True,
                     "fetch.max.bytes": 16 * 1024 * 1024, "client.id": "mbyn-status"})


def partition_offsets(admin: AdminClient, physical_topics: Iterable[str], timeout_s: float = 15.0,
                      ) -> dict[str, list[tuple[int, int, int]] | None]:
    """(partition, start, end) per partition of each topic; None for a topic that does not exist.

    ``end`` is the high watermark (read-uncommitted): it includes transaction markers and open transactions.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    metadata = admin.list_topics(timeout=timeout_s).topics
    wanted = {t: sorted(metadata[t].partitions) for t in physical_topics if t in metadata and
              metadata[t].error is None}
    tps = [TopicPartition(t, p) for t, parts in wanted.items() for p in parts]
    result: dict[str, list[tuple[int, int, int]] | None] = {t: None for t in physical_topics}
    if not tps:
        return result
    for attempt in range(1, OFFSET_ATTEMPTS + 1):
        try:
            earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, request_timeout=timeout_s)
            latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout_s)
            for t, parts in wanted.items():
                rows = []
                for p in parts:
                    tp = TopicPartition(t, p)
                    start = earliest[tp].result(timeout=timeout_s).offset
                    end = latest[tp].result(timeout=timeout_s).offset
                    rows.append((p, int(start), int(end)))
                result[t] = rows
            return result
        except KafkaException as exc:
            # Right after a topic is created its partitions have no leader for a moment: retry those errors.
            error = exc.args[0]
            transient = error.retriable() or error.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                                               KafkaError.LEADER_NOT_AVAILABLE,
                                                               KafkaError.UNKNOWN_TOPIC_OR_PART)
            if attempt == OFFSET_ATTEMPTS or not transient:
                raise
            time.sleep(0.25 * attempt)
    raise AssertionError("unreachable")


def scan(consumer: Consumer, ranges: Mapping[PartitionKey, tuple[int, int]], on_record: Callable[[Message], None],
         timeout_s: float = SCAN_TIMEOUT_S) -> list[PartitionKey]:
    """Read every committed record with ``start <= offset < end`` per partition; returns unfinished partitions.

    A partition is finished at its last offset, at a record past ``end`` (data kept flowing), or at the end
    of the readable log (transaction markers and aborted records are never delivered, so a range may end
    without a record at ``end - 1``). Partitions still open after ``timeout_s`` are returned, not raised.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    todo = {k: r for k, r in ranges.items() if r[0] < r[1]}
    if not todo:
        return []
    consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
    open_parts = set(todo)
    deadline = time.monotonic() + timeout_s
    try:
        while open_parts and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                key = (msg.topic() or "", int(msg.partition() or 0))
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(key)
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                if key not in open_parts:
                    continue
                offset = int(msg.offset() or 0)
                end = todo[key][1]
                if offset < end:
                    on_record(msg)
                if offset >= end - 1:
                    open_parts.discard(key)
    finally:
        consumer.unassign()
    return sorted(open_parts)


def headers_of(msg: Message) -> list[tuple[str, bytes | None]]:
    """A record's headers as (name, value) pairs, in order (repeated names kept)."""
    return list(msg.headers() or [])  # type: ignore[arg-type]


def _groups(admin: AdminClient, prefix: str, timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """Consumer groups whose id starts with ``prefix``: state, members and committed offsets."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    ids = sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix)
                 and not g.group_id.startswith("mbyn-status-"))
    groups: dict[str, dict[str, Any]] = {}
    if not ids:
        return groups
    described = admin.describe_consumer_groups(ids, request_timeout=timeout_s)
    for group_id in ids:
        desc = described[group_id].result(timeout=timeout_s)
        members = [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                    "assignment": sorted(f"{tp.topic}[{tp.partition}]" for tp in
                                         (m.assignment.topic_partitions if m.assignment else []))}
                   for m in desc.members]
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)],
                                                    request_timeout=timeout_s)
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in offsets[group_id].result(timeout=timeout_s).topic_partitions if tp.offset >= 0}
        groups[group_id] = {"state": str(getattr(desc.state, "name", desc.state)).lower(), "members": members,
                            "committed": committed}
    return groups


# Warehouse side -------------------------------------------------------------------------------------


@dataclass
class WarehouseFacts:
    reachable: bool = False
    error: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, dict[PartitionKey, int]] = field(default_factory=dict)  # group → next offsets
    quarantined_coords: dict[str, set[Coord]] = field(default_factory=dict)  # group → coordinates


def _warehouse(settings: Settings, coord_groups: Iterable[str]) -> WarehouseFacts:
    """Row counts, quarantine, stored offsets; an unreachable or empty warehouse is reported, not raised."""
    from sqlalchemy import func, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    from mbyn.warehouse import schema, warehouse_engine

    facts = WarehouseFacts()
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            for name, table in schema.metadata.tables.items():
                if name in present:
                    facts.tables[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            q = schema.quarantine
            if "quarantine" in present:
                rows = conn.execute(select(q.c.topic, q.c.reason, q.c.consumer_group, func.count(),
                                           func.count(q.c.replayed_at))
                                    .group_by(q.c.topic, q.c.reason, q.c.consumer_group)).all()
                facts.quarantine = sorted(
                    ({"topic": t, "reason": r, "consumer_group": g, "count": int(n), "replayed": int(m)}
                     for t, r, g, n, m in rows), key=lambda row: (-row["count"], str(row["topic"])))
                for group in coord_groups:
                    coords = conn.execute(select(q.c.topic, q.c.partition, q.c.offset)
                                          .where(q.c.consumer_group == group, q.c.topic.is_not(None))).all()
                    facts.quarantined_coords[group] = {(str(t), int(p), int(o)) for t, p, o in coords
                                                       if p is not None and o is not None}
            if "kafka_offsets" in present:
                k = schema.kafka_offsets
                for g, t, p, o in conn.execute(select(k.c.consumer_group, k.c.topic, k.c.partition,
                                                      k.c.next_offset)):
                    facts.stored.setdefault(str(g), {})[(str(t), int(p))] = int(o)
        facts.reachable = True
    except SQLAlchemyError as exc:
        facts.error = str(exc).strip().splitlines()[0]
    finally:
        engine.dispose()
    return facts


# Registry ---------------------------------------------------------------------------------------------


_WARNED: set[str] = set()


def consumer_topics() -> dict[str, tuple[str, ...]]:
    """Every registered consumer name → the logical topics its StreamConsumer class subscribes to (``()`` when
    its module has no such class, e.g. the lag monitor, or does not exist yet)."""
    import importlib

    from mbyn.consumers import CONSUMERS
    from mbyn.kafka.consumer import StreamConsumer

    found: dict[str, tuple[str, ...]] = {name: () for name in CONSUMERS}  # () when the class is not found
    for spec in CONSUMERS.values():
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as exc:
            if exc.name != spec.module:
                raise
            # Registered before its module exists (work in progress): its group still shows up once it runs.
            if spec.name not in _WARNED:
                _WARNED.add(spec.name)
                log.warning("consumer %s: module %s is missing; its topics are unknown", spec.name, spec.module)
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, StreamConsumer) and value.name == spec.name:
                found[spec.name] = tuple(value.topics)
                break
    return found


# Collect ----------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    records: int = 0
    pending: int = 0
    quarantined: int = 0
    awaiting: int = 0
    unreadable: int = 0
    loaded: int = 0
    tombstones: int = 0
    tombstones_without_row: int = 0
    keys: set[Any] = field(default_factory=set)
    pending_keys: set[Any] = field(default_factory=set)  # row keys of records past the loader's position


def collect_status(settings: Settings, *, scan_limit: int = DEFAULT_SCAN_LIMIT,
                   timeout_s: float = SCAN_TIMEOUT_S) -> dict[str, Any]:
    """Everything ``mbyn status`` shows, as the JSON-ready dict documented in the module docstring.

    Raises BrokerUnavailableError when no broker answers; an unreachable warehouse is reported in
    ``warehouse.error`` (and makes the verdict "not balanced") instead.
    """
    from confluent_kafka import KafkaException

    from mbyn.catalog import load_catalog

    catalog = load_catalog()
    prefix = settings.topic_prefix
    physical = {name: prefix + name for name in catalog.topics}
    logical_of = {v: k for k, v in physical.items()}
    registered = consumer_topics()
    loader_group, dlq_group = prefix + LOADER, prefix + DEAD_LETTER_SINK
    try:
        admin = _admin(settings)
        offsets = partition_offsets(admin, physical.values())
        kafka_groups = _groups(admin, prefix)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read offsets and groups from {settings.bootstrap()}: {exc}") from None
    wh = _warehouse(settings, [loader_group])

    topics: dict[str, Any] = {}
    ends: dict[PartitionKey, int] = {}
    starts: dict[PartitionKey, int] = {}
    for name, phys in physical.items():
        parts = offsets.get(phys)
        rows = [{"partition": p, "start": s, "end": e} for p, s, e in parts or []]
        for p, s, e in parts or []:
            starts[(phys, p)], ends[(phys, p)] = s, e
        topics[name] = {"physical": phys, "exists": parts is not None, "partitions": rows,
                        "start_sum": sum(r["start"] for r in rows), "end_sum": sum(r["end"] for r in rows),
                        "span": sum(r["end"] - r["start"] for r in rows)}

    groups = _group_section(prefix, registered, kafka_groups, wh, physical, starts, ends)
    raw_topics = [t for t in registered.get(LOADER, tuple(LOADED_TABLES)) if t in LOADED_TABLES]
    reconciliation = _reconcile(settings, raw_topics, physical, logical_of, starts, ends, wh, loader_group,
                                dlq_group, scan_limit, timeout_s)

    problems: list[str] = []
    if not wh.reachable:
        problems.append(f"the warehouse is not reachable: {wh.error}")
    for name, rec in reconciliation["topics"].items():
        if not rec["balanced"]:
            problems.append(f"{name}: " + "; ".join(rec["problems"]))
        del rec["problems"]
    dl = reconciliation["dead_letters"]
    if not dl["caught_up"]:
        problems.append(f"dead-letters: {dl['pending']} dead letter(s) not yet quarantined "
                        f"(run `mbyn consume dead-letters`)")
    if reconciliation["incomplete"]:
        problems.append("reading did not finish for " + ", ".join(reconciliation["incomplete"]))
    balanced = not problems
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "bootstrap_servers": settings.bootstrap(),
        "topic_prefix": prefix,
        "warehouse_url": _hide_password(settings.warehouse()),
        "topics": topics,
        "groups": groups,
        "warehouse": {"reachable": wh.reachable, "error": wh.error, "tables": wh.tables,
                      "quarantine": wh.quarantine, "quarantined": sum(r["count"] for r in wh.quarantine)},
        "reconciliation": reconciliation,
        "lag": sum(r["pending"] for r in reconciliation["topics"].values()),
        "balanced": balanced,
        "verdict": "balanced" if balanced else "not balanced",
        "problems": problems,
    }


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _group_section(prefix: str, registered: Mapping[str, tuple[str, ...]], kafka_groups: Mapping[str, Any],
                   wh: WarehouseFacts, physical: Mapping[str, str], starts: Mapping[PartitionKey, int],
                   ends: Mapping[PartitionKey, int]) -> dict[str, Any]:
    """Per group: members, committed and stored offsets, lag. Registered consumers appear even when absent."""
    ids = set(kafka_groups) | {g for g in wh.stored if g.startswith(prefix)} | {prefix + n for n in registered}
    groups: dict[str, Any] = {}
    for group_id in sorted(ids):
        name = group_id[len(prefix):]
        info = kafka_groups.get(group_id, {"state": "absent", "members": [], "committed": {}})
        committed: dict[PartitionKey, int] = info["committed"]
        stored = wh.stored.get(group_id, {})
        keys = set(committed) | set(stored)
        for topic in registered.get(name, ()):  # a registered consumer's topics count even before it ran
            keys |= {k for k in ends if k[0] == physical.get(topic)}
        partitions = []
        for t, p in sorted(keys):
            position = stored.get((t, p), committed.get((t, p), starts.get((t, p), 0)))
            end = ends.get((t, p))
            partitions.append({"topic": t, "partition": p, "committed": committed.get((t, p)),
                               "stored": stored.get((t, p)), "end": end,
                               "lag": max(0, end - position) if end is not None else None})
        groups[group_id] = {
            "consumer": name, "registered": name in registered, "state": info["state"],
            "member_count": len(info["members"]), "client_ids": sorted({m["client_id"] for m in info["members"]}),
            "members": info["members"], "partitions": partitions,
            "lag": sum(p["lag"] or 0 for p in partitions),
        }
    return groups


def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        env = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return env if isinstance(env, dict) else None


def _reconcile(settings: Settings, raw_topics: list[str], physical: Mapping[str, str],
               logical_of: Mapping[str, str], starts: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int],
               wh: WarehouseFacts, loader_group: str, dlq_group: str, scan_limit: int,
               timeout_s: float) -> dict[str, Any]:
    """Put every record of the raw topics in one bucket (see the module docstring) and compare with the tables."""
    raw_physical = {physical[t] for t in raw_topics}
    dlq_physical = physical[DEAD_LETTER_TOPIC]
    loader_pos = wh.stored.get(loader_group, {})
    dlq_pos = wh.stored.get(dlq_group, {})
    quarantined = wh.quarantined_coords.get(loader_group, set())
    total_span = sum(ends[k] - starts[k] for k in ends if k[0] in raw_physical or k[0] == dlq_physical)
    full = total_span <= scan_limit
    consumer = reader(settings)
    incomplete: list[PartitionKey] = []
    try:
        # 1. dead-letters: which loader records are dead-lettered, and which dead letters wait for the sink.
        dead_lettered: set[Coord] = set()
        dl_tally = _Tally()

        def on_dead_letter(msg: Message) -> None:
            dl_tally.records += 1
            if int(msg.offset() or 0) >= dlq_pos.get((msg.topic() or "", int(msg.partition() or 0)), 0):
                dl_tally.pending += 1
            headers = {k: v for k, v in headers_of(msg) if isinstance(v, bytes)}
            try:
                coord = (headers["dlq.topic"].decode(), int(headers["dlq.partition"]), int(headers["dlq.offset"]))
            except (KeyError, ValueError, UnicodeDecodeError):
                return  # not written by the runtime: no coordinates to match
            if headers.get("dlq.consumer_group", b"").decode(errors="replace") == loader_group:
                dead_lettered.add(coord)

        dl_ranges = {k: (starts[k] if full else max(starts[k], dlq_pos.get(k, 0)), ends[k])
                     for k in ends if k[0] == dlq_physical}
        incomplete += scan(consumer, dl_ranges, on_dead_letter, timeout_s)

        # 2. raw topics.
        tallies: dict[str, _Tally] = {t: _Tally() for t in raw_topics}

        def on_record(msg: Message) -> None:
            topic = logical_of[msg.topic() or ""]
            tally = tallies[topic]
            tally.records += 1
            coord = (msg.topic() or "", int(msg.partition() or 0), int(msg.offset() or 0))
            if coord[2] >= loader_pos.get(coord[:2], 0):
                tally.pending += 1
                readable, pending_key = _row_key(topic, msg)
                if readable and pending_key is not None and msg.value() is not None:
                    tally.pending_keys.add(pending_key)
            elif coord in quarantined:
                tally.quarantined += 1
            elif coord in dead_lettered:
                tally.awaiting += 1
            else:
                readable, row_key = _row_key(topic, msg)
                if not readable:
                    tally.unreadable += 1
                    return
                tally.loaded += 1
                if msg.value() is None:
                    tally.tombstones += 1
                    if row_key is None:
                        tally.tombstones_without_row += 1
                if row_key is not None:
                    tally.keys.add(row_key)

        raw_ranges = {k: (starts[k] if full else max(starts[k], loader_pos.get(k, 0)), ends[k])
                      for k in ends if k[0] in raw_physical}
        incomplete += scan(consumer, raw_ranges, on_record, timeout_s)
    finally:
        consumer.close()

    reasons: dict[str, dict[str, int]] = {}
    for row in wh.quarantine:
        if row["consumer_group"] == loader_group and row["topic"] in logical_of:
            per = reasons.setdefault(logical_of[row["topic"]], {})
            per[row["reason"]] = per.get(row["reason"], 0) + row["count"]
    result = {t: _topic_verdict(t, tallies[t], physical[t], starts, ends, wh, reasons.get(t, {}), full)
              for t in raw_topics}
    dl_span = sum(ends[k] - starts[k] for k in dl_ranges)
    return {
        "loader_group": loader_group, "dead_letter_group": dlq_group,
        "counted_by": "reading" if full else "offsets",
        "incomplete": [f"{t}[{p}]" for t, p in incomplete],
        "topics": result,
        "dead_letters": {"span": dl_span, "records": dl_tally.records if full else None,
                         "pending": dl_tally.pending, "from_loader": len(dead_lettered) if full else None,
                         "caught_up": dl_tally.pending == 0},
    }


def _row_key(topic: str, msg: Message) -> tuple[bool, Any]:
    """(readable, row key) of one raw record: unreadable when its value is not JSON or has no key field.

    A tombstone (no value) is readable; its row key comes from the message key.
    """
    value = msg.value()
    env = None if value is None else _decode(value)
    if value is not None and env is None:
        return False, None
    try:
        return True, LOADED_TABLES[topic].key_of(env, msg.key())
    except (KeyError, TypeError):
        return False, None


def _topic_verdict(topic: str, tally: _Tally, phys: str, starts: Mapping[PartitionKey, int],
                   ends: Mapping[PartitionKey, int], wh: WarehouseFacts, reasons: Mapping[str, int],
                   full: bool) -> dict[str, Any]:
    """Compare one raw topic's buckets with its table; explain every difference in ``notes``."""
    spec = LOADED_TABLES[topic]
    parts = [k for k in ends if k[0] == phys]
    span = sum(ends[k] - starts[k] for k in parts)
    expired = sum(starts[k] for k in parts)
    rows = wh.tables.get(spec.table)
    notes: list[str] = []
    problems: list[str] = []
    if tally.pending:
        problems.append(f"{tally.pending} record(s) not loaded yet (loader lag)")
    if tally.awaiting:
        problems.append(f"{tally.awaiting} record(s) dead-lettered but not yet in quarantine "
                        "(run `mbyn consume dead-letters`)")
    if tally.unreadable:
        problems.append(f"{tally.unreadable} record(s) below the loader's position are neither loaded nor "
                        "quarantined")
    quarantined_total = sum(reasons.values())
    if quarantined_total:
        detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        notes.append(f"{quarantined_total} record(s) quarantined ({detail})")
    expected = collapsed = without_record = None
    if full:
        expected = len(tally.keys)
        collapsed = tally.loaded - tally.tombstones_without_row - expected
        without_record = span - tally.records
        if collapsed:
            notes.append(f"{collapsed} {spec.collapse}")
        if tally.tombstones:
            kept = tally.tombstones - tally.tombstones_without_row
            effects = [f"{kept} mark a row deleted"] if kept else []
            if tally.tombstones_without_row:
                effects.append(f"{tally.tombstones_without_row} skipped (no row)")
            notes.append(f"{tally.tombstones} tombstone(s): {', '.join(effects)}")
        if without_record:
            notes.append(f"{without_record} offset(s) hold no readable record (transaction markers, aborted "
                         "transactions or compacted-away records)")
        if expired:
            notes.append(f"{expired} offset(s) before the log start were deleted (retention/compaction); rows "
                         "loaded from them cannot be matched")
        if rows is None:
            if expected:
                problems.append(f"table {spec.table} does not exist but {expected} row(s) are expected")
        elif rows < expected:
            problems.append(f"table {spec.table} has {rows} row(s), {expected - rows} fewer than the {expected} "
                            f"distinct {spec.key} value(s) loaded")
        elif rows > expected:
            extra = (f"table {spec.table} has {rows - expected} row(s) more than the {expected} distinct "
                     f"{spec.key} value(s) on the topic")
            ahead = len(tally.pending_keys - tally.keys)
            if rows - expected <= ahead:
                # Records past the loader's position whose rows already exist: another writer of the table
                # (the shipments batch DAG) or rows committed after the positions were read (a live pipeline).
                notes.append(f"{rows - expected} row(s) for record(s) past the loader's position (another "
                             "writer of the table, or loaded after the positions were read)")
            elif expired:
                notes.append(extra + " (from deleted offsets)")
            else:
                problems.append(extra + " (rows from another topic prefix, or from records no longer on the topic)")
    else:
        notes.append(f"not read record by record ({span} offsets exceed the scan limit): positions checked, "
                     "rows not compared")
    return {
        "table": spec.table, "key": spec.key, "span": span, "expired": expired,
        "records": tally.records if full else None, "offsets_without_record": without_record,
        "pending": tally.pending, "quarantined": tally.quarantined if full else quarantined_total,
        "quarantine_reasons": dict(reasons), "awaiting_quarantine": tally.awaiting if full else None,
        "unreadable": tally.unreadable if full else None, "loaded": tally.loaded if full else None,
        "tombstones": tally.tombstones if full else None, "collapsed": collapsed, "expected_rows": expected,
        "rows": rows, "caught_up": tally.pending == 0, "balanced": not problems, "notes": notes,
        "problems": problems,
    }


# Human form -------------------------------------------------------------------------------------------


def render_text(status: Mapping[str, Any]) -> str:
    """The status as compact text tables (what ``mbyn status`` prints)."""
    from mbyn.warehouse.commands import format_table

    out: list[str] = [f"mbyn status  {status['generated_at']}  kafka {status['bootstrap_servers']}  "
                      f"prefix {status['topic_prefix'] or '(none)'}  warehouse {status['warehouse_url']}", ""]
    rows: list[tuple[Any, ...]] = [
        (name, len(t["partitions"]) if t["exists"] else "-", t["start_sum"], t["end_sum"], t["span"],
         " ".join(str(p["end"]) for p in t["partitions"]) or "(missing)")
            for name, t in status["topics"].items()]
    out += ["TOPICS", format_table(["topic", "parts", "start", "end", "records*", "end per partition"], rows),
            "  * end − start offsets, including transaction markers", ""]
    rows = [(g, info["state"], info["member_count"], ",".join(info["client_ids"]) or "-",
             sum(1 for p in info["partitions"] if p["committed"] is not None or p["stored"] is not None),
             info["lag"]) for g, info in status["groups"].items()]
    out += ["CONSUMER GROUPS", format_table(["group", "state", "members", "client ids", "positions", "lag"], rows), ""]
    wh = status["warehouse"]
    if wh["reachable"]:
        rows = [(t, n) for t, n in sorted(wh["tables"].items())]
        out += ["WAREHOUSE", format_table(["table", "rows"], rows), ""]
        if wh["quarantine"]:
            rows = [(q["topic"] or "?", q["reason"], q["consumer_group"] or "?", q["count"], q["replayed"])
                    for q in wh["quarantine"]]
            out += ["QUARANTINE", format_table(["topic", "reason", "group", "count", "replayed"], rows), ""]
    else:
        out += [f"WAREHOUSE: not reachable ({wh['error']})", ""]
    rec = status["reconciliation"]

    def num(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = [(t, r["table"], num(r["records"]), r["pending"], r["quarantined"], num(r["loaded"]),
             num(r["collapsed"]), num(r["expected_rows"]), num(r["rows"]), "ok" if r["balanced"] else "NO")
            for t, r in rec["topics"].items()]
    out += [f"RECONCILIATION (group {rec['loader_group']}, counted by {rec['counted_by']})",
            format_table(["topic", "table", "records", "pending", "quarant.", "loaded", "collapsed", "expected",
                          "rows", "ok"], rows)]
    for t, r in rec["topics"].items():
        for note in r["notes"]:
            out.append(f"  {t}: {note}")
    dl = rec["dead_letters"]
    out.append(f"  dead-letters: {num(dl['records'])} record(s), {dl['pending']} waiting for the dead-letters sink")
    out += ["", f"VERDICT: {status['verdict'].upper()}"]
    out += [f"  - {p}" for p in status["problems"]]
    return "\n".join(out)


def _status_command(settings: Settings, args: argparse.Namespace) -> int:
    status = collect_status(settings, scan_limit=args.scan_limit)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_text(status))
    sys.stdout.flush()
    return EXIT_BALANCED if status["balanced"] else EXIT_NOT_BALANCED


def register(sub: Any) -> None:
    """``mbyn status [--json] [--scan-limit N]``."""
    p = sub.add_parser("status", help="topics, consumer groups, warehouse and the reconciliation verdict "
                                      "(exit 0 balanced, 4 not balanced)")
    p.add_argument("--json", action="store_true", help='one JSON document ("schema": "mbyn.status/1")')
    p.add_argument("--scan-limit", type=int, default=DEFAULT_SCAN_LIMIT,
                   help="read records one by one only up to this many offsets (default %(default)s)")
    p.set_defaults(handler=_status_command)
