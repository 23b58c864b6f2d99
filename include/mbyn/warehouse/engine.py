"""Connecting to the warehouse, creating the schema, bulk upserts and Kafka offsets stored beside the data.

* ``make_engine(url)`` — SQLite (default file under var/) in WAL mode with a 30 s busy timeout and
  ``BEGIN IMMEDIATE`` write transactions, so several loader processes can write one file (writers take
  turns; readers never block); PostgreSQL via ``postgresql+psycopg://``. ``read_only=True`` gives an
  engine whose transactions cannot write (``mbyn sql``).
* ``init_schema(engine)`` — idempotent and safe when several processes start at once.
* ``upsert(conn, table, rows, keys)`` — one ``INSERT ... ON CONFLICT`` executed as executemany (SQLite and
  PostgreSQL dialects); rows with the same key inside one call are collapsed to the last one, because
  PostgreSQL refuses to update a row twice in one statement.
* ``store_offsets`` / ``load_offsets`` — the ``kafka_offsets`` table: written in the same transaction as
  the rows (exactly-once), only ever moved forward.
* ``sink_errors()`` — turns "cannot reach / database locked" into SinkUnavailableError (the consumer runtime
  retries the batch) and other database errors into WarehouseError.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbyn.errors import SinkUnavailableError, WarehouseError
from mbyn.warehouse.schema import kafka_offsets, metadata

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An Engine for the warehouse URL (see module docstring for the SQLite settings)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_conn.cursor()
            if not read_only:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout instead of one
            # failing with "database is locked" when it upgrades a read lock mid-transaction.
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
        if read_only:
            @event.listens_for(engine, "begin")
            def _on_begin_pg(conn: Connection) -> None:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return engine
    raise WarehouseError(f"MBYN_WAREHOUSE_URL: unsupported database {parsed.get_backend_name()!r}; "
                         "use sqlite:///path or postgresql+psycopg://user:pass@host/db")  # pragma: allowlist secret


def warehouse_engine(settings: Any = None, *, read_only: bool = False) -> Engine:
    """The engine for ``settings.warehouse()`` (default settings when None)."""
    from mbyn.settings import get_settings

    return make_engine((settings or get_settings()).warehouse(), read_only=read_only)


@contextmanager
def sink_errors(what: str = "warehouse") -> Iterator[None]:
    """Map database errors: unreachable / locked → SinkUnavailableError (retry), others → WarehouseError."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise SinkUnavailableError(f"{what}: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise SinkUnavailableError(f"{what}: connection lost: {_first_line(exc)}") from exc
        raise WarehouseError(f"{what}: {_first_line(exc)}") from exc
    except SQLAlchemyError as exc:
        raise WarehouseError(f"{what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def init_schema(engine: Engine, attempts: int = 5) -> None:
    """Create every table and index that does not exist yet (idempotent, concurrent-start safe).

    On PostgreSQL an advisory lock serialises concurrent callers; on SQLite a caller that loses the
    race ("already exists") simply tries again and then finds the tables.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(73857)")
                metadata.create_all(conn, checkfirst=True)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if ("already exists" not in str(exc) and "locked" not in str(exc)) or attempt == attempts:
                raise WarehouseError(f"cannot create the warehouse schema at {engine.url!r}: "
                                     f"{_first_line(exc)}") from exc
            time.sleep(0.2 * attempt)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str | None) -> datetime | None:
    """An envelope timestamp (ISO-8601, ``Z`` or offset) as an aware UTC datetime."""
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise WarehouseError(f"upsert is not implemented for {conn.dialect.name}")
    return insert(table)


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: Sequence[str] | None = None) -> int:
    """Insert ``rows``; on a key conflict update the ``update`` columns (None: all non-key columns; empty:
    do nothing — immutable facts). Rows sharing a key are collapsed to the last. Returns rows sent."""
    if not rows:
        return 0
    unique: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        unique[tuple(row[k] for k in keys)] = row
    stmt = _insert(conn, table)
    columns = list(update) if update is not None else [c for c in rows[0] if c not in keys]
    if columns:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in columns})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(unique.values()))
    return len(unique)


def store_offsets(conn: Connection, group: str, next_offsets: Mapping[tuple[str, int], int]) -> None:
    """Record the next offset per (topic, partition) for ``group`` — forward only, in the caller's transaction.

    Forward only: a copy that lost its partitions (a "zombie") and writes late cannot move the position back.
    """
    if not next_offsets:
        return
    now = utc_now()
    rows = [{"consumer_group": group, "topic": t, "partition": p, "next_offset": o, "updated_at": now}
            for (t, p), o in next_offsets.items()]
    stmt = _insert(conn, kafka_offsets)
    stmt = stmt.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "partition"],
        set_={"next_offset": stmt.excluded.next_offset, "updated_at": stmt.excluded.updated_at},
        where=kafka_offsets.c.next_offset < stmt.excluded.next_offset,
    )
    conn.execute(stmt, rows)


def load_offsets(conn: Connection, group: str, partitions: Sequence[tuple[str, int]] | None = None,
                 ) -> dict[tuple[str, int], int]:
    """The stored next offsets of ``group`` (only ``partitions`` when given)."""
    from sqlalchemy import select

    result = conn.execute(select(kafka_offsets.c.topic, kafka_offsets.c.partition, kafka_offsets.c.next_offset)
                          .where(kafka_offsets.c.consumer_group == group))
    stored = {(t, int(p)): int(o) for t, p, o in result}
    if partitions is None:
        return stored
    wanted = set(partitions)
    return {k: v for k, v in stored.items() if k in wanted}
