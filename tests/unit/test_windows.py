"""Tumbling one-minute windows with allowed lateness (sales-aggregator's pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mbyn.consumers.sales_aggregator import OrderFacts, fold_orders, revenue_by_category, window_start

P0 = ("t-orders", 0)
P1 = ("t-orders", 1)
LATENESS = timedelta(minutes=2)


def at(hms: str) -> datetime:
    return datetime.fromisoformat(f"2026-11-25T{hms}+00:00")


def fact(when: str, partition: tuple[str, int] = P0, country: str = "DE", **revenue: float) -> OrderFacts:
    return OrderFacts(partition, f"O-{when}", at(when), country, revenue or {"books": 10.0})


def test_window_start_floors_to_the_minute_in_utc():
    assert window_start(at("10:00:59.999")) == at("10:00:00")
    local = datetime(2026, 11, 25, 11, 5, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    assert window_start(local) == datetime(2026, 11, 25, 11, 5, tzinfo=UTC)


def test_orders_land_in_their_minute_by_country_and_category():
    folded = fold_orders([fact("10:00:10", books=10.0), fact("10:00:50", books=5.0, toys=2.5),
                          fact("10:01:00", country="FR", books=1.0)], {}, LATENESS)
    assert {k: (round(d.revenue_eur, 2), d.orders, d.late_records) for k, d in folded.deltas.items()} == {
        (at("10:00:00"), "DE", "books"): (15.0, 2, 0),
        (at("10:00:00"), "DE", "toys"): (2.5, 1, 0),
        (at("10:01:00"), "FR", "books"): (1.0, 1, 0),
    }
    assert folded.late == [] and folded.on_time == 3
    assert folded.max_event_times == {P0: at("10:01:00")}


def test_a_record_is_late_exactly_when_its_window_ended_before_the_watermark():
    # watermark after 10:04:00 is 10:02:00: the windows ending at or before 10:02 are closed.
    folded = fold_orders([fact("10:04:00"), fact("10:01:59"), fact("10:02:00"), fact("10:00:30")], {}, LATENESS)
    assert [o.order_id for o in folded.late] == ["O-10:01:59", "O-10:00:30"]
    assert folded.deltas[(at("10:01:00"), "DE", "books")].late_records == 1
    assert folded.deltas[(at("10:01:00"), "DE", "books")].orders == 0
    assert folded.deltas[(at("10:02:00"), "DE", "books")].orders == 1, "the window ending 10:03 is still open"
    assert folded.max_event_times == {P0: at("10:04:00")}, "late records never move the watermark back"


def test_watermarks_are_per_partition_and_start_from_the_stored_state():
    stored = {P0: at("10:10:00")}
    folded = fold_orders([fact("10:05:00", P0), fact("10:05:00", P1)], stored, LATENESS)
    assert [o.partition for o in folded.late] == [P0], "partition 1 has seen nothing yet"
    assert stored == {P0: at("10:10:00")}, "the input state is not modified"
    assert folded.max_event_times == {P1: at("10:05:00")}


def test_zero_lateness_closes_a_window_when_a_record_of_the_next_minute_arrives():
    folded = fold_orders([fact("10:00:10"), fact("10:01:00"), fact("10:00:20")], {}, timedelta(0))
    assert [o.order_id for o in folded.late] == ["O-10:00:20"]


def test_revenue_by_category_converts_each_item_to_eur():
    payload = {"items": [{"category": "books", "unit_price": 10.0, "quantity": 2},
                         {"category": "toys", "unit_price": 5.0, "quantity": 1},
                         {"category": "books", "unit_price": 1.0, "quantity": 4}]}
    assert revenue_by_category(payload, 2.0) == pytest.approx({"books": 12.0, "toys": 2.5})
