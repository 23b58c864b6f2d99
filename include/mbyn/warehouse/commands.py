"""``mbyn warehouse init`` and ``mbyn sql "SELECT ..."`` (read-only queries printed as a table)."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.settings import Settings


def _init_command(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.warehouse import init_schema, warehouse_engine
    from mbyn.warehouse.schema import metadata

    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
    finally:
        engine.dispose()
    print(f"warehouse {engine.url.render_as_string(hide_password=True)}: {len(metadata.tables)} tables ready")
    return 0


def format_table(columns: list[str], rows: list[tuple[Any, ...]], max_width: int = 60) -> str:
    """Rows as an aligned text table (cells cut at ``max_width``)."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else value.hex() if isinstance(value, bytes) else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _sql_command(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from mbyn.errors import WarehouseError
    from mbyn.warehouse import warehouse_engine

    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(args.query))
            if not result.returns_rows:
                print("(no rows)")
                return 0
            columns = list(result.keys())
            rows = [tuple(r) for r in result.fetchmany(args.limit + 1)]
    except SQLAlchemyError as exc:
        raise WarehouseError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    print(format_table(columns, rows[: args.limit]))
    more = " (more not shown; raise --limit)" if len(rows) > args.limit else ""
    print(f"({min(len(rows), args.limit)} row{'s' if len(rows) != 1 else ''}{more})")
    return 0


def register_commands(sub: Any) -> None:
    """``mbyn warehouse init`` and ``mbyn sql``."""
    wh = sub.add_parser("warehouse", help="the warehouse database").add_subparsers(dest="action", required=True)
    p = wh.add_parser("init", help="create missing tables and indexes (idempotent)")
    p.set_defaults(handler=_init_command)
    p = sub.add_parser("sql", help='run a read-only query against the warehouse, e.g. mbyn sql "SELECT ..."')
    p.add_argument("query", help="one SQL statement (the transaction is read-only)")
    p.add_argument("--limit", type=int, default=100, help="rows to print (default 100)")
    p.set_defaults(handler=_sql_command)
