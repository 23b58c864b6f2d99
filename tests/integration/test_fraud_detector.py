"""fraud-detector against the real broker: hand-made orders and payments, each rule fires exactly when it should.

The detector's sink is the ``alerts`` topic, written at least once: a copy killed after sending a batch's
alerts and before committing re-sends them. "Exactly once" therefore means one alert id per rule and
order (customer and window for velocity), none missing, none made up, and every copy of an id the same
alert — so the warehouse-loader, which keeps the first row per ``alert_id``, holds each alert once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from mbyn.consumers.fraud_detector import FraudDetector, FraudRules, alert_id
from mbyn.consumers.runtime import run_consumer
from mbyn.contracts.envelope import encode, make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from tests.helpers.crash import run_until_killed
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


def test_a_sigkill_between_alerting_and_committing_raises_every_alert_once_per_rule_and_order(topics, tmp_path):
    producer = Producer({"bootstrap.servers": topics.bootstrap()})

    def send(topic: str, partition: int, key: str, event_type: str, payload: dict[str, Any], when: float) -> None:
        # Explicit partitions: an order and its payment share one (co-partitioned), velocity orders share one.
        producer.produce(topics.topic_prefix + topic, encode(dict(make_envelope(
            event_type, payload, "test", event_time=ts(when)))), key.encode(), partition=partition)

    def order(oid: str, customer: str, amount: float, when: float, partition: int) -> None:
        send("orders", partition, oid, "order_placed", {
            "order_id": oid, "customer_id": customer, "session_id": "s", "country": "DE", "currency": "EUR",
            "amount": amount, "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1,
                                         "unit_price": amount}]}, when)

    def payment(pid: str, oid: str, amount: float, when: float, partition: int) -> None:
        send("payments", partition, oid, "payment_authorized", {
            "payment_id": pid, "order_id": oid, "amount": amount, "currency": "EUR", "status": "authorized",
            "method": "card"}, when)

    expected = set()
    for i in range(150):  # payments trail their orders by 20 orders: the join state spans batches
        order(f"O-{i}", f"C{100000 + i}", 10.0 + i, i, i % 6)
        if i >= 20:
            j = i - 20
            payment(f"P-{j}", f"O-{j}", 10.0 + j + (5.0 if j % 10 == 3 else 0.0), j + 1, j % 6)
            if j % 10 == 3:
                expected.add(("amount_mismatch", f"O-{j}"))
    for j in range(130, 150):
        payment(f"P-{j}", f"O-{j}", 10.0 + j + (5.0 if j % 10 == 3 else 0.0), j + 1, j % 6)
        if j % 10 == 3:
            expected.add(("amount_mismatch", f"O-{j}"))
    for j in range(5):
        payment(f"P-lone-{j}", f"O-never-{j}", 7.0, 50 + j, j)
        expected.add(("payment_without_order", f"O-never-{j}"))
    window = 240 - (BASE.second % 60)
    for n in range(5):  # over the threshold of 3 on the 4th order, all in one partition (a fixed order)
        order(f"O-fast-{n}", "C999999", 1.0, window + n, 0)
        payment(f"P-fast-{n}", f"O-fast-{n}", 1.0, window + n, 0)
    expected.add(("order_velocity", "C999999"))
    assert producer.flush(30) == 0

    # Killed as the runtime asks what to commit after the 3rd batch: its alerts are out, its offsets are not.
    run_until_killed(["--kill-in", "mbyn.consumers.fraud_detector:FraudDetector.offsets_to_commit", "--after", "3"],
                     ["consume", "fraud-detector", "--batch-size", "20", "--timeout", "60", "--velocity-threshold",
                      "3", "--instance-id", "a", "--idle-exit", "10"], tmp_path / "killed.log")
    restarted = run_consumer(detector(topics), topics, idle_exit=3, instance_id="a")
    assert restarted["consumed"] > 0 and restarted["dead_lettered"] == 0

    by_id: dict[str, list[dict[str, Any]]] = {}
    for a in alerts(topics):
        by_id.setdefault(a["payload"]["alert_id"], []).append(a)
    raised = sorted((copies[0]["payload"]["kind"], copies[0]["payload"]["order_id"]
                     if copies[0]["payload"]["kind"] != "order_velocity" else copies[0]["payload"]["customer_id"])
                    for copies in by_id.values())
    assert raised == sorted(expected), "one alert id per rule and order: none missing, none made up"
    for alert, *resent in by_id.values():
        assert all((r["event_id"], r["event_time"], r["payload"]) == (alert["event_id"], alert["event_time"],
                                                                      alert["payload"]) for r in resent), \
            "a re-sent alert is the same alert (the loader keeps one row per alert_id)"
