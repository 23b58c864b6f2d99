"""``mbyn status [--json]``: topics, consumer groups, workers, the warehouse — and whether the books balance.

``collect_status(settings)`` reads the warehouse at one consistent cut (``mbyn.reconciliation``), then the
broker (offsets, groups: ``mbyn.kafka.inspect``) and, for the reconciliation, the records themselves;
``mbyn status`` (``mbyn.cli.status``) prints it as compact tables, ``mbyn status --json`` as one JSON
document. **Exit status: 0 balanced or lagging, 4 not balanced, 5 not checked** (1 and 2 as for every mbyn
command: an error, a wrong setting). A crash-looping worker is shown (``workers``) but does not change the
exit status.

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
* ``loaded`` — the rest; its row key (``mbyn.warehouse.rows``: ``key_of``) is collected.

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
* ``workers`` (``mbyn run``'s supervisor, see ``mbyn.run_state.worker_status``): ``state_file``,
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

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, Message

from mbyn import reconciliation
from mbyn.catalog import load_catalog
from mbyn.contracts.codec import decode_record
from mbyn.contracts.dead_letters import DEAD_LETTER_TOPIC, parse_headers
from mbyn.errors import BrokerUnavailableError, PoisonRecordError
from mbyn.kafka.consumer import message_headers
from mbyn.kafka.inspect import SCAN_TIMEOUT_S, group_lag, groups, open_admin, partition_offsets, reader, scan
from mbyn.reconciliation import (
    BALANCED,
    LAGGING,
    NOT_CHECKED,
    Coord,
    PartitionKey,
    Tally,
    WarehouseFacts,
    topic_verdict,
)
from mbyn.run_state import worker_status
from mbyn.settings import Settings, hide_password
from mbyn.warehouse.rows import ROWS
from mbyn.workers import consumers

SCHEMA = "mbyn.status/1"
DEFAULT_SCAN_LIMIT = 200_000
LOADER = "warehouse-loader"
DEAD_LETTER_SINK = "dead-letters"

# Registry ---------------------------------------------------------------------------------------------


def consumer_topics() -> dict[str, tuple[str, ...]]:
    """Every registered consumer name → the logical topics its group subscribes to (``Worker.subscribes``;
    ``()`` for the lag monitor, which reads no topic)."""
    return {w.name: w.subscribes for w in consumers()}


# Collect ----------------------------------------------------------------------------------------------


def collect_status(settings: Settings, *, scan_limit: int = DEFAULT_SCAN_LIMIT,
                   timeout_s: float = SCAN_TIMEOUT_S) -> dict[str, Any]:
    """Everything ``mbyn status`` shows, as the JSON-ready dict documented in the module docstring.

    Order matters: the warehouse snapshot is read first, the end offsets and records after it (see the
    module docstring). Raises BrokerUnavailableError when no broker answers; an unreachable warehouse is
    reported in ``warehouse.error`` (verdict "not checked") instead.
    """
    catalog = load_catalog()
    prefix = settings.topic_prefix
    physical = {name: prefix + name for name in catalog.topics}
    logical_of = {v: k for k, v in physical.items()}
    registered = consumer_topics()
    loader_group, dlq_group = prefix + LOADER, prefix + DEAD_LETTER_SINK
    raw_topics = [t for t in registered.get(LOADER, tuple(ROWS)) if t in ROWS]
    try:
        admin = open_admin(settings)
        # Before the snapshot, only to decide whether the records can be read one by one.
        before = partition_offsets(admin, [physical[t] for t in (*raw_topics, DEAD_LETTER_TOPIC)])
        full = sum(e - s for parts in before.values() for _, s, e in parts or []) <= scan_limit
        key_columns = {ROWS[t].table: ROWS[t].key_columns for t in raw_topics} if full else None
        wh = reconciliation.read_warehouse(settings, [loader_group], key_columns, key_limit=scan_limit)
        offsets = partition_offsets(admin, physical.values())  # after the snapshot: ends ≥ stored offsets
        kafka_groups = groups(admin, prefix)
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

    group_section = group_lag(prefix, kafka_groups, wh.stored, registered, physical, starts, ends)
    rec = _reconcile(settings, raw_topics, physical, logical_of, starts, ends, wh, loader_group, dlq_group, full,
                     timeout_s)
    loader = kafka_groups.get(loader_group)
    rec["loader_members"] = len(loader.members) if loader else 0
    verdict, summary, problems = _verdict(rec, wh, scan_limit)
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "bootstrap_servers": settings.bootstrap(),
        "topic_prefix": prefix,
        "warehouse_url": hide_password(settings.warehouse()),
        "topics": topics,
        "groups": group_section,
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
    consumer = reader(settings, "status")
    incomplete: list[PartitionKey] = []
    try:
        # 1. dead-letters: the loader's dead letters → is the sink's stored position past one of them ("due")?
        due: dict[Coord, bool] = {}
        dl_tally = Tally()

        def on_dead_letter(msg: Message) -> None:
            dl_tally.records += 1
            waiting = int(msg.offset() or 0) >= dlq_pos.get((msg.topic() or "", int(msg.partition() or 0)), 0)
            dl_tally.pending += waiting
            info = parse_headers(message_headers(msg))
            coord = info.coordinates  # None: not written by a consumer, nothing to match
            if coord is not None and info.consumer_group == loader_group:
                due[coord] = due.get(coord, False) or not waiting

        dl_ranges = {k: (starts[k] if full else max(starts[k], dlq_pos.get(k, 0)), ends[k])
                     for k in ends if k[0] == dlq_physical}
        incomplete += scan(consumer, dl_ranges, on_dead_letter, timeout_s)

        # 2. raw topics.
        tallies: dict[str, Tally] = {t: Tally() for t in raw_topics}

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
    result = {t: topic_verdict(t, tallies[t], physical[t], starts, ends, wh, reasons.get(t, {}), full)
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
        return True, reconciliation.row_key(ROWS[topic].key_of(env, key))
    except (PoisonRecordError, KeyError, TypeError):
        return False, None
