"""Ad-hoc read-only queries against the warehouse (what ``mbyn sql`` runs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mbyn.errors import WarehouseError
from mbyn.settings import Settings
from mbyn.warehouse.engine import warehouse_engine

Rows = list[tuple[Any, ...]]


def read_only_query(settings: Settings, statement: str, max_rows: int) -> tuple[list[str], Rows] | None:
    """Run one SQL statement in a read-only transaction: its column names and at most ``max_rows`` rows, or
    None when the statement returns no rows. A failing statement raises WarehouseError with the first line
    of the database's message."""
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            if not result.returns_rows:
                return None
            return list(result.keys()), [tuple(r) for r in result.fetchmany(max_rows)]
    except SQLAlchemyError as exc:
        raise WarehouseError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
