"""The warehouse: one schema (``schema.py``), engines, upserts and stored Kafka offsets (``engine.py``),
the topic → table rows (``rows.py``), ad-hoc read-only queries (``query.py``, ``mbyn sql``).

SQLite file under var/ by default; PostgreSQL with ``MBYN_WAREHOUSE_URL=postgresql+psycopg://...``.
The names below are the ones most callers need, importable from the package itself.
"""

from __future__ import annotations

from mbyn.warehouse import schema
from mbyn.warehouse.engine import (
    claim_offsets,
    dialect_insert,
    init_schema,
    load_offsets,
    make_engine,
    parse_time,
    sink_errors,
    store_offsets,
    upsert,
    upsert_rows,
    utc_now,
    warehouse_engine,
)

__all__ = ["claim_offsets", "dialect_insert", "init_schema", "load_offsets", "make_engine", "parse_time", "schema",
           "sink_errors", "store_offsets", "upsert", "upsert_rows", "utc_now", "warehouse_engine"]
