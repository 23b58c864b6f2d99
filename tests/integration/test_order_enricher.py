"""order-enricher against the real broker: EUR amounts, bounded wait for rates, exactly once across a SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from mbyn.consumers.order_enricher import OrderEnricher
from mbyn.consumers.runtime import run_consumer
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from mbyn.sources.generator import shop_events
from tests.helpers.kafka import read_all
from tests.helpers.processes import reap

pytestmark = pytest.mark.integration

RATES = {"USD": 1.0812, "GBP": 0.8431, "JPY": 162.5, "CHF": 0.9376, "SEK": 11.52, "PLN": 4.31, "CAD": 1.49,
         "AUD": 1.65}


def send_rates(producer: TopicProducer, rates: dict[str, float], day: str = "2026-11-24") -> None:
    for currency, rate in rates.items():
        assert producer.send("fx-rates", dict(make_envelope(
            "fx_rate", {"currency": currency, "rate_date": day, "rate_per_eur": rate}, "test")), currency)


def order(order_id: str, currency: str, amount: float) -> dict[str, Any]:
    return dict(make_envelope("order_placed", {
        "order_id": order_id, "customer_id": "C000001", "session_id": "s-1", "country": "DE", "currency": currency,
        "amount": amount, "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": amount}]},
        "test"))


def enriched_by_order(settings: Settings, expect: int | None = None) -> list[dict[str, Any]]:
    reads = read_all(settings.bootstrap(), settings.topic_prefix + "orders-enriched", expect=expect,
                     isolation="read_committed")
    return [r.json() for r in reads]


def test_amounts_are_converted_and_a_missing_rate_waits_then_dead_letters(topics):
    producer = TopicProducer("test", topics)
    send_rates(producer, {"USD": 1.25})
    producer.send("fx-rates", dict(make_envelope("fx_rate", {"currency": "GBP", "rate_date": "2026-11-20",
                                                               "rate_per_eur": 0.5}, "test")), "GBP")
    send_rates(producer, {"GBP": 0.8}, day="2026-11-24")  # the later record for a key wins
    orders = {"O-usd": ("USD", 100.0), "O-eur": ("EUR", 10.0), "O-gbp": ("GBP", 8.0), "O-sek": ("SEK", 23.0),
              "O-chf": ("CHF", 5.0)}
    for oid, (currency, amount) in orders.items():
        producer.send("orders", order(oid, currency, amount), oid)
    producer.flush_or_raise()

    def sek_rate_later() -> None:  # arrives while the enricher waits for it
        time.sleep(1.5)
        send_rates(producer, {"SEK": 11.5})
        producer.flush_or_raise()

    late = threading.Thread(target=sek_rate_later)
    late.start()
    try:
        summary = run_consumer(OrderEnricher(topics, fx_wait_s=6), topics, idle_exit=3)
    finally:
        late.join()

    assert summary["dead_letter_reasons"] == {"no_fx_rate": 1}, "CHF never got a rate"
    out = {e["payload"]["order_id"]: e["payload"] for e in enriched_by_order(topics)}
    assert set(out) == {"O-usd", "O-eur", "O-gbp", "O-sek"}
    assert (out["O-usd"]["amount_eur"], out["O-usd"]["fx_rate"], out["O-usd"]["fx_date"]) == (80.0, 1.25, "2026-11-24")
    assert (out["O-eur"]["amount_eur"], out["O-eur"]["fx_rate"], out["O-eur"]["fx_date"]) == (10.0, 1.0, None)
    assert (out["O-gbp"]["amount_eur"], out["O-gbp"]["fx_rate"]) == (10.0, 0.8)
    assert out["O-sek"]["amount_eur"] == 2.0
    letters = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=1)
    assert [(r.key, r.headers["dlq.reason"]) for r in letters] == [(b"O-chf", b"no_fx_rate")]


class Enricher:
    """`mbyn consume order-enricher` as a subprocess with a stable instance id."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "enricher.log"
        self.out = tmp / "enricher.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with self.log.open("ab") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "consume", "order-enricher",
                                          "--instance-id", "a", "--batch-size", "100", *extra],
                                         stdout=out, stderr=err)


def test_exactly_one_enriched_record_per_order_across_a_sigkill(topics, tmp_path, monkeypatch):
    monkeypatch.setenv("MBYN_CONSUMER_SESSION_TIMEOUT_S", "6")
    producer = TopicProducer("test", topics)
    send_rates(producer, RATES)
    sent = {}
    for e in islice((e for e in shop_events(seed=21) if e.topic == "orders"), 3000):
        producer.send("orders", e.value, e.key)
        sent[e.key] = e.value["payload"]
    producer.flush_or_raise()

    copy = Enricher(tmp_path)
    # Small transactions keep the copy busy long enough for the kill to land mid-stream on a fast machine
    # (with the default batch it once finished all 3000 orders before the reader saw any).
    copy.start("--batch-size", "10")
    assert copy.proc is not None
    try:
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline:
            seen = len(read_all(topics.bootstrap(), topics.topic_prefix + "orders-enriched", timeout=5))
            if seen >= 50:
                break
            time.sleep(0.3)
        copy.proc.kill()  # SIGKILL mid-stream: an open transaction is left behind
        copy.proc.wait(30)
        assert 0 < seen < len(sent), f"killed mid-stream (saw {seen} of {len(sent)})"
        copy.start("--idle-exit", "4")
        code = copy.proc.wait(120)
        assert code == 0, copy.log.read_text()[-3000:]
    finally:
        reap(copy.proc)  # the restarted copy
    summary = json.loads(copy.out.read_text().strip().splitlines()[-1])
    assert summary["dead_lettered"] == 0

    records = enriched_by_order(topics)
    ids = [r["payload"]["order_id"] for r in records]
    assert len(ids) == len(set(ids)), "no order enriched twice (read_committed)"
    assert set(ids) == set(sent), "none missing"
    for r in records:
        p = r["payload"]
        rate = 1.0 if p["currency"] == "EUR" else RATES[p["currency"]]
        assert p["fx_rate"] == rate and p["amount"] == sent[p["order_id"]]["amount"]
        assert p["amount_eur"] == round(p["amount"] / rate, 2)
