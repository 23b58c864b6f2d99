"""``mbyn status [--json]``: topics, consumer groups, workers, the warehouse — and whether the books balance.

``collect_status(settings)`` reads the warehouse at one consistent cut (``mbyn.reconciliation``), then the
broker (offsets, groups) and, for the reconciliation, the records themselves; ``mbyn status`` prints it as
compact tables, ``mbyn status --json`` as one JSON document. **Exit status: 0 balanced or lagging, 4 not
balanced, 5 not checked** (1 and 2 as for every mbyn command: an error, a wrong setting). A crash-looping
worker is shown (``workers``) but does not change the exit status.

The verdict
-----------
The warehouse-loader writes rows and its stored position (``kafka_offsets``) in one transaction, and the
dead-letters sink does the same with quarantine rows. The stored positions, the table counts and keys and the
quarantine are read in one database snapshot; only then are the topics read (``read_committed``) up to end
offsets taken after the snapshot. Every record of a raw topic the loader reads lands in exactly one bucket:

* ``pending`` — at or past the loader's stored offset: not processed yet (lag);
* ``quarantined`` — its (topic, partition, offset) is in ``quarantine`` for the loader's group;
* ``awaiting_quarantine`` — dead-lettered by the loader, and the dead letter is at or past the dead-letters
  sink's stored offset (lag);
* ``missing_quarantine`` — dead-lettered by the loader, the sink's position is past the dead letter, yet no
  quarantine row exists (deleted): imbalance, the coordinates are named;
* ``unreadable`` — below the stored offset, neither quarantined nor dead-lettered, and the codec
  (``mbyn.contracts.codec.decode_record``) refuses it or it yields no row key: a lost record;
* ``loaded`` — the rest; its row key (see ``LOADED_TABLES``) is collected.

Then the table's keys (read in the snapshot) must equal the loaded records' keys: a loaded key without a row
is *missing*, a row without a record is *extra* — both named ("clicks: missing event_id E1…"). Rows for
records past the loader's position are explained, not extra (another writer of the table, such as the
shipments batch DAG); so are extra rows when the log start offset is above 0 (retention, compaction: their
records are gone). ``collapsed`` = loaded − tombstones without a row − expected_rows (re-sent records with the
same event id, successive versions of one customer, SKU or order). ``offsets_without_record`` = end − start −
records: transaction markers, aborted transactions and records removed by compaction.

Verdicts (``mbyn.reconciliation``): ``balanced``; ``lagging`` (records not loaded yet or dead letters not
yet quarantined — the summary says whether the loader group has live members); ``not balanced`` (missing or
extra keys, lost records, missing quarantine rows); ``not checked`` (rows not compared with records: more
than ``scan_limit`` offsets (default 200 000; then only the stretch from each stored offset to the end is
read, "counted_by": "offsets"), a table with more rows than the limit, an unreachable warehouse, or a read
that did not finish). The worst part decides: not balanced > not checked > lagging > balanced.

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
* ``workers`` (``mbyn run``'s supervisor, see ``mbyn.local.supervisor.worker_status``): ``state_file``,
  ``supervisor`` (``pid``, ``running``, ``updated_at``; null without a run), ``copies`` (``label``,
  ``worker``, ``pid``, ``state``: ``running`` | ``restarting`` | ``crash-looping`` | ``unknown``,
  ``restarts``, ``recent_restarts``, ``last_exit_code``, ``last_exit_at``, ``last_error``),
  ``crash_looping`` (labels).
* ``warehouse``: ``reachable``, ``error``, ``tables`` (table → rows), ``quarantine`` (list of ``topic``,
  ``reason``, ``consumer_group``, ``count``, ``replayed``), ``quarantined`` (total).
* ``reconciliation``: ``loader_group``, ``loader_members`` (live members of the loader group),
  ``dead_letter_group``, ``counted_by`` (``"reading"`` | ``"offsets"``), ``incomplete`` (partitions a read
  did not finish), ``topics`` (logical → ``table``, ``key``, ``span``, ``expired``, ``records``,
  ``offsets_without_record``, ``pending``, ``quarantined``, ``quarantine_reasons``, ``awaiting_quarantine``,
  ``missing_quarantine`` (``"topic[p]@offset"`` list), ``unreadable``, ``loaded``, ``tombstones``,
  ``collapsed``, ``expected_rows``, ``rows``, ``missing_keys``, ``extra_keys`` (first keys, a key of several
  columns as a list; null when not compared), ``caught_up``, ``verdict``, ``balanced``, ``notes``
  (sentences)); fields that need a full read are ``null`` when ``counted_by`` is ``"offsets"``),
  ``dead_letters`` (``span``, ``records``, ``pending``, ``from_loader``, ``caught_up``).
* ``lag``: records the loader has not processed yet (sum of ``pending``).
* ``verdict`` (``"balanced"`` | ``"lagging"`` | ``"not balanced"`` | ``"not checked"``), ``summary`` (one
  sentence), ``balanced`` (bool: verdict is balanced), ``problems`` (every sentence keeping the verdict from
  balanced, lag included; empty when balanced).
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

from mbyn import reconciliation
from mbyn.contracts.codec import decode_record
from mbyn.contracts.dead_letters import parse_headers
from mbyn.errors import BrokerUnavailableError, PoisonRecordError
from mbyn.kafka.consumer import message_headers
from mbyn.local.supervisor import worker_status
from mbyn.reconciliation import (
    BALANCED,
    EXIT_CODES,
    LAGGING,
    NOT_BALANCED,
    NOT_CHECKED,
    Coord,
    PartitionKey,
    WarehouseFacts,
    listed,
    name_keys,
)
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("mbyn.status")

SCHEMA = "mbyn.status/1"
EXIT_BALANCED = EXIT_CODES[BALANCED]
EXIT_NOT_BALANCED = EXIT_CODES[NOT_BALANCED]
EXIT_NOT_CHECKED = EXIT_CODES[NOT_CHECKED]
DEFAULT_SCAN_LIMIT = 200_000
SCAN_TIMEOUT_S = 120.0
OFFSET_ATTEMPTS = 8
LOADER = "warehouse-loader"
DEAD_LETTER_SINK = "dead-letters"
DEAD_LETTER_TOPIC = "dead-letters"

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
    columns: tuple[str, ...] = ()  # the table's key column(s); default: ``key``

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.columns or (self.key,)


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
                            "re-published rate(s) of the same currency and day collapsed",
                            ("currency", "rate_date")),
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
    """A record's headers as (name, value) pairs, in order; none when unreadable (``message_headers``)."""
    return list(message_headers(msg))


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
    missing_quarantine: list[str] = field(default_factory=list)  # "topic[p]@offset" without a quarantine row
    lost: list[str] = field(default_factory=list)  # "topic[p]@offset" of unreadable records (first ones)


def collect_status(settings: Settings, *, scan_limit: int = DEFAULT_SCAN_LIMIT,
                   timeout_s: float = SCAN_TIMEOUT_S) -> dict[str, Any]:
    """Everything ``mbyn status`` shows, as the JSON-ready dict documented in the module docstring.

    Order matters: the warehouse snapshot is read first, the end offsets and records after it (see the
    module docstring). Raises BrokerUnavailableError when no broker answers; an unreachable warehouse is
    reported in ``warehouse.error`` (verdict "not checked") instead.
    """
    from confluent_kafka import KafkaException

    from mbyn.catalog import load_catalog

    catalog = load_catalog()
    prefix = settings.topic_prefix
    physical = {name: prefix + name for name in catalog.topics}
    logical_of = {v: k for k, v in physical.items()}
    registered = consumer_topics()
    loader_group, dlq_group = prefix + LOADER, prefix + DEAD_LETTER_SINK
    raw_topics = [t for t in registered.get(LOADER, tuple(LOADED_TABLES)) if t in LOADED_TABLES]
    try:
        admin = _admin(settings)
        # Before the snapshot, only to decide whether the records can be read one by one.
        before = partition_offsets(admin, [physical[t] for t in (*raw_topics, DEAD_LETTER_TOPIC)])
        full = sum(e - s for parts in before.values() for _, s, e in parts or []) <= scan_limit
        key_columns = {LOADED_TABLES[t].table: LOADED_TABLES[t].key_columns for t in raw_topics} if full else None
        wh = reconciliation.read_warehouse(settings, [loader_group], key_columns, key_limit=scan_limit)
        offsets = partition_offsets(admin, physical.values())  # after the snapshot: ends ≥ stored offsets
        kafka_groups = _groups(admin, prefix)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read offsets and groups from {settings.bootstrap()}: {exc}") from None

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
    rec = _reconcile(settings, raw_topics, physical, logical_of, starts, ends, wh, loader_group, dlq_group, full,
                     timeout_s)
    rec["loader_members"] = len(kafka_groups.get(loader_group, {}).get("members", []))
    verdict, summary, problems = _verdict(rec, wh, scan_limit)
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "bootstrap_servers": settings.bootstrap(),
        "topic_prefix": prefix,
        "warehouse_url": _hide_password(settings.warehouse()),
        "topics": topics,
        "groups": groups,
        "workers": worker_status(settings),
        "warehouse": {"reachable": wh.reachable, "error": wh.error, "tables": wh.tables,
                      "quarantine": wh.quarantine, "quarantined": sum(r["count"] for r in wh.quarantine)},
        "reconciliation": rec,
        "lag": sum(r["pending"] for r in rec["topics"].values()),
        "balanced": verdict == BALANCED,
        "verdict": verdict,
        "summary": summary,
        "problems": problems,
    }


def _verdict(rec: dict[str, Any], wh: WarehouseFacts, scan_limit: int) -> tuple[str, str, list[str]]:
    """(verdict, summary, problems) of the whole reconciliation; pops each topic's ``problems``."""
    found: list[tuple[str, str]] = []  # (verdict the sentence stands for, sentence)
    if not wh.reachable:
        found.append((NOT_CHECKED, f"the warehouse is not reachable: {wh.error}"))
    if rec["counted_by"] == "offsets":
        found.append((NOT_CHECKED, f"rows not compared with records: the topics hold more than {scan_limit} "
                                   "offsets (--scan-limit)"))
    for name, topic in rec["topics"].items():
        if topic["problems"]:
            found.append((topic["verdict"], f"{name}: " + "; ".join(topic["problems"])))
        elif topic["verdict"] == NOT_CHECKED and rec["counted_by"] == "reading":
            found.append((NOT_CHECKED, f"{name}: " + topic["notes"][-1]))
        del topic["problems"]
    dl = rec["dead_letters"]
    if not dl["caught_up"]:
        found.append((LAGGING, f"dead-letters: {dl['pending']} dead letter(s) not yet quarantined "
                               "(the dead-letters sink: `mbyn consume dead-letters`)"))
    if rec["incomplete"]:
        found.append((NOT_CHECKED, "reading did not finish for " + ", ".join(rec["incomplete"])))
    verdict = reconciliation.worst([v for v, _ in found] + [t["verdict"] for t in rec["topics"].values()])
    order = {v: i for i, v in enumerate(reconciliation.SEVERITY)}
    problems = [line for _, line in sorted(found, key=lambda f: order[f[0]])]
    if verdict == BALANCED:
        summary = "every record below the loader's position is a row or a quarantine row; nothing is pending"
    elif verdict == LAGGING:
        lag = sum(t["pending"] for t in rec["topics"].values())
        members = rec["loader_members"]
        who = (f"{rec['loader_group']} has {members} live member(s)" if members else
               f"{rec['loader_group']} has no live members (start it: `mbyn consume {LOADER}`)")
        waiting = dl["pending"]
        summary = (f"{lag} record(s) not loaded yet" + (f", {waiting} dead letter(s) not quarantined yet"
                                                        if waiting else "") + f"; {who}")
    else:
        summary = problems[0] if problems else verdict
    return verdict, summary, problems


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


def _reconcile(settings: Settings, raw_topics: list[str], physical: Mapping[str, str],
               logical_of: Mapping[str, str], starts: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int],
               wh: WarehouseFacts, loader_group: str, dlq_group: str, full: bool,
               timeout_s: float) -> dict[str, Any]:
    """Put every record of the raw topics in one bucket (see the module docstring) and compare with the tables.

    ``full``: read every record from the log start (else only from the stored positions: lag, no comparison).
    """
    raw_physical = {physical[t] for t in raw_topics}
    dlq_physical = physical[DEAD_LETTER_TOPIC]
    loader_pos = wh.stored.get(loader_group, {})
    dlq_pos = wh.stored.get(dlq_group, {})
    quarantined = wh.quarantined_coords.get(loader_group, set())
    consumer = reader(settings)
    incomplete: list[PartitionKey] = []
    try:
        # 1. dead-letters: the loader's dead letters → is the sink's stored position past one of them ("due")?
        due: dict[Coord, bool] = {}
        dl_tally = _Tally()

        def on_dead_letter(msg: Message) -> None:
            dl_tally.records += 1
            waiting = int(msg.offset() or 0) >= dlq_pos.get((msg.topic() or "", int(msg.partition() or 0)), 0)
            dl_tally.pending += waiting
            info = parse_headers(headers_of(msg))
            coord = info.coordinates  # None: not written by a consumer, nothing to match
            if coord is not None and info.consumer_group == loader_group:
                due[coord] = due.get(coord, False) or not waiting

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
            elif coord in due:
                if due[coord]:  # the sink has stored a position past its dead letter: the row was deleted
                    tally.missing_quarantine.append(f"{coord[0]}[{coord[1]}]@{coord[2]}")
                else:
                    tally.awaiting += 1
            else:
                readable, row_key = _row_key(topic, msg)
                if not readable:
                    tally.unreadable += 1
                    if len(tally.lost) < reconciliation.LISTED_KEYS:
                        tally.lost.append(f"{coord[0]}[{coord[1]}]@{coord[2]}")
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
                         "pending": dl_tally.pending, "from_loader": len(due) if full else None,
                         "caught_up": dl_tally.pending == 0},
    }


def _row_key(topic: str, msg: Message) -> tuple[bool, Any]:
    """(readable, row key) of one raw record: unreadable when the codec refuses it or it has no key field.

    A tombstone (no value on a compacted topic) is readable; its row key comes from the message key.
    """
    key = msg.key()
    try:
        env = decode_record(topic, key, msg.value())
        return True, reconciliation.row_key(LOADED_TABLES[topic].key_of(env, key))
    except (PoisonRecordError, KeyError, TypeError):
        return False, None


def _topic_verdict(topic: str, tally: _Tally, phys: str, starts: Mapping[PartitionKey, int],
                   ends: Mapping[PartitionKey, int], wh: WarehouseFacts, reasons: Mapping[str, int],
                   full: bool) -> dict[str, Any]:
    """Compare one raw topic's buckets with its table's keys; name every difference, explain the rest in notes."""
    spec = LOADED_TABLES[topic]
    parts = [k for k in ends if k[0] == phys]
    span = sum(ends[k] - starts[k] for k in parts)
    expired = sum(starts[k] for k in parts)
    rows = wh.tables.get(spec.table)
    table_keys = wh.keys.get(spec.table)
    notes: list[str] = []
    imbalance: list[str] = []
    lag: list[str] = []
    if tally.pending:
        lag.append(f"{tally.pending} record(s) not loaded yet (loader lag)")
    if tally.awaiting:
        lag.append(f"{tally.awaiting} record(s) dead-lettered, their dead letters not yet quarantined")
    if tally.unreadable:
        imbalance.append(f"{tally.unreadable} record(s) below the loader's position neither loaded nor "
                         f"quarantined ({name_keys(tally.lost)})")
    if tally.missing_quarantine:
        imbalance.append(f"quarantine row(s) missing for dead-lettered record(s) {name_keys(tally.missing_quarantine)}")
    quarantined_total = sum(reasons.values())
    if quarantined_total:
        detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        notes.append(f"{quarantined_total} record(s) quarantined ({detail})")
    expected = collapsed = without_record = None
    missing: set[Any] | None = None
    extra: set[Any] | None = None
    checked = full
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
            missing, extra = set(tally.keys), set()
        elif table_keys is None:
            checked = False
            notes.append(f"table {spec.table} has {rows} rows, more than the scan limit: rows not compared")
        else:
            missing, extra = tally.keys - table_keys, table_keys - tally.keys
            ahead = extra & tally.pending_keys
            if ahead:  # another writer of the table (the shipments batch DAG) loaded records the loader has not
                notes.append(f"{len(ahead)} row(s) for record(s) past the loader's position (another writer "
                             "of the table)")
                extra -= ahead
            if extra and expired:
                notes.append(f"{len(extra)} row(s) without a record: loaded from deleted offsets")
                extra = set()
        if missing:
            where = f"no row in {spec.table}" if rows is not None else f"table {spec.table} does not exist"
            imbalance.append(f"missing {spec.key} {name_keys(missing)} ({where})")
        if extra:
            imbalance.append(f"extra {spec.key} {name_keys(extra)} (row(s) in {spec.table} without a record "
                             "on the topic)")
    else:
        notes.append(f"not read record by record ({span} offsets exceed the scan limit): positions checked, "
                     "rows not compared")
    verdict = NOT_BALANCED if imbalance else NOT_CHECKED if not checked else LAGGING if lag else BALANCED
    return {
        "table": spec.table, "key": spec.key, "span": span, "expired": expired,
        "records": tally.records if full else None, "offsets_without_record": without_record,
        "pending": tally.pending, "quarantined": tally.quarantined if full else quarantined_total,
        "quarantine_reasons": dict(reasons), "awaiting_quarantine": tally.awaiting if full else None,
        "missing_quarantine": tally.missing_quarantine[:reconciliation.LISTED_KEYS] if full else None,
        "unreadable": tally.unreadable if full else None, "loaded": tally.loaded if full else None,
        "tombstones": tally.tombstones if full else None, "collapsed": collapsed, "expected_rows": expected,
        "rows": rows, "missing_keys": None if missing is None else listed(missing),
        "extra_keys": None if extra is None else listed(extra), "caught_up": tally.pending == 0,
        "verdict": verdict, "balanced": verdict == BALANCED, "notes": notes, "problems": imbalance + lag,
    }


# Human form -------------------------------------------------------------------------------------------


def render_text(status: Mapping[str, Any]) -> str:
    """The status as compact text tables (what ``mbyn status`` prints)."""
    from mbyn.warehouse.commands import format_table

    def num(value: Any) -> str:
        return "-" if value is None else str(value)

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
    workers = status.get("workers") or {}
    if workers.get("copies"):
        rows = [(c["label"], c["state"], c["restarts"], c["recent_restarts"], num(c["last_exit_code"]),
                 c["last_error"] or "-") for c in workers["copies"]]
        out += ["WORKERS (mbyn run)", format_table(["copy", "state", "restarts", "last 5 min", "last exit",
                                                    "last error line"], rows), ""]
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
    rows = [(t, r["table"], num(r["records"]), r["pending"], r["quarantined"], num(r["loaded"]),
             num(r["collapsed"]), num(r["expected_rows"]), num(r["rows"]), _SHORT[r["verdict"]])
            for t, r in rec["topics"].items()]
    out += [f"RECONCILIATION (group {rec['loader_group']}, counted by {rec['counted_by']})",
            format_table(["topic", "table", "records", "pending", "quarant.", "loaded", "collapsed", "expected",
                          "rows", "verdict"], rows)]
    for t, r in rec["topics"].items():
        for note in r["notes"]:
            out.append(f"  {t}: {note}")
    dl = rec["dead_letters"]
    out.append(f"  dead-letters: {num(dl['records'])} record(s), {dl['pending']} waiting for the dead-letters sink")
    out += ["", f"VERDICT: {status['verdict'].upper()} — {status['summary']}"]
    out += [f"  - {p}" for p in status["problems"]]
    for label in workers.get("crash_looping", []):
        copy = next(c for c in workers["copies"] if c["label"] == label)
        out.append(f"WORKER CRASH-LOOPING: {label} restarted {copy['recent_restarts']} times in the last "
                   f"{workers['window_s'] // 60} min; last error: {copy['last_error'] or '-'}")
    return "\n".join(out)


_SHORT = {BALANCED: "ok", LAGGING: "lag", NOT_BALANCED: "NO", NOT_CHECKED: "n/c"}


def _status_command(settings: Settings, args: argparse.Namespace) -> int:
    status = collect_status(settings, scan_limit=args.scan_limit)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_text(status))
    sys.stdout.flush()
    return EXIT_CODES[status["verdict"]]


def register(sub: Any) -> None:
    """``mbyn status [--json] [--scan-limit N]``."""
    p = sub.add_parser("status", help="topics, consumer groups, warehouse and the reconciliation verdict "
                                      "(exit 0 balanced or lagging, 4 not balanced, 5 not checked)")
    p.add_argument("--json", action="store_true", help='one JSON document ("schema": "mbyn.status/1")')
    p.add_argument("--scan-limit", type=int, default=DEFAULT_SCAN_LIMIT,
                   help="read records one by one only up to this many offsets (default %(default)s)")
    p.set_defaults(handler=_status_command)
