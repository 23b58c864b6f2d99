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

Poison records (not JSON, schema violation, oversize, null key, unknown schema_version) go to
dead-letters through the runtime. Run several copies: ``mbyn consume warehouse-loader`` (each copy gets a
share of the partitions; SQLite serialises the writes, PostgreSQL runs them side by side).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from mbyn.consumers.base import WarehouseConsumer
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


# Per-topic loaders: records (decoded, validated envelopes) → rows → upserts. ----------------------------

def _base(record: Record, now: Any) -> dict[str, Any]:
    from mbyn.warehouse import parse_time

    env = record.data
    return {"event_id": env["event_id"], "event_type": env["event_type"], "event_time": parse_time(env["event_time"]),
            "loaded_at": now}


def _load_clicks(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import schema, upsert, utc_now

    now = utc_now()
    rows = []
    for r in records:
        p = r.data["payload"]
        rows.append({**_base(r, now), "session_id": p["session_id"], "customer_id": p["customer_id"],
                     "page": p["page"], "sku": p.get("sku"), "category": p.get("category"), "country": p["country"],
                     "device": p["device"]})
    return {"clicks": upsert(conn, schema.clicks, rows, ["event_id"], update=[])}


def _load_orders(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert, utc_now

    now = utc_now()
    orders: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for r in records:
        env, p = r.data, r.data["payload"]
        orders.append({"order_id": p["order_id"], "event_id": env["event_id"], "customer_id": p["customer_id"],
                       "session_id": p["session_id"], "country": p["country"], "currency": p["currency"],
                       "amount": p["amount"], "item_count": sum(i["quantity"] for i in p["items"]),
                       "event_time": parse_time(env["event_time"]), "loaded_at": now})
        for line_no, item in enumerate(p["items"], start=1):
            items.append({"order_id": p["order_id"], "line_no": line_no, "event_id": env["event_id"],
                          "sku": item["sku"], "category": item["category"], "quantity": item["quantity"],
                          "unit_price": item["unit_price"]})
    return {"orders": upsert(conn, schema.orders, orders, ["order_id"]),
            "order_items": upsert(conn, schema.order_items, items, ["order_id", "line_no"])}


def _load_payments(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import schema, upsert, utc_now

    now = utc_now()
    rows = []
    for r in records:
        p = r.data["payload"]
        rows.append({**_base(r, now), "payment_id": p["payment_id"], "order_id": p["order_id"],
                     "amount": p["amount"], "currency": p["currency"], "status": p["status"], "method": p["method"]})
    return {"payments": upsert(conn, schema.payments, rows, ["event_id"], update=[])}


def _load_shipments(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import schema, upsert, utc_now

    now = utc_now()
    rows = []
    for r in records:
        p = r.data["payload"]
        rows.append({**_base(r, now), "shipment_id": p["shipment_id"], "order_id": p["order_id"],
                     "status": p["status"], "carrier": p["carrier"]})
    return {"shipments": upsert(conn, schema.shipments, rows, ["event_id"], update=[])}


def _load_alerts(self: WarehouseLoader, conn: Connection, records: list[Record]) -> dict[str, int]:
    from mbyn.warehouse import parse_time, schema, upsert, utc_now

    now = utc_now()
    rows = []
    for r in records:
        env, p = r.data, r.data["payload"]
        rows.append({"alert_id": p["alert_id"], "event_id": env["event_id"], "kind": p["kind"],
                     "severity": p["severity"], "order_id": p.get("order_id"), "customer_id": p.get("customer_id"),
                     "details": p["details"], "event_time": parse_time(env["event_time"]), "status": "open",
                     "loaded_at": now})
    return {"alerts": upsert(conn, schema.alerts, rows, ["alert_id"], update=[])}


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
        "category": p["category"], "quantity": p["quantity"], "unit_price": p["unit_price"],
        "location": p["location"]}),
    "fx-rates": _load_fx,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_consumer_arguments(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_consumer_cli(lambda: WarehouseLoader(settings), settings, args)
