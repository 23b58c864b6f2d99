"""fraud-detector rules: each fires exactly when it should; state is bounded and idempotent."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

from mbyn.consumers.fraud_detector import FraudRules, Order, Payment, alert_id

T = "t-orders"
P = "t-payments"


def at(seconds: float) -> datetime:
    return datetime.fromisoformat("2026-11-25T10:00:00+00:00") + timedelta(seconds=seconds)


def order(oid: str, amount: float, when: float, customer: str = "C1", offset: int = 0, part: int = 0) -> Order:
    return Order(oid, customer, amount, "EUR", at(when), (T, part), offset)


def payment(pid: str, oid: str, amount: float, when: float, offset: int = 0, part: int = 0,
            currency: str = "EUR") -> Payment:
    return Payment(pid, oid, amount, currency, "authorized", at(when), (P, part), offset)


def rules() -> FraudRules:
    return FraudRules(timeout=timedelta(seconds=60), velocity_threshold=3, velocity_window=timedelta(minutes=1))


def test_matching_amounts_raise_nothing_and_a_cent_is_tolerated():
    r = rules()
    assert r.on_order(order("O1", 100.0, 0)) == []
    assert r.on_payment(payment("P1", "O1", 100.0, 1)) == []
    assert r.on_order(order("O2", 50.0, 2, offset=1)) == []
    assert r.on_payment(payment("P2", "O2", 49.995, 3, offset=1)) == []


def test_amount_mismatch_fires_whichever_side_comes_first():
    r = rules()
    r.on_order(order("O1", 45.0, 0))
    [a] = r.on_payment(payment("P1", "O1", 40.0, 1))
    assert (a.kind, a.order_id, a.customer_id, a.alert_id) == ("amount_mismatch", "O1", "C1",
                                                               alert_id("amount_mismatch", "P1"))
    assert r.on_payment(payment("P2", "O2", 10.0, 2, offset=1)) == []
    [b] = r.on_order(order("O2", 12.0, 3, offset=1))
    assert b.kind == "amount_mismatch" and "10.00 EUR" in b.details and "12.00 EUR" in b.details
    assert r.on_order(order("O3", 5.0, 4, offset=2)) == []
    [c] = r.on_payment(payment("P3", "O3", 5.0, 5, offset=2, currency="USD"))
    assert c.kind == "amount_mismatch", "same number in another currency is a mismatch"


def test_payment_without_order_fires_only_after_the_timeout_of_stream_time():
    r = rules()
    assert r.on_payment(payment("P1", "O-missing", 10.0, 0)) == []
    assert r.on_payment(payment("P2", "O-late", 10.0, 1, offset=1)) == []
    assert r.on_order(order("O-late", 10.0, 31)) == [], "order 30 s after its payment: joined, no alert"
    assert r.advance(0, at(59.9)) == []
    [a] = r.advance(0, at(60))
    assert (a.kind, a.order_id, a.event_time) == ("payment_without_order", "O-missing", at(60))
    assert r.advance(0, at(500)) == [], "reported once"


def test_clocks_are_per_partition_and_follow_the_slower_side():
    r = rules()
    r.on_payment(payment("P1", "O-x", 10.0, 0, part=0))
    moved = r.on_order(order("O-y", 1.0, 120, part=1)) + r.on_payment(payment("P-y", "O-y", 1.0, 120, part=1))
    assert moved == [], "partition 1's time does not expire partition 0"
    assert r.on_order(order("O-z", 1.0, 120, part=0, offset=5)) == [], \
        "only the orders side of partition 0 moved on: its payments side may still bring O-x's match"
    assert [a.kind for a in r.on_payment(payment("P-z", "O-z", 1.0, 121, part=0, offset=6))] == \
        ["payment_without_order"]


def test_velocity_fires_once_when_a_customer_exceeds_the_threshold_in_a_window():
    r = rules()
    kinds = []
    for n, when in enumerate([0, 10, 20, 30, 40]):
        kinds += [a.kind for a in r.on_order(order(f"O{n}", 1.0, when, customer="C-fast", offset=n))]
    assert kinds == ["order_velocity"], "the 4th order crosses 3; the 5th does not fire again"
    spread = [r.on_order(order(f"S{n}", 1.0, when, customer="C-spread", offset=10 + n))
              for n, when in enumerate([50, 55, 61, 65])]
    assert spread == [[], [], [], []], "2 + 2 orders in two windows"
    again = r.on_order(order("O1", 1.0, 10, customer="C-fast", offset=1))
    assert again == [], "a re-read order is not counted twice"


def test_state_is_bounded_and_commits_hold_back_to_the_oldest_needed_offset():
    r = rules()
    r.on_order(order("O1", 10.0, 0, offset=7))
    r.on_payment(payment("P9", "O9", 1.0, 5, offset=3))
    assert r.held_offsets() == {(T, 0): 7, (P, 0): 3}
    r.advance(0, at(200))
    assert r.held_offsets() == {} and r.size() == 0, "expired orders, reported payment, closed windows"


def test_dropping_revoked_partitions_forgets_their_state():
    r = rules()
    r.on_order(order("O1", 10.0, 0, part=0))
    r.on_order(order("O2", 10.0, 0, part=1))
    r.drop([1])
    assert set(r.held_offsets()) == {(T, 0)}


def test_a_velocity_window_of_a_fraction_of_a_second_is_refused_at_start() -> None:
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", "consume", "fraud-detector", "--velocity-window", "0.5"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "--velocity-window must be a whole number of seconds >= 1, got 0.5" in result.stderr
