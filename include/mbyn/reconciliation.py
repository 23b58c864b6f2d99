"""The warehouse side of ``mbyn status``'s reconciliation, read at one consistent cut, and its four verdicts.

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

from mbyn.settings import Settings

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
    from sqlalchemy import func, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    from mbyn.warehouse import schema, warehouse_engine

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
