"""Customers snapshot: changes in the shop's OLTP database → compacted topic ``customers`` (key = customer_id).

Source: table ``customers(id, customer_id, name, email, country, segment, updated_at, deleted_at)`` in the
database at ``MBYN_SOURCE_DB_URL`` (default: SQLite ``var/shop.db``; PostgreSQL works by URL), read through
SQLAlchemy with the SQL in ``include/sql/customers_*.sql``. The table name comes from
``MBYN_CUSTOMERS_TABLE`` and is checked against a strict identifier pattern and quoted before use;
every value is a bound parameter.

* Change capture by watermark: ``changes_since`` returns rows with ``(updated_at, id)`` greater than the
  stored watermark, ordered by it, ``batch_size`` at a time. Each batch is sent, flushed with
  ``flush_or_raise`` and only then is the watermark (the batch's last row) saved to
  ``var/state/customers-<table>.json`` — a crash re-sends at most one batch, never skips one.
* A live row becomes ``customer_upserted``; a soft-deleted row (``deleted_at`` set) becomes a tombstone
  (null value, same key), so compaction eventually forgets the customer.
* Event ids are uuid5 of (customer_id, updated_at): a re-sent change carries the same id.
* Trade-off of timestamp watermarks: a writer that commits a row with an ``updated_at`` older than one
  already read would be missed. The shop's writers stamp ``updated_at`` at commit time from one clock;
  a database with concurrent long transactions would need log-based CDC instead.

The database is created and seeded on first use with ``shop.CUSTOMERS`` customers (Faker, seeded; ids
``shop.customer_id(n)``, country ``shop.home_country``), so they match the clickstream. ``--mutate N``
(``mutate_customers``) simulates the shop at work: updates, new sign-ups and soft deletes.
"""

from __future__ import annotations

import logging
import random
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, bindparam, create_engine, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mbyn.contracts.envelope import make_envelope
from mbyn.errors import ConfigError, SourceError
from mbyn.options import Args, Option, option
from mbyn.process import StopFlag
from mbyn.settings import INCLUDE_DIR, Settings, get_settings
from mbyn.sources import shop
from mbyn.sources.batch import BatchRun, event_id, refuse_stream_limits, run_batch, run_batch_cli

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.elements import TextClause

log = logging.getLogger("mbyn.source.customers")

SOURCE = "customers-db"
TOPIC = "customers"
SQL_DIR = INCLUDE_DIR / "sql"
SEGMENTS = ("consumer", "business", "vip")
SEGMENT_WEIGHTS = (80, 16, 4)
#: The watermark before anything was read: older than every row.
EPOCH = datetime(1970, 1, 1)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TIMESTAMP_COLUMNS = ("since_at", "updated_at")


# SQL files ------------------------------------------------------------------------------------------------


def check_identifier(name: str, setting: str = "MBYN_CUSTOMERS_TABLE") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ConfigError (no SQL injection by config)."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{setting}={name!r} is not allowed: use letters, digits and _ "
                          "(starting with a letter or _), at most 63 characters")
    return name


@lru_cache(maxsize=8)
def _sql_file(filename: str) -> str:
    return (SQL_DIR / filename).read_text(encoding="utf-8")


def _named_queries(filename: str) -> dict[str, str]:
    """Split a ``-- name: <query>`` file into {name: sql} (comments inside a query are kept)."""
    queries: dict[str, str] = {}
    name: str | None = None
    for line in _sql_file(filename).splitlines():
        match = re.match(r"^--\s*name:\s*(\w+)\s*$", line)
        if match:
            name = match.group(1)
            queries[name] = ""
        elif name is not None:
            queries[name] += line + "\n"
    return {k: v.strip() for k, v in queries.items()}


class CustomersSql:
    """The customers table's statements for one engine and table name, identifiers validated and quoted."""

    def __init__(self, engine: Engine, table: str) -> None:
        quote = engine.dialect.identifier_preparer.quote_identifier
        self.table = check_identifier(table)
        names = {"table": quote(self.table), "index": quote(check_identifier(f"{table}_changes_idx"))}
        self.schema: list[TextClause] = [
            text(statement.strip().format(**names))
            for statement in _strip_comments(_sql_file("customers_schema.sql")).split(";") if statement.strip()
        ]
        self.queries: dict[str, TextClause] = {}
        for name, sql in _named_queries("customers_queries.sql").items():
            sql = _strip_comments(sql)
            clause = text(sql.format(**names))
            binds = [bindparam(p, type_=DateTime()) for p in _TIMESTAMP_COLUMNS if f":{p}" in sql]
            if binds:
                clause = clause.bindparams(*binds)
            if sql.lstrip().upper().startswith("SELECT") and "updated_at" in sql:
                clause = clause.columns(updated_at=DateTime(), deleted_at=DateTime())  # type: ignore[assignment]
            self.queries[name] = clause

    def __getitem__(self, name: str) -> TextClause:
        return self.queries[name]


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def open_source_db(settings: Settings) -> tuple[Engine, CustomersSql]:
    """Connect to the source database (creating the SQLite folder if needed) and prepare the statements."""
    url = settings.source_db()
    if url.startswith("sqlite:///"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"MBYN_SOURCE_DB_URL is not a usable SQLAlchemy URL: {exc}") from None
    return engine, CustomersSql(engine, settings.customers_table)


def _now() -> datetime:
    """UTC now without a zone, the form the table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds") + "Z"


# Source database: create, seed, mutate ---------------------------------------------------------------------


def _fake_person(fake: Any, rng: random.Random, n: int) -> dict[str, str]:
    name = fake.name()
    local = re.sub(r"[^a-z]+", ".", name.lower()).strip(".") or "customer"
    return {"name": name, "email": f"{local}.{n}@{fake.free_email_domain()}",
            "segment": rng.choices(SEGMENTS, weights=SEGMENT_WEIGHTS)[0]}


def ensure_source_db(settings: Settings | None = None, *, seed: int = 42) -> int:
    """Create the customers table if missing and seed it when empty; return how many rows were seeded.

    The seed is ``shop.CUSTOMERS`` customers ``shop.customer_id(1..N)`` with ``shop.home_country`` and
    Faker names (seeded: the same names every time). Idempotent: a non-empty table is left alone.
    """
    from faker import Faker  # noqa: PLC0415 - only to seed (50 ms); every CLI command imports this module

    settings = settings or get_settings()
    engine, sql = open_source_db(settings)
    try:
        with engine.begin() as conn:
            for statement in sql.schema:
                conn.execute(statement)
            if conn.execute(sql["row_count"]).scalar_one():
                return 0
            fake, rng = Faker(), random.Random(seed)
            fake.seed_instance(seed)
            now = _now()
            rows = [{"id": n, "customer_id": shop.customer_id(n), "country": shop.home_country(shop.customer_id(n)),
                     "updated_at": now, **_fake_person(fake, rng, n)} for n in range(1, shop.CUSTOMERS + 1)]
            conn.execute(sql["insert_customer"], rows)
        log.info("customers: seeded %d customers into %s", len(rows), engine.url.render_as_string(hide_password=True))
        return len(rows)
    except SQLAlchemyError as exc:
        raise SourceError(f"customers: cannot prepare the source database "
                          f"{engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    finally:
        engine.dispose()


def mutate_customers(settings: Settings | None = None, changes: int = 50, *, seed: int | None = None) -> dict[str, int]:
    """Simulate the shop at work: ``changes`` random updates (70%), sign-ups (20%) and soft deletes (10%).

    All changes are one transaction, stamped with increasing UTC times. Returns the count per kind.
    """
    from faker import Faker  # noqa: PLC0415 - as in ensure_source_db

    settings = settings or get_settings()
    ensure_source_db(settings)
    engine, sql = open_source_db(settings)
    rng = random.Random(seed)
    fake = Faker()
    fake.seed_instance(rng.getrandbits(32))
    counts = {"updated": 0, "inserted": 0, "deleted": 0}
    try:
        with engine.begin() as conn:
            live = list(conn.execute(sql["live_ids"]).scalars())
            next_id = int(conn.execute(sql["max_id"]).scalar_one()) + 1
            stamp = _now()
            for _ in range(changes):
                stamp += timedelta(microseconds=1)
                kind = rng.choices(("updated", "inserted", "deleted"), weights=(70, 20, 10))[0]
                if kind != "inserted" and not live:
                    kind = "inserted"
                if kind == "inserted":
                    cid = shop.customer_id(next_id)
                    conn.execute(sql["insert_customer"], {"id": next_id, "customer_id": cid,
                                                          "country": shop.home_country(cid), "updated_at": stamp,
                                                          **_fake_person(fake, rng, next_id)})
                    live.append(next_id)
                    next_id += 1
                elif kind == "updated":
                    row_id = rng.choice(live)
                    current = conn.execute(sql["get_customer"], {"id": row_id}).mappings().one()
                    person = _fake_person(fake, rng, row_id)
                    # A change touches one field, as a customer editing a profile would.
                    field = rng.choice(("name", "email", "segment"))
                    values = {"name": current["name"], "email": current["email"], "segment": current["segment"],
                              field: person[field]}
                    conn.execute(sql["update_customer"], {"id": row_id, "updated_at": stamp, **values})
                else:
                    row_id = live.pop(rng.randrange(len(live)))
                    conn.execute(sql["soft_delete_customer"], {"id": row_id, "updated_at": stamp})
                counts[kind] += 1
    finally:
        engine.dispose()
    log.info("customers: mutated the source database: %s", counts)
    return counts


# Publishing ---------------------------------------------------------------------------------------------


def _change_to_record(row: Any) -> tuple[str, dict[str, Any] | None]:
    """(key, envelope) for one changed row; the envelope is None for a soft-deleted row (a tombstone)."""
    if row.deleted_at is not None:
        return row.customer_id, None
    updated = _iso(row.updated_at)
    payload = {"customer_id": row.customer_id, "name": row.name, "email": row.email, "country": row.country,
               "segment": row.segment, "updated_at": updated}
    envelope = make_envelope("customer_upserted", payload, SOURCE, event_time=updated,
                             event_id=event_id(TOPIC, row.customer_id, updated))
    return row.customer_id, dict(envelope)


def _publish(run: BatchRun, batch_size: int) -> None:
    engine, sql = open_source_db(run.settings)
    origin = f"{engine.url.render_as_string(hide_password=True)}#{sql.table}"
    if run.state.get("origin") not in (None, origin):
        log.warning("customers: the source changed from %s to %s; starting from the beginning "
                    "(re-sent changes keep their event ids)", run.state["origin"], origin)
        run.state.pop("watermark", None)
    run.state["origin"] = origin
    mark = run.state.get("watermark") or {}
    since_at = datetime.fromisoformat(mark["updated_at"]) if mark else EPOCH
    since_id = int(mark.get("id", 0))
    try:
        while not run.stop.is_set():
            with engine.connect() as conn:
                rows = _read_changes(conn, sql, since_at, since_id, batch_size)
            if not rows:
                break
            for row in rows:
                key, envelope = _change_to_record(row)
                run.send(TOPIC, envelope, key)  # type: ignore[arg-type]
                run.stats["tombstones" if envelope is None else "upserts"] += 1
            since_at, since_id = rows[-1].updated_at, int(rows[-1].id)
            run.state["watermark"] = {"updated_at": since_at.isoformat(timespec="microseconds"), "id": since_id}
            run.commit()
            log.info("customers: batch of %d published, watermark (%s, %d)", len(rows), _iso(since_at), since_id)
            if len(rows) < batch_size:
                break
    except SQLAlchemyError as exc:
        raise SourceError(f"customers: reading {origin} failed: {exc}") from exc
    finally:
        engine.dispose()


def _read_changes(conn: Connection, sql: CustomersSql, since_at: datetime, since_id: int, batch_size: int) -> list[Any]:
    params = {"since_at": since_at, "since_id": since_id, "batch_size": batch_size}
    return list(conn.execute(sql["changes_since"], params))


def publish_customer_changes(settings: Settings | None = None, *, mutate: int = 0, batch_size: int = 1000,
                             seed: int | None = None, stop: StopFlag | None = None) -> dict[str, Any]:
    """Publish every customer change since the stored watermark; return the summary (the Airflow task entry).

    Creates and seeds the source database on first use; ``mutate`` > 0 first applies that many simulated
    changes (``seed`` makes them reproducible). Raises SourceError when the database cannot be read and
    DeliveryError when the broker did not acknowledge a batch (the watermark then stays where it was).
    """
    settings = settings or get_settings()
    if batch_size < 1:
        raise ConfigError(f"customers: batch_size must be at least 1, got {batch_size}")
    seeded = ensure_source_db(settings)
    mutated = mutate_customers(settings, mutate, seed=seed) if mutate > 0 else {}
    summary = run_batch(SOURCE, f"customers-{settings.customers_table}", lambda run: _publish(run, batch_size),
                        settings, stop=stop)
    return {**summary, "seeded": seeded, **{f"mutated_{k}": v for k, v in mutated.items()}}


OPTIONS: tuple[Option, ...] = (
    option("--mutate", type=int, default=0, metavar="N",
           help="first apply N simulated changes (updates, sign-ups, soft deletes) to the source table"),
    option("--seed", type=int, default=None, help="reproducible mutations (default: random)"),
    option("--batch-size", type=int, default=1000, help="rows per batch (one flush + watermark each)"),
)


def run(settings: Settings, args: Args) -> int:
    refuse_stream_limits("customers", args)
    if args.mutate < 0:
        raise SystemExit("mbyn: --mutate must be 0 or more")
    return run_batch_cli(SOURCE, lambda stop: publish_customer_changes(
        settings, mutate=args.mutate, batch_size=args.batch_size, seed=args.seed, stop=stop))
