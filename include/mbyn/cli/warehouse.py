"""``mbyn warehouse init`` and ``mbyn sql "SELECT ..."`` (read-only queries printed as a table)."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.cli.text import format_table
from mbyn.settings import Settings
from mbyn.warehouse.engine import init_schema, warehouse_engine
from mbyn.warehouse.query import read_only_query
from mbyn.warehouse.schema import metadata


def _init(settings: Settings, args: argparse.Namespace) -> int:
    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
    finally:
        engine.dispose()
    print(f"warehouse {engine.url.render_as_string(hide_password=True)}: {len(metadata.tables)} tables ready")
    return 0


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    answer = read_only_query(settings, args.query, args.limit + 1)
    if answer is None:
        print("(no rows)")
        return 0
    columns, rows = answer
    print(format_table(columns, rows[: args.limit]))
    more = " (more not shown; raise --limit)" if len(rows) > args.limit else ""
    print(f"({min(len(rows), args.limit)} row{'s' if len(rows) != 1 else ''}{more})")
    return 0


def register(sub: Any) -> None:
    """Add ``warehouse init`` and ``sql``."""
    wh = sub.add_parser("warehouse", help="the warehouse database").add_subparsers(dest="action", required=True)
    p = wh.add_parser("init", help="create missing tables and indexes (idempotent)")
    p.set_defaults(handler=_init)
    p = sub.add_parser("sql", help='run a read-only query against the warehouse, e.g. mbyn sql "SELECT ..."')
    p.add_argument("query", help="one SQL statement (the transaction is read-only)")
    p.add_argument("--limit", type=int, default=100, help="rows to print (default 100)")
    p.set_defaults(handler=_sql, reads_pipeline=True)  # the warehouse only: no Kafka principal
