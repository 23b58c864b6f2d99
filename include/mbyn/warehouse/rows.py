"""What the warehouse makes of each raw topic — the only topic → table mapping (``ROWS``).

The warehouse-loader, the shipments batch load (``mbyn.orchestration.shipments_load``) and ``mbyn status``'s
reconciliation all read it. Rows are upserted on their business keys, so a record seen twice (a producer
re-send with the same event id) is loaded once:

================  ======================  =====================================================
topic             table                   key / on conflict
================  ======================  =====================================================
clickstream       clicks                  event_id — keep the first
orders            orders, order_items     order_id (order_id, line_no) — last version wins
payments          payments                event_id — keep the first
customers         customers               customer_id — last wins; a tombstone sets deleted
inventory         inventory               sku — last wins; a tombstone sets deleted
fx-rates          fx_rates                (currency, rate_date) — last wins
shipments         shipments               event_id — keep the first
alerts            alerts                  alert_id — keep the first (status belongs to the DAG)
================  ======================  =====================================================

One ``TableRows`` per topic: the table, its key columns, the columns a row fills (in that order) and
``row(envelope, loaded_at)``, which turns one envelope the codec accepted (``mbyn.contracts.codec``) into a
tuple in that order; ``lines`` adds a second table filled from a list inside the payload (an order's items).
``upsert_records`` writes a batch of decoded records with ``upsert_rows`` — tuples, no dict per row, one
bulk statement per table: the loader's hot path. ``key_of(envelope, key)`` is the row key a record makes: a
key column is the envelope's field of that name (``event_id``) or else the payload's, a tombstone's row is
named by the record key — what the reconciliation compares with the table's key columns.

Tombstones come only on compacted topics: ``MARK_DELETED`` upserts (key, ``deleted`` = true, ``loaded_at``)
for the record key, the row keeps its last values; ``SKIP`` writes nothing (a currency withdrawn: the history
of rates stays valid). Within a batch the last record per key decides (poll order = offset order per key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mbyn.warehouse.engine import parse_time, upsert_rows, utc_now
from mbyn.warehouse.schema import metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Envelope = dict[str, Any]
#: One envelope (and the batch's ``loaded_at``) → a row, in the declaration's ``columns`` order.
RowFn = Callable[[Envelope, datetime], tuple[Any, ...]]
#: One envelope → the rows of a second table, in the ``LineRows.columns`` order.
LinesFn = Callable[[Envelope], list[tuple[Any, ...]]]
Tombstones = Literal["mark_deleted", "skip"]
MARK_DELETED: Tombstones = "mark_deleted"
SKIP: Tombstones = "skip"
#: Key columns read from the envelope itself; every other key column is a payload field of the same name.
ENVELOPE_KEYS = frozenset({"event_id"})


class DecodedRecord(Protocol):
    """What a row is made from: a consumed record after the codec (``mbyn.consumers.contract.Record`` is one)."""

    @property
    def data(self) -> Envelope | None: ...  # the envelope; None for a tombstone

    @property
    def key_str(self) -> str | None: ...  # the record key as text


@dataclass(frozen=True)
class LineRows:
    """A second table filled from a list inside the payload: several rows per record (an order's items)."""

    table: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]
    rows: LinesFn
    keep_first: bool = False


@dataclass(frozen=True)
class TableRows:
    """What one raw topic becomes in the warehouse (see the module docstring)."""

    topic: str  # logical catalog name
    table: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]
    row: RowFn
    keep_first: bool  # on a key conflict keep the stored row (facts), else the new one replaces it
    collapse: str  # how several records become one row, in the reconciliation's words
    tombstones: Tombstones | None = None  # None: not compacted, the codec never yields a tombstone
    lines: LineRows | None = None

    def __post_init__(self) -> None:
        if not set(self.key_columns) <= set(self.columns):
            raise ValueError(f"{self.topic}: key {self.key_columns} not among the columns {self.columns}")
        if self.tombstones == MARK_DELETED and len(self.key_columns) != 1:
            raise ValueError(f"{self.topic}: a tombstone names one row by its record key; key {self.key_columns}")

    @property
    def key(self) -> str:
        """The key as the reconciliation names it: ``event_id``, ``(currency, rate_date)``."""
        return self.key_columns[0] if len(self.key_columns) == 1 else f"({', '.join(self.key_columns)})"

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table the topic fills."""
        return (self.table,) if self.lines is None else (self.table, self.lines.table)

    def key_of(self, envelope: Envelope | None, key: bytes | None) -> Any:
        """The row key ``envelope`` (None: a tombstone with record key ``key``) makes; None when it makes no row.

        A value for one key column, a tuple for several. Raises KeyError / TypeError when a key field is missing.
        """
        if envelope is None:
            if self.tombstones != MARK_DELETED or key is None:
                return None
            return key.decode("utf-8", errors="replace")  # the record key names the row (marked deleted)
        values = tuple(envelope[c] if c in ENVELOPE_KEYS else envelope["payload"][c] for c in self.key_columns)
        return values[0] if len(values) == 1 else values


@dataclass
class Loaded:
    """What ``upsert_records`` sent: rows per table, and the tombstones that make no row."""

    rows: dict[str, int]
    skipped_tombstones: int = 0


def upsert_records(conn: Connection, spec: TableRows, records: Iterable[DecodedRecord],
                   loaded_at: datetime | None = None) -> Loaded:
    """Upsert the rows of ``records`` (decoded records of ``spec.topic``, in offset order) in ``conn``'s transaction.

    ``loaded_at`` (default: now) is every row's ``loaded_at``. Database errors are SQLAlchemy's, as
    ``upsert_rows`` raises them (``sink_errors`` classifies them).
    """
    now = utc_now() if loaded_at is None else loaded_at
    make_row = spec.row
    marks_deleted = spec.tombstones == MARK_DELETED
    key_at = spec.columns.index(spec.key_columns[0])
    rows: list[tuple[Any, ...]] = []
    lines: list[tuple[Any, ...]] = []
    make_lines = None if spec.lines is None else spec.lines.rows
    gone: dict[str, tuple[Any, ...]] = {}  # MARK_DELETED: record key → (key, True, loaded_at)
    latest: dict[Any, tuple[Any, ...]] = {}  # MARK_DELETED: key → its last live row in the batch
    skipped = 0
    for record in records:
        envelope = record.data
        if envelope is None:
            if marks_deleted:
                name = record.key_str or ""
                latest.pop(name, None)
                gone[name] = (record.key_str, True, now)
            elif spec.tombstones == SKIP:
                skipped += 1
            else:
                raise ValueError(f"{spec.topic}: a tombstone on a topic that is not compacted")
            continue
        row = make_row(envelope, now)
        if marks_deleted:
            name = row[key_at]
            gone.pop(name, None)
            latest[name] = row
        else:
            rows.append(row)
        if make_lines is not None:
            lines.extend(make_lines(envelope))
    table = metadata.tables[spec.table]
    update = () if spec.keep_first else None
    if marks_deleted:
        sent = upsert_rows(conn, table, spec.columns, list(latest.values()), spec.key_columns, update)
        sent += upsert_rows(conn, table, (spec.key_columns[0], "deleted", "loaded_at"), list(gone.values()),
                            spec.key_columns, update)
    else:
        sent = upsert_rows(conn, table, spec.columns, rows, spec.key_columns, update)
    written = {spec.table: sent}
    if spec.lines is not None:
        child = spec.lines
        written[child.table] = upsert_rows(conn, metadata.tables[child.table], child.columns, lines,
                                           child.key_columns, () if child.keep_first else None)
    return Loaded(written, skipped)


# The declarations ---------------------------------------------------------------------------------------
# Rows are tuples in the order of their ``columns``. int(): JSON Schema's integer includes 1.0, which an
# INTEGER column refuses on PostgreSQL.

_EVENT_COLUMNS = ("event_id", "event_type", "event_time", "loaded_at")


def _click(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["session_id"],
            p["customer_id"], p["page"], p.get("sku"), p.get("category"), p["country"], p["device"])


def _order(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (p["order_id"], env["event_id"], p["customer_id"], p["session_id"], p["country"], p["currency"],
            p["amount"], sum(int(i["quantity"]) for i in p["items"]), parse_time(env["event_time"]), now)


def _order_items(env: Envelope) -> list[tuple[Any, ...]]:
    p = env["payload"]
    order_id, event_id = p["order_id"], env["event_id"]
    return [(order_id, line_no, event_id, item["sku"], item["category"], int(item["quantity"]), item["unit_price"])
            for line_no, item in enumerate(p["items"], start=1)]


def _payment(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["payment_id"],
            p["order_id"], p["amount"], p["currency"], p["status"], p["method"])


def _shipment(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["shipment_id"],
            p["order_id"], p["status"], p["carrier"])


def _alert(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (p["alert_id"], env["event_id"], p["kind"], p["severity"], p.get("order_id"), p.get("customer_id"),
            p["details"], parse_time(env["event_time"]), "open", now)


def _customer(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (p["customer_id"], p["name"], p["email"], p["country"], p["segment"], parse_time(p["updated_at"]),
            env["event_id"], False, now)


def _stock_level(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (p["sku"], p["category"], int(p["quantity"]), p["unit_price"], p["location"],
            parse_time(p["updated_at"]), env["event_id"], False, now)


def _fx_rate(env: Envelope, now: datetime) -> tuple[Any, ...]:
    p = env["payload"]
    return (p["currency"], date.fromisoformat(p["rate_date"]), p["rate_per_eur"], env["event_id"], now)


_DUPLICATES = "duplicate(s) by {} collapsed"
ROWS: dict[str, TableRows] = {spec.topic: spec for spec in (
    TableRows("clickstream", "clicks", ("event_id",),
              (*_EVENT_COLUMNS, "session_id", "customer_id", "page", "sku", "category", "country", "device"),
              _click, keep_first=True, collapse=_DUPLICATES.format("event_id")),
    TableRows("orders", "orders", ("order_id",),
              ("order_id", "event_id", "customer_id", "session_id", "country", "currency", "amount", "item_count",
               "event_time", "loaded_at"),
              _order, keep_first=False, collapse="version(s) of the same order_id collapsed",
              lines=LineRows("order_items", ("order_id", "line_no"),
                             ("order_id", "line_no", "event_id", "sku", "category", "quantity", "unit_price"),
                             _order_items)),
    TableRows("payments", "payments", ("event_id",),
              (*_EVENT_COLUMNS, "payment_id", "order_id", "amount", "currency", "status", "method"),
              _payment, keep_first=True, collapse=_DUPLICATES.format("event_id")),
    TableRows("customers", "customers", ("customer_id",),
              ("customer_id", "name", "email", "country", "segment", "updated_at", "event_id", "deleted", "loaded_at"),
              _customer, keep_first=False, tombstones=MARK_DELETED,
              collapse="update(s) of the same customer_id collapsed (last version wins)"),
    TableRows("inventory", "inventory", ("sku",),
              ("sku", "category", "quantity", "unit_price", "location", "updated_at", "event_id", "deleted",
               "loaded_at"),
              _stock_level, keep_first=False, tombstones=MARK_DELETED,
              collapse="update(s) of the same sku collapsed (last version wins)"),
    TableRows("fx-rates", "fx_rates", ("currency", "rate_date"),
              ("currency", "rate_date", "rate_per_eur", "event_id", "loaded_at"),
              _fx_rate, keep_first=False, tombstones=SKIP,
              collapse="re-published rate(s) of the same currency and day collapsed"),
    TableRows("shipments", "shipments", ("event_id",),
              (*_EVENT_COLUMNS, "shipment_id", "order_id", "status", "carrier"),
              _shipment, keep_first=True, collapse=_DUPLICATES.format("event_id")),
    TableRows("alerts", "alerts", ("alert_id",),
              ("alert_id", "event_id", "kind", "severity", "order_id", "customer_id", "details", "event_time",
               "status", "loaded_at"),
              _alert, keep_first=True, collapse=_DUPLICATES.format("alert_id")),
)}
