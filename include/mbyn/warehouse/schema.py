"""The whole warehouse schema in one place (SQLAlchemy Core): facts, dimensions, aggregates, bookkeeping.

Facts keep the envelope's ``event_id`` (unique) so exactly-once can be checked by counting event ids;
``event_time`` is the envelope's time as a UTC timestamp and ``loaded_at`` when the row was written.
Money is ``NUMERIC(14, 4)`` read back as float. Column types are portable: SQLite (default) and
PostgreSQL run the same DDL. Every consumer that writes the warehouse imports its tables from here.

``partition`` and ``offset`` are SQL keywords in some dialects; SQLAlchemy quotes them, and in hand-written
SQL write ``"offset"``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = String(64)
EVENT_ID = String(36)


def _money() -> Numeric:  # type: ignore[type-arg]
    return Numeric(14, 4, asdecimal=False)


def _total() -> Numeric:  # type: ignore[type-arg]
    return Numeric(28, 4, asdecimal=False)


def _ts() -> DateTime:
    return DateTime(timezone=True)


# Facts ---------------------------------------------------------------------------------------------

orders = Table(
    "orders", metadata,
    Column("order_id", ID, primary_key=True),
    Column("event_id", EVENT_ID, nullable=False, unique=True),
    Column("customer_id", ID, nullable=False),
    Column("session_id", ID),
    Column("country", String(2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", _money(), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("event_time", _ts(), nullable=False),
    Column("loaded_at", _ts(), nullable=False),
    Index("ix_orders_customer", "customer_id"),
    Index("ix_orders_event_time", "event_time"),
)

order_items = Table(
    "order_items", metadata,
    Column("order_id", ID, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("event_id", EVENT_ID, nullable=False),
    Column("sku", ID, nullable=False),
    Column("category", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", _money(), nullable=False),
    Index("ix_order_items_sku", "sku"),
)

payments = Table(
    "payments", metadata,
    Column("event_id", EVENT_ID, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("payment_id", ID, nullable=False),
    Column("order_id", ID, nullable=False),
    Column("amount", _money(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("method", String(32), nullable=False),
    Column("event_time", _ts(), nullable=False),
    Column("loaded_at", _ts(), nullable=False),
    Index("ix_payments_order", "order_id"),
)

clicks = Table(
    "clicks", metadata,
    Column("event_id", EVENT_ID, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("session_id", ID, nullable=False),
    Column("customer_id", ID, nullable=False),
    Column("page", String(200), nullable=False),
    Column("sku", ID),
    Column("category", String(32)),
    Column("country", String(2), nullable=False),
    Column("device", String(16), nullable=False),
    Column("event_time", _ts(), nullable=False),
    Column("loaded_at", _ts(), nullable=False),
    Index("ix_clicks_session", "session_id"),
    Index("ix_clicks_event_time", "event_time"),
)

shipments = Table(
    "shipments", metadata,
    Column("event_id", EVENT_ID, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("shipment_id", ID, nullable=False),
    Column("order_id", ID, nullable=False),
    Column("status", String(16), nullable=False),
    Column("carrier", String(64), nullable=False),
    Column("event_time", _ts(), nullable=False),
    Column("loaded_at", _ts(), nullable=False),
    Index("ix_shipments_shipment", "shipment_id"),
    Index("ix_shipments_order", "order_id"),
)

# Dimensions ----------------------------------------------------------------------------------------

customers = Table(
    "customers", metadata,
    Column("customer_id", ID, primary_key=True),
    Column("event_id", EVENT_ID),  # of the last change applied
    Column("name", String(200)),
    Column("email", String(200)),
    Column("country", String(2)),
    Column("segment", String(16)),
    Column("updated_at", _ts()),
    Column("deleted", Boolean, nullable=False, default=False),  # a tombstone on the customers topic
    Column("loaded_at", _ts(), nullable=False),
)

fx_rates = Table(
    "fx_rates", metadata,
    Column("currency", String(3), primary_key=True),
    Column("rate_date", Date, primary_key=True),
    Column("rate_per_eur", Float, nullable=False),  # units of currency per 1 EUR (ECB convention)
    Column("event_id", EVENT_ID),
    Column("loaded_at", _ts(), nullable=False),
)

inventory = Table(
    "inventory", metadata,
    Column("sku", ID, primary_key=True),
    Column("event_id", EVENT_ID),
    Column("category", String(32)),
    Column("quantity", BigInteger),
    Column("unit_price", _money()),
    Column("location", String(64)),
    Column("updated_at", _ts()),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("loaded_at", _ts(), nullable=False),
)

# Aggregates and monitoring -------------------------------------------------------------------------

sales_by_minute = Table(
    "sales_by_minute", metadata,
    Column("window_start", _ts(), primary_key=True),
    Column("country", String(2), primary_key=True),
    Column("category", String(32), primary_key=True),
    # Sums of many orders' lines (each up to 50 × 100 × 1e6 / the smallest rate): wider than one amount.
    Column("revenue_eur", _total(), nullable=False),
    Column("orders", Integer, nullable=False),
    Column("avg_basket_eur", _total(), nullable=False),
    Column("late_records", Integer, nullable=False, default=0),
    Column("updated_at", _ts(), nullable=False),
)

lag_samples = Table(
    "lag_samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sampled_at", _ts(), nullable=False),
    Column("consumer_group", String(255), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
    Column("committed_offset", BigInteger),  # NULL: the group has not committed this partition
    Column("lag", BigInteger, nullable=False),
    # Added later (NULL in older rows; ADDED_COLUMNS): seconds the next unread record has waited (0: none), records
    # of ``lag`` the group has read but holds by design (a join window), the group's live members.
    Column("lag_seconds", Float),
    Column("held", BigInteger),
    Column("members", Integer),
    Index("ix_lag_samples_group_time", "consumer_group", "sampled_at"),
)

stream_watermarks = Table(  # per-partition event-time progress of windowed consumers (sales-aggregator)
    "stream_watermarks", metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("max_event_time", _ts(), nullable=False),  # stored with the offsets, in the same transaction
    Column("updated_at", _ts(), nullable=False),
)

alerts = Table(
    "alerts", metadata,
    Column("alert_id", ID, primary_key=True),
    Column("event_id", EVENT_ID, nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("order_id", ID),
    Column("customer_id", ID),
    Column("details", Text, nullable=False),
    Column("event_time", _ts(), nullable=False),
    Column("status", String(16), nullable=False, default="open"),  # open | acknowledged | resolved
    Column("loaded_at", _ts(), nullable=False),
)

# Bookkeeping ---------------------------------------------------------------------------------------

quarantine = Table(
    "quarantine", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255)),  # physical topic the record came from (NULL: not from the runtime)
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("key", LargeBinary),
    Column("value", LargeBinary),
    Column("value_text", Text),  # the value as text when it is UTF-8
    Column("headers", Text),  # the original headers, JSON [[name, base64], ...]
    Column("reason", String(64), nullable=False),
    Column("error_class", String(128)),
    Column("error_message", Text),
    Column("error_traceback", Text),  # added in 0.3: ``ADDED_COLUMNS`` brings older warehouses up to date
    Column("consumer_group", String(255)),
    Column("original_timestamp", _ts()),
    Column("quarantined_at", _ts(), nullable=False),
    Column("replayed_at", _ts()),
    UniqueConstraint("consumer_group", "topic", "partition", "offset", name="uq_quarantine_coordinates"),
    Index("ix_quarantine_topic_reason", "topic", "reason"),
)

kafka_offsets = Table(
    "kafka_offsets", metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", _ts(), nullable=False),
)


#: Columns added to existing tables after their first release: ``init_schema`` adds what a warehouse
#: created by an older version lacks (``create_all`` only creates missing tables).
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("quarantine", "error_traceback"), ("lag_samples", "lag_seconds"),
                                              ("lag_samples", "held"), ("lag_samples", "members"))
#: Numeric columns widened after their first release: ``init_schema`` widens them on PostgreSQL (SQLite does
#: not enforce a precision).
WIDENED_COLUMNS: tuple[tuple[str, str], ...] = (("sales_by_minute", "revenue_eur"),
                                                ("sales_by_minute", "avg_basket_eur"))
