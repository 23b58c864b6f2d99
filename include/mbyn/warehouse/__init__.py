"""The warehouse: one schema (``schema.py``), engines, upserts and stored Kafka offsets (``engine.py``).

SQLite file under var/ by default; PostgreSQL with ``MBYN_WAREHOUSE_URL=postgresql+psycopg://...``.
The names below are loaded lazily, so importing the package (e.g. for the CLI) does not import SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

_ENGINE_NAMES = ("claim_offsets", "dialect_insert", "init_schema", "load_offsets", "make_engine", "parse_time",
                 "sink_errors", "store_offsets", "upsert", "upsert_rows", "utc_now", "warehouse_engine")

__all__ = [*_ENGINE_NAMES, "schema"]


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        return getattr(importlib.import_module("mbyn.warehouse.engine"), name)
    if name == "schema":
        return importlib.import_module("mbyn.warehouse.schema")
    raise AttributeError(f"module 'mbyn.warehouse' has no attribute {name!r}")
