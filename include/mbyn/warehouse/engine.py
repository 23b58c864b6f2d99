"""Connecting to the warehouse, creating the schema, bulk upserts and Kafka offsets stored beside the data.

* ``make_engine(url)`` — SQLite (default file under var/) in WAL mode with a 30 s busy timeout and
  ``BEGIN IMMEDIATE`` write transactions, so several loader processes can write one file (writers take
  turns; readers never block); PostgreSQL via ``postgresql+psycopg://``. ``read_only=True`` gives an
  engine whose transactions cannot write (``mbyn sql``).
* ``init_schema(engine)`` — idempotent and safe when several processes start at once.
* ``upsert_rows(conn, table, columns, rows, keys)`` — bulk ``INSERT ... ON CONFLICT`` of positional tuples,
  the loaders' hot path. PostgreSQL: the rows are streamed with binary ``COPY`` (psycopg's C dumpers, typed
  with ``set_types``; no SQLAlchemy processing) into a session-local staging table, then one ``INSERT INTO t
  SELECT ... FROM staging ON CONFLICT ...`` moves them (two statements per batch instead of one per row).
  Money (``Numeric`` read back as float) is staged as ``float8`` and moved as ``CAST(CAST(x AS text) AS
  numeric)`` with ``extra_float_digits = 1`` for the transaction: PostgreSQL then writes a float8 as its
  shortest exact digits, as Python's ``repr`` does, so the stored decimal is the one a text COPY of the float
  stores — for every value a ``NUMERIC(14, 4)`` column holds (beyond 2**53, an int is rounded to a float8,
  and a float at an exact decimal tie such as 1e23 may be written with other digits). A value the binary
  dumper cannot encode (an integer out of range, a naive datetime for a ``timestamptz``, a non-str for text)
  is refused as a database error would be. SQLite: one prepared statement run as
  ``executemany`` (a multi-row ``VALUES`` is slower there), with SQLAlchemy's bind processors applied, so
  stored values are identical to an ORM/Core insert. Both run in the caller's transaction. Rows with the
  same key inside one call are collapsed to the last one, because PostgreSQL refuses to update a row twice in
  one statement. ``upsert(conn, table, dict_rows, keys)`` is the
  same for rows as dicts (missing columns with a scalar Python-side default get that default).
* ``store_offsets`` / ``load_offsets`` — the ``kafka_offsets`` table: written in the same transaction as
  the rows (exactly-once), only ever moved forward.
* ``sink_errors()`` — turns "cannot reach / database locked" into SinkUnavailableError (the consumer runtime
  retries the batch), errors the database raised about the statement or its data into SinkRejectedError
  (the runtime finds and dead-letters the refused record) and other SQLAlchemy errors into WarehouseError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy import update as update_statement
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.schema import CreateColumn

from mbyn.errors import SinkRejectedError, SinkUnavailableError, WarehouseError
from mbyn.settings import get_settings
from mbyn.warehouse.roles import read_url
from mbyn.warehouse.schema import ADDED_COLUMNS, WIDENED_COLUMNS, kafka_offsets, metadata

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Dialect, Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: (physical topic, partition)
PartitionKey = tuple[str, int]


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An Engine for the warehouse URL (see module docstring for the SQLite settings)."""
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
    """The engine for ``settings.warehouse()`` (default settings when None); ``read_only``: as the read-only
    role when there is one (``mbyn.warehouse.roles.read_url``)."""
    settings = settings or get_settings()
    return make_engine(read_url(settings) if read_only else settings.warehouse(), read_only=read_only)


@contextmanager
def sink_errors(what: str = "warehouse") -> Iterator[None]:
    """Map database errors: unreachable / locked → SinkUnavailableError (retry), refused → SinkRejectedError."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise SinkUnavailableError(f"{what}: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise SinkUnavailableError(f"{what}: connection lost: {_first_line(exc)}") from exc
        raise SinkRejectedError(f"{what}: {_first_line(exc)}") from exc
    except SQLAlchemyError as exc:
        raise WarehouseError(f"{what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def init_schema(engine: Engine, attempts: int = 5) -> None:
    """Create every table and index that does not exist yet (idempotent, concurrent-start safe).

    On PostgreSQL an advisory lock serialises concurrent callers; on SQLite a caller that loses the
    race ("already exists") simply tries again and then finds the tables.
    """
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(73857)")
                metadata.create_all(conn, checkfirst=True)
                _add_missing_columns(conn)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if ("already exists" not in str(exc) and "locked" not in str(exc)) or attempt == attempts:
                raise WarehouseError(f"cannot create the warehouse schema at {engine.url!r}: "
                                     f"{_first_line(exc)}") from exc
            time.sleep(0.2 * attempt)


def _add_missing_columns(conn: Connection) -> None:
    """Bring a warehouse made by an older version up to date: ``schema.ADDED_COLUMNS`` it lacks are added,
    ``schema.WIDENED_COLUMNS`` widened (PostgreSQL)."""
    inspector = inspect(conn)
    for table_name, column_name in ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table_name)}
        if column_name not in present:
            column = metadata.tables[table_name].c[column_name]
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table_name} ADD COLUMN {ddl}")
    if conn.dialect.name != "postgresql":
        return
    for table_name, column_name in WIDENED_COLUMNS:
        wanted = metadata.tables[table_name].c[column_name].type
        found = {c["name"]: c["type"] for c in inspector.get_columns(table_name)}.get(column_name)
        if getattr(found, "precision", None) != getattr(wanted, "precision", None):
            conn.exec_driver_sql(f"ALTER TABLE {table_name} ALTER COLUMN {column_name} TYPE "
                                 f"{wanted.compile(dialect=conn.dialect)}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str | None) -> datetime | None:
    """An envelope timestamp (ISO-8601, ``Z`` or offset) as an aware UTC datetime."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)  # Python ≥ 3.11 reads "Z" itself
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def dialect_insert(conn: Connection, table: Table) -> Any:
    """``INSERT`` for ``conn``'s dialect (SQLite or PostgreSQL), so ``.on_conflict_do_update/nothing`` are there."""
    # Only the dialect in use is imported here (create_engine has loaded it already): both at the top of this
    # module would cost every `mbyn` command up to 40 ms.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415 - the dialect in use only
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # noqa: PLC0415 - as above
    else:
        raise WarehouseError(f"upsert is not implemented for {conn.dialect.name}")
    return insert(table)


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: Sequence[str] | None = None) -> int:
    """Insert ``rows`` (dicts of one shape); on a key conflict update the ``update`` columns (None: all non-key
    columns; empty: do nothing — immutable facts). Rows sharing a key are collapsed to the last. Returns rows
    sent. Columns missing from the rows that have a scalar Python-side default (``deleted``, ``status``) get it."""
    if not rows:
        return 0
    columns = list(rows[0])
    defaults = [(c.name, getattr(c.default, "arg", None)) for c in table.columns
                if c.name not in rows[0] and c.default is not None and c.default.is_scalar]
    tuples = [tuple(row[c] for c in columns) for row in rows]
    if update is None:
        update = [c for c in columns if c not in keys]
    if defaults:
        columns += [name for name, _ in defaults]
        extra = tuple(value for _, value in defaults)
        tuples = [row + extra for row in tuples]
    return upsert_rows(conn, table, columns, tuples, keys, update)


def upsert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                keys: Sequence[str], update: Sequence[str] | None = None) -> int:
    """Insert ``rows`` (tuples in ``columns`` order); on a key conflict update ``update`` (None: every non-key
    column; empty: do nothing). Rows sharing a key are collapsed to the last. Returns rows sent.

    See the module docstring for how each database is written (PostgreSQL COPY + INSERT ... SELECT, SQLite
    executemany); both in the caller's transaction, database errors raised as SQLAlchemy's (``sink_errors``).
    """
    if not rows:
        return 0
    plan = _plan(conn.dialect, table, tuple(columns), tuple(keys),
                 tuple(c for c in columns if c not in keys) if update is None else tuple(update))
    key_at = [list(columns).index(k) for k in keys]
    unique: list[Sequence[Any]]
    if len(key_at) == 1:
        only = key_at[0]
        unique = list({row[only]: row for row in rows}.values())
    else:
        unique = list({tuple(row[i] for i in key_at): row for row in rows}.values())
    dbapi_conn: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        with _dbapi_errors(conn, plan.insert), dbapi_conn.cursor() as cursor:
            cursor.execute(plan.create_staging)
            with cursor.copy(plan.copy) as copy:
                copy.set_types(plan.copy_types)
                write_row = copy.write_row
                try:
                    for row in unique:
                        write_row(row)
                except (OverflowError, ValueError, TypeError) as exc:  # psycopg's dumpers refusing a value
                    raise dbapi_conn.DataError(f"{table.name}: {exc}") from exc
            cursor.execute(plan.insert)  # and the DELETE that empties the staging table, one round trip
    else:
        if plan.processors:
            unique = _bind(unique, plan.processors)
        with _dbapi_errors(conn, plan.insert):
            cursor = dbapi_conn.cursor()
            try:
                cursor.executemany(plan.insert, unique)
            finally:
                cursor.close()
    return len(unique)


def _bind(rows: list[Sequence[Any]], processors: tuple[tuple[int, Callable[[Any], Any]], ...],
          ) -> list[Sequence[Any]]:
    """Rows with SQLAlchemy's bind processors applied to the columns that have one (SQLite: timestamps as
    text, booleans as integers). A value that is the same object as the previous row's (a batch's
    ``loaded_at``) is converted once."""
    out: list[Sequence[Any]] = []
    last: dict[int, tuple[Any, Any]] = {}
    for row in rows:
        values = list(row)
        for i, process in processors:
            value = values[i]
            if value is None:
                continue
            seen = last.get(i)
            if seen is not None and seen[0] is value:
                values[i] = seen[1]
            else:
                values[i] = converted = process(value)
                last[i] = (value, converted)
        out.append(values)
    return out


@dataclass(frozen=True)
class _UpsertPlan:
    """The SQL of one (table, columns, keys, update) upsert for one dialect, built once."""

    insert: str
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column index, SQLAlchemy bind processor)
    create_staging: str = ""
    copy: str = ""
    copy_types: tuple[str, ...] = ()


@lru_cache(maxsize=256)
def _plan(dialect: Dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...],
          update: tuple[str, ...]) -> _UpsertPlan:
    if dialect.name not in ("postgresql", "sqlite"):
        raise WarehouseError(f"upsert is not implemented for {dialect.name}")
    unknown = [c for c in (*columns, *keys, *update) if c not in table.columns]
    if unknown:
        raise WarehouseError(f"upsert into {table.name}: unknown column(s) {', '.join(unknown)}")
    q = dialect.identifier_preparer.quote
    names = ", ".join(q(c) for c in columns)
    conflict = f"ON CONFLICT ({', '.join(q(k) for k in keys)}) " + (
        "DO UPDATE SET " + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in update) if update else "DO NOTHING")
    processors = [(i, table.columns[c].type.dialect_impl(dialect).bind_processor(dialect))
                  for i, c in enumerate(columns)]
    plan_processors = tuple((i, p) for i, p in processors if p is not None)
    if dialect.name == "sqlite":
        marks = ", ".join("?" for _ in columns)
        return _UpsertPlan(f"INSERT INTO {q(table.name)} ({names}) VALUES ({marks}) {conflict}", plan_processors)
    # A temporary table lives as long as the connection (pooled: across batches); ON COMMIT DELETE ROWS empties
    # it at every commit, and the DELETE after the move empties it for a second upsert in the same transaction.
    # No constraints: the real INSERT checks them, with the real table's error messages. Money is staged as
    # float8 (what the rows hold) and converted through its shortest text (see the module docstring); INTEGER as
    # int8, so that a value out of its range is refused by the INSERT (psycopg's int4 dumper does not check).
    staging = q(f"mbyn_staging_b_{table.name}")
    money = {c.name for c in table.columns if isinstance(c.type, Numeric) and not isinstance(c.type, Float)}
    staged = ", ".join(f"CAST({q(c.name)} AS {_copy_type(c.type)}) AS {q(c.name)}"
                       if c.name in money or _copy_type(c.type) == "int8" else q(c.name) for c in table.columns)
    moved = ", ".join(f"CAST(CAST({q(c)} AS text) AS numeric)" if c in money else q(c) for c in columns)
    # float8's text output is its shortest exact digits only while extra_float_digits > 0 (the default, 1); a
    # database or role set to <= 0 would cut money to 15 (or fewer) significant digits before it is rounded.
    exact_floats = "SET LOCAL extra_float_digits = 1; " if money.intersection(columns) else ""
    return _UpsertPlan(
        insert=f"{exact_floats}INSERT INTO {q(table.name)} ({names}) SELECT {moved} FROM {staging} {conflict}; "
               f"DELETE FROM {staging}",
        processors=plan_processors,
        create_staging=f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                       f"SELECT {staged} FROM {q(table.name)} WITH NO DATA",
        copy=f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)",
        copy_types=tuple(_copy_type(table.columns[c].type) for c in columns))


#: SQLAlchemy type → the PostgreSQL type psycopg's binary COPY dumps a column's Python value as.
_COPY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (Boolean, "bool"), (Integer, "int8"), (Float, "float8"), (Numeric, "float8"),  # Integer: see _plan
    (DateTime, "timestamptz"), (Date, "date"), (LargeBinary, "bytea"), (String, "text"))


def _copy_type(column_type: Any) -> str:
    for sa_type, pg_type in _COPY_TYPES:
        if isinstance(column_type, sa_type):
            if sa_type is Numeric and column_type.asdecimal:
                raise WarehouseError(f"binary COPY stages money as float8; {column_type!r} reads back Decimals")
            if sa_type is DateTime and not column_type.timezone:
                return "timestamp"
            return pg_type
    raise WarehouseError(f"no binary COPY type for {column_type!r}")


@contextmanager
def _dbapi_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Raise DBAPI errors of raw-cursor work as SQLAlchemy's exceptions, as ``conn.execute`` would."""
    dbapi_error: type[Any] = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        # A lost connection is not reused: the pool's pre-ping replaces it at the next checkout.
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        raise DBAPIError.instance(statement, None, exc, dbapi_error, connection_invalidated=lost,
                                  dialect=conn.dialect, ismulti=True) from exc


def store_offsets(conn: Connection, group: str, next_offsets: Mapping[tuple[str, int], int]) -> None:
    """Record the next offset per (topic, partition) for ``group`` — forward only, in the caller's transaction.

    Forward only: a copy that lost its partitions (a "zombie") and writes late cannot move the position back.
    """
    if not next_offsets:
        return
    now = utc_now()
    rows = [{"consumer_group": group, "topic": t, "partition": p, "next_offset": o, "updated_at": now}
            for (t, p), o in next_offsets.items()]
    stmt = dialect_insert(conn, kafka_offsets)
    stmt = stmt.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "partition"],
        set_={"next_offset": stmt.excluded.next_offset, "updated_at": stmt.excluded.updated_at},
        where=kafka_offsets.c.next_offset < stmt.excluded.next_offset,
    )
    conn.execute(stmt, rows)


def claim_offsets(conn: Connection, group: str, positions: Mapping[PartitionKey, int | None],
                  next_offsets: Mapping[PartitionKey, int]) -> list[PartitionKey]:
    """Compare-and-set the stored next offsets of ``group``: ``positions[key]`` → ``next_offsets[key]``.

    ``positions[key]`` is where the caller believes the stored offset is (None: no row yet — the copy started
    from the earliest record). Each partition's row moves only if it still holds that value; the partitions
    whose row did not are returned (empty: every claim succeeded). Run in the transaction that writes the
    batch, first, and roll it back if anything is returned. On PostgreSQL the ``UPDATE ... WHERE`` waits for
    a concurrent writer of the row and then re-checks its condition, and ``ON CONFLICT DO NOTHING`` waits
    for a concurrent insert, so two copies claiming the same offset cannot both succeed; SQLite runs one
    write transaction at a time (``BEGIN IMMEDIATE``).
    """
    t = kafka_offsets
    now = utc_now()
    stale: list[PartitionKey] = []
    for (topic, partition), offset in sorted(next_offsets.items()):
        expected = positions.get((topic, partition))
        # RETURNING tells whether the row was written: psycopg reports no rowcount for INSERT ... ON CONFLICT.
        if expected is None:
            result = conn.execute(dialect_insert(conn, t).on_conflict_do_nothing().returning(t.c.next_offset), {
                "consumer_group": group, "topic": topic, "partition": partition, "next_offset": offset,
                "updated_at": now})
        else:
            result = conn.execute(update_statement(t).where(t.c.consumer_group == group, t.c.topic == topic,
                                                            t.c.partition == partition, t.c.next_offset == expected)
                                  .values(next_offset=offset, updated_at=now).returning(t.c.next_offset))
        if result.first() is None:
            stale.append((topic, partition))
    return stale


def load_offsets(conn: Connection, group: str, partitions: Sequence[tuple[str, int]] | None = None,
                 ) -> dict[tuple[str, int], int]:
    """The stored next offsets of ``group`` (only ``partitions`` when given)."""
    result = conn.execute(select(kafka_offsets.c.topic, kafka_offsets.c.partition, kafka_offsets.c.next_offset)
                          .where(kafka_offsets.c.consumer_group == group))
    stored = {(t, int(p)): int(o) for t, p, o in result}
    if partitions is None:
        return stored
    wanted = set(partitions)
    return {k: v for k, v in stored.items() if k in wanted}
