"""warehouse-loader: the raw topics → warehouse tables, exactly once (group ``<prefix>warehouse-loader``).

Reads clickstream, orders, payments, customers, inventory, fx-rates, shipments and alerts; each batch's
rows and the next offsets of its partitions are written in one database transaction (``kafka_offsets``),
and a (re)started copy seeks to those offsets — see ``WarehouseConsumer``. Rows are upserted on their
business keys, so a record seen twice (a producer re-send with the same event id) is loaded once:

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

Records the codec refuses (not JSON, schema violation, oversize, null key, unknown schema_version) and rows
the database refuses (``sink_rejected``) go to dead-letters through the runtime. Run several copies:
``mbyn consume warehouse-loader`` (each copy gets a share of the partitions; SQLite serialises the writes,
PostgreSQL runs them side by side).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from mbyn.consumers.warehouse_sink import WarehouseConsumer
from mbyn.kafka.consumer import Batch, Record, add_consumer_arguments, run_consumer_cli
from mbyn.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger("mbyn.consumer")

NAME = "warehouse-loader"


class WarehouseLoader(WarehouseConsumer):
    """Raw catalog topics → facts and dimensions; see the module docstring for the mapping."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = ("clickstream", "orders", "payments", "customers", "inventory", "fx-rates",
                                         "shipments", "alerts")
    batch_size: int = 2000
    # Hand over what has arrived after 50 ms: a record's wait for its batch stays small at any rate, while
    # under load the batches still fill to batch_size (``--max-wait-ms``). End-to-end p99 is judged at 5k msg/s.
    batch_timeout: float = 0.05

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.rows_by_table: dict[str, int] = {}
        self.skipped_tombstones = 0

    def write(self, conn: Connection, batch: Batch) -> int:
        written = 0
        for topic, records in batch.by_topic().items():
            loader = _LOADERS.get(topic)
            if loader is None:
                raise AssertionError(f"{NAME} has no loader for topic {topic!r}")
            for table, count in loader(self, conn, records).items():
                self.rows_by_table[table] = self.rows_by_table.get(table, 0) + count
                written += count
        return written

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rows_by_table": dict(self.rows_by_table),
                "skipped_tombstones": self.skipped_tombstones}


# Per-topic loaders: records (decoded, validated envelopes) → row tuples → bulk upserts. -------------------
# Rows are tuples in the order of the column lists below (no per-row dicts on the hot path).

_EVENT_COLUMNS = ("event_id", "event_type", "event_time", "loaded_at")
CLICK_COLUMNS = (*_EVENT_COLUMNS, "session_id", "customer_id", "page", "sku", "category", "country", "device")
ORDER_COLUMNS = ("order_id", "event_id", "customer_id", "session_id", "country", "currency", "amount", "item_count",
                 "event_time", "loaded_at")
ORDER_ITEM_COLUMNS = ("order_id", "line_no", "event_id", "sku", "category", "quantity", "unit_price")
PAYMENT_COLUMNS = (*_EVENT_COLUMNS, "payment_id", "order_id", "amount", "currency", "status", "method")
SHIPMENT_COLUMNS = (*_EVENT_COLUMNS, "shipment_id", "order_id", "status", "carrier")
ALERT_COLUMNS = ("alert_id", "event_id", "kind", "severity", "order_id", "customer_id", "details", "event_time",
                 "status", "loaded_at")


def _load_clicks(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert_rows, utc_now

    now = utc_now()
    rows = []
    for r in records:
        env = r.data
        p = env["payload"]
        rows.append((env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["session_id"],
                     p["customer_id"], p["page"], p.get("sku"), p.get("category"), p["country"], p["device"]))
    return {"clicks": upsert_rows(conn, schema.clicks, CLICK_COLUMNS, rows, ["event_id"], update=[])}


def _load_orders(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert_rows, utc_now

    now = utc_now()
    orders: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    for r in records:
        env = r.data
        p = env["payload"]
        order_id, event_id = p["order_id"], env["event_id"]
        # int(): JSON Schema's integer includes 1.0, which an INTEGER column refuses on PostgreSQL.
        orders.append((order_id, event_id, p["customer_id"], p["session_id"], p["country"], p["currency"],
                       p["amount"], sum(int(i["quantity"]) for i in p["items"]), parse_time(env["event_time"]), now))
        for line_no, item in enumerate(p["items"], start=1):
            items.append((order_id, line_no, event_id, item["sku"], item["category"], int(item["quantity"]),
                          item["unit_price"]))
    return {"orders": upsert_rows(conn, schema.orders, ORDER_COLUMNS, orders, ["order_id"]),
            "order_items": upsert_rows(conn, schema.order_items, ORDER_ITEM_COLUMNS, items, ["order_id", "line_no"])}


def _load_payments(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert_rows, utc_now

    now = utc_now()
    rows = []
    for r in records:
        env = r.data
        p = env["payload"]
        rows.append((env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["payment_id"],
                     p["order_id"], p["amount"], p["currency"], p["status"], p["method"]))
    return {"payments": upsert_rows(conn, schema.payments, PAYMENT_COLUMNS, rows, ["event_id"], update=[])}


def _load_shipments(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert_rows, utc_now

    now = utc_now()
    rows = []
    for r in records:
        env = r.data
        p = env["payload"]
        rows.append((env["event_id"], env["event_type"], parse_time(env["event_time"]), now, p["shipment_id"],
                     p["order_id"], p["status"], p["carrier"]))
    return {"shipments": upsert_rows(conn, schema.shipments, SHIPMENT_COLUMNS, rows, ["event_id"], update=[])}


def _load_alerts(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert_rows, utc_now

    now = utc_now()
    rows = []
    for r in records:
        env = r.data
        p = env["payload"]
        rows.append((p["alert_id"], env["event_id"], p["kind"], p["severity"], p.get("order_id"),
                     p.get("customer_id"), p["details"], parse_time(env["event_time"]), "open", now))
    return {"alerts": upsert_rows(conn, schema.alerts, ALERT_COLUMNS, rows, ["alert_id"], update=[])}


def _load_dimension(table_name: str, key: str, to_row: Callable[[dict[str, Any]], dict[str, Any]],
                    ) -> Callable[[WarehouseLoader, Any, list[Record]], dict[str, int]]:
    """A loader for a compacted topic read as a table: last version per key wins, a tombstone sets deleted."""

    def load(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
        from mbyn.warehouse import parse_time, schema, upsert, utc_now

        table = schema.metadata.tables[table_name]
        now = utc_now()
        latest: dict[str, dict[str, Any]] = {}
        for r in records:  # poll order = offset order per key: the last one is the current state
            if r.data is None:
                latest[r.key_str or ""] = {key: r.key_str, "deleted": True, "loaded_at": now}
            else:
                p = r.data["payload"]
                latest[p[key]] = {key: p[key], **to_row(p), "updated_at": parse_time(p["updated_at"]),
                                  "event_id": r.data["event_id"], "deleted": False, "loaded_at": now}
        live = [row for row in latest.values() if not row["deleted"]]
        gone = [row for row in latest.values() if row["deleted"]]
        return {table_name: upsert(conn, table, live, [key]) + upsert(conn, table, gone, [key])}

    return load


def _load_fx(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import schema, upsert, utc_now

    now = utc_now()
    rows = []
    for r in records:
        if r.data is None:  # a currency withdrawn: the history of rates stays valid
            self.skipped_tombstones += 1
            continue
        p = r.data["payload"]
        rows.append({"currency": p["currency"], "rate_date": date.fromisoformat(p["rate_date"]),
                     "rate_per_eur": p["rate_per_eur"], "event_id": r.data["event_id"], "loaded_at": now})
    return {"fx_rates": upsert(conn, schema.fx_rates, rows, ["currency", "rate_date"])}


_LOADERS: dict[str, Callable[[WarehouseLoader, Any, list[Record]], dict[str, int]]] = {
    "clickstream": _load_clicks,
    "orders": _load_orders,
    "payments": _load_payments,
    "shipments": _load_shipments,
    "alerts": _load_alerts,
    "customers": _load_dimension("customers", "customer_id", lambda p: {
        "name": p["name"], "email": p["email"], "country": p["country"], "segment": p["segment"]}),
    "inventory": _load_dimension("inventory", "sku", lambda p: {
        "category": p["category"], "quantity": int(p["quantity"]), "unit_price": p["unit_price"],
        "location": p["location"]}),
    "fx-rates": _load_fx,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_consumer_arguments(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_consumer_cli(lambda: WarehouseLoader(settings), settings, args)
