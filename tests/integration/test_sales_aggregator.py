"""sales-aggregator against the real broker and warehouse: windows, lateness, exactly-once across restarts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer

from mbyn.consumers.sales_aggregator import SalesAggregator
from mbyn.contracts.envelope import encode, make_envelope
from mbyn.kafka.consumer import run_consumer
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration


warehouse = warehouse_fixture()


def order(n: int, when: str, country: str = "DE", currency: str = "EUR",
          items: list[tuple[str, float, int]] | None = None) -> dict[str, Any]:
    lines = [{"sku": "SKU-00001", "category": c, "quantity": q, "unit_price": price}
             for c, price, q in (items or [("books", 10.0, 1)])]
    return dict(make_envelope("order_placed", {
        "order_id": f"O-{n}", "customer_id": "C000001", "session_id": "s", "country": country,
        "currency": currency, "amount": round(sum(i["unit_price"] * i["quantity"] for i in lines), 2),
        "items": lines}, "test", event_time=f"2026-11-25T{when}Z"))


def send_to_partition(settings: Settings, orders: list[dict[str, Any]], partition: int = 0) -> None:
    """Raw sends to one partition, so the test controls the order in which event times are seen."""
    producer = Producer({"bootstrap.servers": settings.bootstrap()})
    for o in orders:
        producer.produce(settings.topic_prefix + "orders", encode(o), o["payload"]["order_id"].encode(),
                         partition=partition)
    assert producer.flush(30) == 0


def rows(settings: Settings) -> dict[tuple[str, str, str], tuple[float, int, float, int]]:
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text("SELECT window_start, country, category, revenue_eur, orders, "
                                          "avg_basket_eur, late_records FROM sales_by_minute")).all()
    finally:
        engine.dispose()
    out = {}
    for ws, country, category, revenue, n, avg, late in result:
        start = ws if isinstance(ws, datetime) else datetime.fromisoformat(str(ws))
        out[(start.strftime("%H:%M"), country, category)] = (round(float(revenue), 2), int(n), round(float(avg), 2),
                                                             int(late))
    return out


def test_windows_lateness_and_restart_count_every_order_once(warehouse):
    fx = TopicProducer("test", warehouse)
    fx.send("fx-rates", dict(make_envelope("fx_rate", {"currency": "USD", "rate_date": "2026-11-24",
                                                        "rate_per_eur": 2.0}, "test")), "USD")
    fx.flush_or_raise()
    send_to_partition(warehouse, [
        order(1, "10:00:05"),
        order(2, "10:00:40", items=[("books", 20.0, 1), ("toys", 5.0, 2)]),
        order(3, "10:00:59", country="US", currency="USD", items=[("books", 8.0, 1)]),
        order(4, "10:01:30"),
        order(5, "10:04:00"),  # watermark of partition 0 → 10:02:00
        order(6, "10:01:10"),  # window 10:01 ended at 10:02 <= watermark: late
        order(7, "10:02:30"),  # window 10:02 ends 10:03 > watermark: on time
    ])
    first = run_consumer(SalesAggregator(warehouse, lateness_s=120), warehouse, idle_exit=3)
    assert first["dead_lettered"] == 0 and first["late_records"] == 1 and first["orders"] == 6
    expected = {
        ("10:00", "DE", "books"): (30.0, 2, 15.0, 0),
        ("10:00", "DE", "toys"): (10.0, 1, 10.0, 0),
        ("10:00", "US", "books"): (4.0, 1, 4.0, 0),
        ("10:01", "DE", "books"): (10.0, 1, 10.0, 1),
        ("10:02", "DE", "books"): (10.0, 1, 10.0, 0),
        ("10:04", "DE", "books"): (10.0, 1, 10.0, 0),
    }
    assert rows(warehouse) == expected

    again = run_consumer(SalesAggregator(warehouse, lateness_s=120), warehouse, idle_exit=2)
    assert again["consumed"] == 0, "resumes from the offsets stored with the windows"
    assert rows(warehouse) == expected, "nothing counted twice"

    # A new copy restores the partition's watermark (10:02) from the warehouse: 10:01:50 is late there,
    # 10:03:20 is on time; a fresh in-memory watermark would have accepted both.
    send_to_partition(warehouse, [order(8, "10:01:50"), order(9, "10:03:20")])
    third = run_consumer(SalesAggregator(warehouse, lateness_s=120), warehouse, idle_exit=3)
    assert (third["consumed"], third["late_records"], third["orders"]) == (2, 1, 1)
    expected[("10:01", "DE", "books")] = (10.0, 1, 10.0, 2)
    expected[("10:03", "DE", "books")] = (10.0, 1, 10.0, 0)
    assert rows(warehouse) == expected
