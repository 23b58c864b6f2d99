"""sales-aggregator against the real broker and warehouse: windows, lateness, exactly-once across restarts.

Adding is not idempotent, so exactly-once is checked on the totals: after a SIGKILL in the middle of a
batch's transaction and a restart, every window equals the sum of its input exactly; and a stale copy that
writes a batch another copy already wrote is refused (rolled back, nothing added).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer

from mbyn.consumers.contract import Batch, Record
from mbyn.consumers.runtime import run_consumer
from mbyn.consumers.sales_aggregator import SalesAggregator
from mbyn.contracts.envelope import encode, make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from mbyn.warehouse.engine import init_schema, warehouse_engine
from tests.helpers.crash import run_until_killed
from tests.helpers.kafka import read_all
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


def stored(settings: Settings) -> list[tuple[Any, ...]]:
    """The group's stored offsets and watermarks (what a rolled-back batch must not have moved)."""
    engine = sa.create_engine(settings.warehouse())
    group = {"g": settings.topic_prefix + "sales-aggregator"}
    try:
        with engine.connect() as conn:
            return [tuple(r) for sql in ("SELECT topic, partition, next_offset FROM kafka_offsets",
                                         "SELECT topic, partition, max_event_time FROM stream_watermarks")
                    for r in conn.execute(sa.text(f"{sql} WHERE consumer_group = :g ORDER BY 1, 2"), group)]
    finally:
        engine.dispose()


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


def expected_windows(orders: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[float, int, float, int]]:
    """What ``rows`` must show for EUR orders that are all on time: sums per (minute, country, category)."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for o in orders:
        minute = o["event_time"][11:16]
        for item in o["payload"]["items"]:
            total = sums.setdefault((minute, o["payload"]["country"], item["category"]), [0.0, 0])
            total[0] += item["unit_price"] * item["quantity"]
            total[1] += 1
    return {k: (round(r, 2), int(n), round(r / n, 2), 0) for k, (r, n) in sums.items()}


def steady_orders(count: int) -> list[dict[str, Any]]:
    """EUR orders one second apart (ten minutes' worth of windows), two countries and two categories."""
    start = datetime(2026, 11, 25, 10, 0, 0)
    return [order(n, (start + timedelta(seconds=n)).strftime("%H:%M:%S"), country=("DE", "FR")[n % 2],
                  items=[(("books", "toys")[n % 3 == 0], float(1 + n % 7), 1 + n % 2)]) for n in range(count)]


def test_a_sigkill_mid_transaction_and_a_restart_count_every_order_exactly_once(warehouse, tmp_path):
    sent = steady_orders(600)
    producer = TopicProducer("test", warehouse)
    for o in sent:
        assert producer.send("orders", o, o["payload"]["order_id"])
    producer.flush_or_raise()

    # Killed as it writes the watermarks of its 4th batch: the batch's window increments are in the
    # transaction, not committed. Lateness is large: every order counts, whatever the poll order.
    run_until_killed(["--kill-before-sql", "stream_watermarks", "--after", "4"],
                     ["consume", "sales-aggregator", "--batch-size", "50", "--lateness", "86400", "--instance-id", "a",
                      "--idle-exit", "10"], tmp_path / "killed.log")
    counted = sum(n for _, n, _, _ in rows(warehouse).values())
    assert 0 < counted < len(sent), f"killed mid-stream ({counted} of {len(sent)} counted)"

    again = run_consumer(SalesAggregator(warehouse, lateness_s=86400), warehouse, idle_exit=2, instance_id="a")
    assert again["dead_lettered"] == 0 and again["fenced_batches"] == 0
    assert again["orders"] == len(sent) - counted, "the restart re-reads exactly what was not committed"
    assert rows(warehouse) == expected_windows(sent), "every window is the exact sum of its orders"


def test_a_stale_copy_writing_a_batch_again_is_refused_and_rolled_back(warehouse):
    physical = warehouse.topic_prefix + "orders"
    key = (physical, 0)
    sent = steady_orders(15)
    records = [Record("orders", physical, 0, n, o["payload"]["order_id"].encode(), encode(o), [], None, data=o)
               for n, o in enumerate(sent)]

    def batch(first: int, end: int) -> Batch:
        return Batch(records[first:end], {key: end})

    def copy() -> SalesAggregator:
        c = SalesAggregator(warehouse, lateness_s=86400, engine=warehouse_engine(warehouse))
        init_schema(c.engine)
        c.fx.open()
        c.on_assign(None, [key])  # type: ignore[arg-type]  # no runtime: no Kafka consumer to seek
        return c

    # FxRates.open reads the watermarks once; wait (as read_all does) until the new topic has its leaders.
    read_all(warehouse.bootstrap(), warehouse.topic_prefix + "fx-rates")
    a, stale = copy(), copy()  # both assigned partition 0 with nothing stored yet
    try:
        a.process_batch(batch(0, 5))
        stale.process_batch(batch(0, 5))  # the same batch again: another copy stored its offsets meanwhile
        assert stale.fenced_batches == 1 and stale.orders == 0 and stale.rows_written == 0
        assert stale.offsets_to_commit(batch(0, 5)) == {}, "nothing of a refused batch is committed to Kafka"
        assert rows(warehouse) == expected_windows(sent[:5])

        a.process_batch(batch(5, 10))
        marks = stored(warehouse)
        stale.process_batch(batch(5, 10))  # refused again: its position (5) is not the stored one (10)
        assert stale.fenced_batches == 2 and stored(warehouse) == marks, "offsets and watermarks rolled back"
        assert rows(warehouse) == expected_windows(sent[:10]), "window totals rolled back"

        # Refused batches re-read the stored position: the stale copy continues from there, once.
        stale.process_batch(batch(5, 15))  # a poll from before the re-seek: records 5..9 are skipped
        assert stale.fenced_batches == 2 and stale.orders == 5
        assert rows(warehouse) == expected_windows(sent)
        assert stored(warehouse)[0] == (physical, 0, 15)
    finally:
        for c in (a, stale):
            c.close()
