"""Test helpers that watch the warehouse from outside the code under test.

``count_writes(url, table, key_columns)`` installs a ``BEFORE INSERT`` row trigger (SQLite or PostgreSQL) that
counts, per key, every row a committed transaction tried to insert into ``table`` — including the rows an
``ON CONFLICT DO NOTHING / DO UPDATE`` then skipped or merged, and never the rows of a rolled-back transaction
(the counter is written in the same transaction). ``row_writes(url, table)`` reads the counts: a sink that
writes every record exactly once has 1 everywhere; a batch written twice shows up as 2 even in a table that
keeps the first row, where the data alone could not tell.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from mbyn.warehouse.engine import init_schema, make_engine

_COUNTS = "test_row_writes"


def count_writes(url: str, table: str, key_columns: Sequence[str]) -> None:
    """Create the warehouse schema if needed and a write-counting trigger on ``table`` (idempotent per test db)."""
    engine = make_engine(url)
    try:
        init_schema(engine)
        postgres = engine.dialect.name == "postgresql"
        key = ("concat_ws('|', " + ", ".join(f'NEW."{c}"' for c in key_columns) + ")" if postgres
               else " || '|' || ".join(f'NEW."{c}"' for c in key_columns))
        upsert = (f"INSERT INTO {_COUNTS} (tbl, k, n) VALUES ('{table}', {key}, 1) "
                  f"ON CONFLICT (tbl, k) DO UPDATE SET n = {_COUNTS}.n + 1;")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {_COUNTS} (tbl VARCHAR(64) NOT NULL, "
                                 "k VARCHAR(1000) NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tbl, k))")
            if postgres:
                conn.exec_driver_sql(f"CREATE FUNCTION {_COUNTS}_{table}() RETURNS trigger LANGUAGE plpgsql AS "
                                     f"$$ BEGIN {upsert} RETURN NEW; END $$")
                conn.exec_driver_sql(f"CREATE TRIGGER {_COUNTS}_{table} BEFORE INSERT ON {table} FOR EACH ROW "
                                     f"EXECUTE FUNCTION {_COUNTS}_{table}()")
            else:
                conn.exec_driver_sql(f"CREATE TRIGGER {_COUNTS}_{table} BEFORE INSERT ON {table} "
                                     f"BEGIN {upsert} END")
    finally:
        engine.dispose()


def row_writes(url: str, table: str) -> dict[str, int]:
    """Key (columns joined with ``|``) → how many times a committed transaction inserted or upserted it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT k, n FROM {_COUNTS} WHERE tbl = :t"), {"t": table}).all()
    finally:
        engine.dispose()
    return {str(k): int(n) for k, n in rows}
