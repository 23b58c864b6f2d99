"""The reconciliation's arithmetic: the warehouse side read at one consistent cut, each raw topic's buckets
compared with its table (``topic_verdict``), and the four verdicts. ``mbyn.status`` reads the broker and calls it.

The warehouse-loader commits its rows and its next offsets (``kafka_offsets``) in one transaction; so does
the dead-letters sink with its quarantine rows. ``read_warehouse`` therefore reads the stored offsets, the
table counts, the quarantine and the row keys of the loaded tables in ONE read-only transaction — PostgreSQL
``REPEATABLE READ`` (every statement sees the same snapshot), SQLite one read transaction (in WAL mode it sees
the database as of its first read while writers carry on). Rows and positions then belong together: every
record below a stored offset has its row (or quarantine row) in the snapshot, and whatever a writer commits
after it is past the positions read — lag, never imbalance. The caller reads the topics only afterwards, up
to end offsets read after the snapshot (they can only be at or past the stored offsets).

Verdicts (``mbyn status`` exit status in brackets):

* ``balanced`` (0) — every record below the positions is a row or a quarantine row, every row has its record,
  nothing is pending;
* ``lagging`` (0) — as balanced, but records past the loader's position are not loaded yet, or dead letters
  wait for the dead-letters sink (healthy while the pipeline runs);
* ``not balanced`` (4) — a record below the loader's position has no row and no quarantine row (its key or
  coordinates are named), a row has no record, or a quarantine row is missing;
* ``not checked`` (5) — rows were not compared with records: the topics hold more than the scan limit, a
  table holds more rows than it, the warehouse did not answer, or reading did not finish. Never shown as
  balanced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from mbyn.settings import Settings
from mbyn.warehouse import schema
from mbyn.warehouse.engine import warehouse_engine
from mbyn.warehouse.rows import ROWS

BALANCED = "balanced"
LAGGING = "lagging"
NOT_BALANCED = "not balanced"
NOT_CHECKED = "not checked"
#: Worst first: the verdict of several parts is the first of these any part has.
SEVERITY = (NOT_BALANCED, NOT_CHECKED, LAGGING, BALANCED)
EXIT_CODES = {BALANCED: 0, LAGGING: 0, NOT_BALANCED: 4, NOT_CHECKED: 5}
#: How many missing / extra keys a sentence names (the JSON lists up to ``LISTED_KEYS``).
NAMED_KEYS = 3
LISTED_KEYS = 20

Coord = tuple[str, int, int]  # physical topic, partition, offset
PartitionKey = tuple[str, int]


@dataclass
class WarehouseFacts:
    """What ``read_warehouse`` found; ``keys`` only for the tables whose keys were asked for and fit the limit."""

    reachable: bool = False
    error: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, dict[PartitionKey, int]] = field(default_factory=dict)  # group → next offsets
    quarantined_coords: dict[str, set[Coord]] = field(default_factory=dict)  # group → coordinates
    keys: dict[str, set[Any]] = field(default_factory=dict)  # table → normalised row keys (``row_key``)


def row_key(value: Any) -> Any:
    """One form for a row key from a record or from the database: text, or a tuple of texts.

    ``date(2026, 11, 25)`` from a DATE column and ``"2026-11-25"`` from a record become the same text.
    """
    if isinstance(value, tuple | list):
        return tuple(str(v) for v in value)
    return None if value is None else str(value)


def read_warehouse(settings: Settings, coord_groups: Iterable[str] = (),
                   key_columns: Mapping[str, Sequence[str]] | None = None, key_limit: int = 0) -> WarehouseFacts:
    """Row counts, quarantine, stored offsets and row keys, all in one read-only snapshot (module docstring).

    ``coord_groups``: groups whose quarantined (topic, partition, offset) are collected. ``key_columns``:
    table → key column(s) to collect, for tables with at most ``key_limit`` rows. An unreachable or empty
    warehouse is reported in ``error`` / by missing tables, never raised.
    """
    facts = WarehouseFacts()
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():  # one transaction: every statement below sees the same snapshot
                present = set(inspect(conn).get_table_names())
                for name, table in schema.metadata.tables.items():
                    if name in present:
                        facts.tables[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, columns in (key_columns or {}).items():
                    if name in present and facts.tables[name] <= key_limit:
                        table = schema.metadata.tables[name]
                        cols = [table.c[c] for c in columns]
                        facts.keys[name] = {row_key(tuple(r) if len(cols) > 1 else r[0])
                                            for r in conn.execute(select(*cols))}
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
        facts.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    finally:
        engine.dispose()
    return facts


def worst(verdicts: Iterable[str]) -> str:
    """The verdict of several parts: the most severe one (``SEVERITY``); balanced when there are none."""
    found = set(verdicts)
    return next((v for v in SEVERITY if v in found), BALANCED)


def name_keys(keys: Iterable[Any], limit: int = NAMED_KEYS) -> str:
    """``"E1, E2, E3 … (+4)"``: the first ``limit`` keys in sorted order, and how many more there are."""
    ordered = sorted(keys, key=str)
    shown = ", ".join(_show(k) for k in ordered[:limit])
    return shown + (f" … (+{len(ordered) - limit})" if len(ordered) > limit else "")


def listed(keys: Iterable[Any]) -> list[Any]:
    """The first ``LISTED_KEYS`` keys in sorted order, JSON-ready (a tuple key becomes a list)."""
    return [list(k) if isinstance(k, tuple) else k for k in sorted(keys, key=str)[:LISTED_KEYS]]


def _show(key: Any) -> str:
    return "(" + ", ".join(key) + ")" if isinstance(key, tuple) else str(key)


@dataclass
class Tally:
    """What reading one raw topic found, per bucket (see ``mbyn.status``)."""

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


def topic_verdict(topic: str, tally: Tally, phys: str, starts: Mapping[PartitionKey, int],
                   ends: Mapping[PartitionKey, int], wh: WarehouseFacts, reasons: Mapping[str, int],
                   full: bool) -> dict[str, Any]:
    """Compare one raw topic's buckets with its table's keys; name every difference, explain the rest in notes."""
    spec = ROWS[topic]
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
        "missing_quarantine": tally.missing_quarantine[:LISTED_KEYS] if full else None,
        "unreadable": tally.unreadable if full else None, "loaded": tally.loaded if full else None,
        "tombstones": tally.tombstones if full else None, "collapsed": collapsed, "expected_rows": expected,
        "rows": rows, "missing_keys": None if missing is None else listed(missing),
        "extra_keys": None if extra is None else listed(extra), "caught_up": tally.pending == 0,
        "verdict": verdict, "balanced": verdict == BALANCED, "notes": notes, "problems": imbalance + lag,
    }
