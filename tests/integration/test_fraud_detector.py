"""fraud-detector against the real broker: hand-made orders and payments, each rule fires exactly when it should."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mbyn.consumers.fraud_detector import FraudDetector, FraudRules, alert_id
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.consumer import run_consumer
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def ts(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def send_order(p: TopicProducer, oid: str, amount: float, when: float, customer: str = "C000001") -> None:
    assert p.send("orders", dict(make_envelope("order_placed", {
        "order_id": oid, "customer_id": customer, "session_id": "s", "country": "DE", "currency": "EUR",
        "amount": amount, "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": amount}]},
        "test", event_time=ts(when))), oid)


def send_payment(p: TopicProducer, pid: str, oid: str, amount: float, when: float) -> None:
    assert p.send("payments", dict(make_envelope("payment_authorized", {
        "payment_id": pid, "order_id": oid, "amount": amount, "currency": "EUR", "status": "authorized",
        "method": "card"}, "test", event_time=ts(when))), oid)


def alerts(settings: Settings) -> list[dict[str, Any]]:
    return [r.json() for r in read_all(settings.bootstrap(), settings.topic_prefix + "alerts")]


def detector(settings: Settings) -> FraudDetector:
    return FraudDetector(settings, FraudRules(timedelta(seconds=60), velocity_threshold=3))


def test_each_rule_fires_exactly_when_it_should_and_a_restart_does_not_double_alert(topics):
    p = TopicProducer("test", topics)
    send_order(p, "O-ok", 100.0, 0, customer="C000001")
    send_payment(p, "P-ok", "O-ok", 100.0, 1)
    send_order(p, "O-cent", 50.0, 2, customer="C000002")
    send_payment(p, "P-cent", "O-cent", 49.995, 3)
    send_order(p, "O-bad", 45.0, 4, customer="C000003")
    send_payment(p, "P-bad", "O-bad", 40.0, 5)
    send_payment(p, "P-first", "O-after", 10.0, 6)  # payment first, order 30 s later with another amount
    send_order(p, "O-after", 12.0, 36, customer="C000004")
    send_payment(p, "P-lone", "O-never", 7.0, 8)
    window = 120 - (BASE.second % 60)  # the start of a one-minute window, 2 minutes in
    for n in range(5):  # 5 orders in one window: over the threshold of 3 on the 4th
        send_order(p, f"O-fast-{n}", 1.0, window + n * 10, customer="C000777")
        send_payment(p, f"P-fast-{n}", f"O-fast-{n}", 1.0, window + n * 10)
    for n, when in enumerate([60, 70, 120, 130]):  # 2 + 2 in two windows: never over 3
        send_order(p, f"O-slow-{n}", 1.0, window + when, customer="C000888")
        send_payment(p, f"P-slow-{n}", f"O-slow-{n}", 1.0, window + when)
    p.flush_or_raise()

    first = run_consumer(detector(topics), topics, idle_exit=4)
    assert first["dead_lettered"] == 0
    got = alerts(topics)
    # velocity: which order crosses the threshold depends on poll order across partitions; the
    # alert (and its id) belongs to the customer and window
    by_kind = sorted((a["payload"]["kind"], a["payload"].get("order_id") if a["payload"]["kind"] != "order_velocity"
                      else a["payload"]["customer_id"]) for a in got)
    assert by_kind == [("amount_mismatch", "O-after"), ("amount_mismatch", "O-bad"),
                       ("order_velocity", "C000777"), ("payment_without_order", "O-never")]
    ids = {a["payload"]["alert_id"] for a in got}
    assert alert_id("amount_mismatch", "P-bad") in ids and alert_id("payment_without_order", "P-lone") in ids
    for a in got:
        assert a["event_type"] == "fraud_alert" and a["source"] == "fraud-detector"

    # A restart re-reads only what the join state still needed; whatever it re-raises has the same id.
    second = run_consumer(detector(topics), topics, idle_exit=3)
    again = alerts(topics)
    assert {a["payload"]["alert_id"] for a in again} == ids, "no new alert ids after a restart"
    assert second["consumed"] < first["consumed"]
