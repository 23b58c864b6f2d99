"""The payments service (Java) against the real test broker, driven through ``mbyn produce payments``.

The jar is built once per session (``mbyn.sources.payments.build`` is a no-op when it is up to date).
Expected outcomes are derived here independently of the Java code: the service promises that the mix
is a function of the order id (SHA-256 draws) and that event ids are name-based UUIDs of it, so the test
recomputes, per order, which payment(s) must be on the topic and with which event id.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from mbyn.contracts.envelope import make_envelope, validate
from mbyn.settings import Settings, get_settings
from tests.helpers.kafka import Read, read_all

pytestmark = pytest.mark.integration

MBYN = str(Path(sys.executable).parent / "mbyn")


@pytest.fixture(scope="module")
def payments_jar() -> Path:
    from mbyn.sources import payments

    payments.build(get_settings())
    assert payments.JAR.exists()
    return payments.JAR


# --- the promised mix, recomputed -----------------------------------------------------------------

def _draw(digest: bytes, offset: int) -> int:
    return int.from_bytes(digest[offset:offset + 4], "big") % 10_000


def _name_uuid(name: str) -> str:
    """Java's UUID.nameUUIDFromBytes: an MD5 name-based (version 3) UUID without namespace."""
    return str(uuid.UUID(bytes=hashlib.md5(name.encode()).digest(), version=3))


@dataclass(frozen=True)
class Expected:
    kind: str  # authorized | declined | mismatched | late
    copies: int
    orphan: bool

    @property
    def records(self) -> int:
        return self.copies + (1 if self.orphan else 0)


def expected_for(order_id: str) -> Expected:
    digest = hashlib.sha256(f"mbyn-payments:{order_id}".encode()).digest()
    mix = _draw(digest, 0)
    kind = "declined" if mix < 500 else "mismatched" if mix < 700 else "late" if mix < 1000 else "authorized"
    return Expected(kind, 2 if _draw(digest, 4) < 100 else 1, _draw(digest, 8) < 100)


# --- helpers --------------------------------------------------------------------------------------

def write_orders(settings: Settings, count: int, seed: int) -> list[dict[str, Any]]:
    """Put ``count`` orders from the Python shop generator on the orders topic; return their envelopes."""
    from mbyn.sources.base import stream_to_kafka
    from mbyn.sources.generator import shop_events

    records = list(islice((r for r in shop_events(seed) if r.topic == "orders"), count))
    result = stream_to_kafka("test-orders", records, settings)
    assert result.counters["delivered"] == count
    return [dict(r.value or {}) for r in records]


def run_payments(*args: str, timeout: float = 180) -> tuple[int, dict[str, Any], str]:
    """Run ``mbyn produce payments`` to completion; return exit code, JSON summary and stderr."""
    proc = subprocess.run([MBYN, "produce", "payments", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no summary on stdout (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def read_payments(settings: Settings) -> list[Read]:
    return read_all(settings.bootstrap(), settings.topic_prefix + "payments")


def check_contract(records: list[Read], orders: dict[str, dict[str, Any]]) -> None:
    """Every record: valid against the catalog, keyed by order id, source/trace headers, derived event id."""
    for rec in records:
        value = rec.json()
        validate("payments", value)
        payload = value["payload"]
        assert rec.key == payload["order_id"].encode()
        assert rec.headers["source"] == b"payments-service"
        assert value["source"] == "payments-service"
        assert rec.headers["trace_id"] == value["trace_id"].encode()
        assert value["event_id"] == _name_uuid(f"payment-event:{payload['order_id']}")
        order = orders.get(payload["order_id"])
        if order is not None:
            assert value["trace_id"] == order["trace_id"]  # the order's trace carries on
            assert payload["currency"] == order["payload"]["currency"]
        else:  # a payment without order: its own event id is its trace
            assert value["trace_id"] == value["event_id"]


def expected_records(orders: dict[str, dict[str, Any]]) -> int:
    return sum(expected_for(order_id).records for order_id in orders)


# --- tests ----------------------------------------------------------------------------------------

def test_build_is_idempotent(payments_jar: Path) -> None:
    from mbyn.sources import payments

    before = payments_jar.stat().st_mtime
    status = payments.build(get_settings())
    assert status.startswith("up to date"), status
    assert payments_jar.stat().st_mtime == before
    assert payments.archive_is_fresh()


def test_orders_become_payments_exactly_once_per_committed_order(payments_jar: Path, topics: Settings) -> None:
    """--count stops mid-stream; the next run finishes the rest; a third run finds nothing left to do."""
    from mbyn.kafka.producer import TopicProducer

    envelopes = write_orders(topics, 300, seed=11)
    orders = {e["payload"]["order_id"]: e for e in envelopes}
    # One record that is not an order at all, and one order whose payment cannot satisfy the schema
    # (currency outside the catalog's enum): skipped and invalid, never sent.
    bad = dict(envelopes[0]["payload"], order_id="O-bad-currency", currency="XXX")
    producer = TopicProducer("test-orders", topics)
    producer.send_raw(topics.topic_prefix + "orders", b"this is not json", b"poison")
    producer.send_raw(topics.topic_prefix + "orders",
                      json.dumps(make_envelope("order_placed", bad, "test-orders")).encode(), b"O-bad-currency")
    producer.flush_or_raise()
    producer.close()

    code1, first, err1 = run_payments("--count", "120")
    assert code1 == 0, err1[-3000:]
    assert first["stopped_by"] == "count"
    assert first["sent"] == 120 and first["delivered"] == 120 and first["failed"] == 0

    code2, second, err2 = run_payments("--idle-exit", "2")
    assert code2 == 0, err2[-3000:]
    assert second["stopped_by"] == "idle" and second["failed"] == 0

    code3, third, err3 = run_payments("--idle-exit", "1")
    assert code3 == 0, err3[-3000:]
    assert third["sent"] == 0 and third["orders"] == 0, "committed work was done again"

    records = read_payments(topics)
    assert len(records) == first["delivered"] + second["delivered"]
    check_contract(records, orders)
    assert first["invalid"] + second["invalid"] == 1
    assert first["skipped_orders"] + second["skipped_orders"] == 1
    assert b"O-bad-currency" not in {r.key for r in records}

    # Every order has its payment; the order --count interrupted may have been re-sent in part (≤ 2 records).
    by_order: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        value = rec.json()
        by_order.setdefault(value["payload"]["order_id"], []).append(value)
    assert set(orders) <= set(by_order)
    expected_total = expected_records(orders)
    assert expected_total <= len(records) <= expected_total + 2

    kinds: Counter[str] = Counter()
    for order_id, order in orders.items():
        plan = expected_for(order_id)
        kinds[plan.kind] += 1
        payment = by_order[order_id][0]["payload"]
        amount = Decimal(str(order["payload"]["amount"]))
        if plan.kind == "declined":
            assert payment["status"] == "declined" and by_order[order_id][0]["event_type"] == "payment_declined"
        else:
            assert payment["status"] == "authorized"
        if plan.kind == "mismatched":
            assert Decimal(str(payment["amount"])) != amount
        else:
            assert Decimal(str(payment["amount"])) == amount
        assert len(by_order[order_id]) >= plan.copies
    assert kinds["declined"] > 0 and kinds["mismatched"] > 0 and kinds["late"] > 0
    assert first["declined"] + second["declined"] >= kinds["declined"]

    duplicated = sum(1 for order_id in orders if expected_for(order_id).copies == 2)
    assert duplicated > 0
    repeats = Counter(r.json()["event_id"] for r in records)
    assert duplicated <= sum(1 for n in repeats.values() if n > 1) <= duplicated + 1

    orphans = [order_id for order_id in by_order if order_id not in orders]
    assert len(orphans) == sum(1 for order_id in orders if expected_for(order_id).orphan) > 0
    assert all(order_id.startswith("O-") for order_id in orphans)


def test_sigterm_mid_stream_sends_pending_commits_and_exits_0(payments_jar: Path, topics: Settings) -> None:
    """SIGTERM to `mbyn produce payments` while it works: exit 0, summary matches the topic, nothing lost."""
    envelopes = write_orders(topics, 400, seed=23)
    orders = {e["payload"]["order_id"]: e for e in envelopes}
    proc = subprocess.Popen([MBYN, "produce", "payments", "--rate", "40"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assigned = threading.Event()
    stderr_lines: list[str] = []

    def follow() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.append(line)
            if "assigned partitions" in line:
                assigned.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert assigned.wait(120), "".join(stderr_lines)[-3000:]
        time.sleep(2.5)  # ~100 payments at 40/s, late ones held
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert proc.returncode == 0, "".join(stderr_lines)[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] == "signal"
    assert 0 < summary["sent"] < expected_records(orders), "the test should stop the service mid-stream"
    records = read_payments(topics)
    assert summary["delivered"] == summary["sent"] == len(records)
    check_contract(records, orders)

    # What was committed is not sent again; what was not is sent now: together exactly the expected set.
    code, rest, err = run_payments("--idle-exit", "2")
    assert code == 0, err[-3000:]
    records = read_payments(topics)
    assert len(records) == summary["delivered"] + rest["delivered"] == expected_records(orders)
    assert {r.json()["payload"]["order_id"] for r in records} >= set(orders)


def test_synthetic_mode_sends_valid_payments_of_about_300_bytes(payments_jar: Path, topics: Settings) -> None:
    code, summary, err = run_payments("--synthetic", "--count", "500")
    assert code == 0, err[-3000:]
    assert summary["mode"] == "synthetic" and summary["stopped_by"] == "count"
    assert summary["sent"] == summary["delivered"] == 500
    records = read_payments(topics)
    assert len(records) == 500
    for rec in records:
        validate("payments", rec.json())
    mean_size = sum(len(r.value or b"") for r in records) / len(records)
    assert 250 <= mean_size <= 400, mean_size


def test_unreachable_broker_one_line_per_attempt_no_stack_traces(payments_jar: Path, mbyn_env: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MBYN_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    proc = subprocess.run([MBYN, "produce", "payments", "--max-broker-wait", "10"], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ))
    assert proc.returncode == 1, proc.stderr[-3000:]
    attempts = [line for line in proc.stderr.splitlines() if "unreachable (attempt" in line]
    assert len(attempts) >= 2, proc.stderr[-3000:]
    assert f"no Kafka broker at 127.0.0.1:{port}" in proc.stderr
    assert "\tat " not in proc.stderr and "Exception" not in proc.stderr, proc.stderr[-3000:]
