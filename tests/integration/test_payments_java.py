"""The payments service (Java) against the real test broker, driven through ``mbyn produce payments``.

The jar is built once per session (``mbyn.sources.payments.build`` is a no-op when it is up to date).
Expected outcomes are derived here independently of the Java code: the service promises that the mix
is a function of the order id (SHA-256 draws) and that event ids are name-based UUIDs of it, so the test
recomputes, per order, which payment(s) must be on the topic and with which event id. Orders records it
cannot use must reach ``dead-letters`` with the shared ``dlq.*`` headers (``mbyn.contracts.dead_letters``),
and its codec must give the shared vectors' verdicts (``tests/vectors/orders.jsonl``).
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
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from mbyn.catalog import CATALOG_FILE
from mbyn.contracts.codec import verdict
from mbyn.contracts.dead_letters import DeadLetterInfo, parse_headers
from mbyn.contracts.envelope import make_envelope, validate
from mbyn.kafka.producer import PRODUCER_DEFAULTS
from mbyn.settings import Settings, get_settings
from tests.helpers.kafka import Read, read_all
from tests.helpers.processes import reaped, stop

pytestmark = pytest.mark.integration

MBYN = str(Path(sys.executable).parent / "mbyn")
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "orders.jsonl"


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
    # One record that is not an order at all, and one order outside the catalog's schema (currency not in
    # its list): both dead-lettered, never paid.
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
    assert third["sent"] == 0 and third["orders"] == 0 and third["dead_lettered"] == 0, \
        "committed work was done again"

    records = read_payments(topics)
    assert len(records) == first["delivered"] + second["delivered"]
    check_contract(records, orders)
    assert first["invalid"] + second["invalid"] == 0
    assert first["dead_lettered"] + second["dead_lettered"] == 2
    assert b"O-bad-currency" not in {r.key for r in records}
    dead = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters")
    assert sorted((r.key, parse_headers(list(r.headers.items())).reason) for r in dead) == [
        (b"O-bad-currency", "schema_violation"), (b"poison", "not_json")]

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
    with reaped(proc):
        assert assigned.wait(120), "".join(stderr_lines)[-3000:]
        time.sleep(2.5)  # ~100 payments at 40/s, late ones held
        stdout, _ = stop(proc, signal.SIGTERM, timeout=120)
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
    # The settings the benchmarks state are the Python producers'; the producing time excludes the broker wait.
    assert summary["producer_settings"] == {k: str(PRODUCER_DEFAULTS[k]).lower() for k in
                                            ("acks", "enable.idempotence", "compression.type", "linger.ms",
                                             "batch.size")}
    assert 0 < summary["send_seconds"] <= summary["seconds"]
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


# --- unusable orders records: dead letters and the shared vectors ---------------------------------

def test_vectors_java(payments_jar: Path) -> None:
    """The Java codec gives every orders vector in tests/vectors/orders.jsonl the verdict the file names.

    Runs the jar's ``VectorCheck`` (about a second), the same check as the module's JUnit test
    (``mvn test -DskipTests=false`` in include/payments-java), which ``mvn package`` skips.
    """
    proc = subprocess.run(["java", "-cp", str(payments_jar), "dev.mbyn.payments.VectorCheck", str(CATALOG_FILE),
                           str(VECTORS)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    summary = proc.stdout.strip().splitlines()[-1]
    checked = int(summary.split()[2])
    vectors = [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert checked == sum(1 for v in vectors if v["topic"] == "orders") >= 30, summary
    assert summary.endswith(" 0 disagreements"), summary


def _delivered(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, str | bytes | None]]) -> Message:
    """Produce one record synchronously with a plain client; return it as the broker stored it."""
    stored: list[Message] = []

    def on_delivery(error: Any, message: Message) -> None:
        assert error is None, error
        stored.append(message)

    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
    producer.flush(30)
    assert len(stored) == 1
    return stored[0]


def _headers(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """A consumed record's headers as the list the client returns (in order, repeats kept)."""
    headers = msg.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _read_raw(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Message]:
    """``expect`` records of a physical topic from its start, with every header in order (repeats kept)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
        time.sleep(1)  # anything beyond `expect` would be a duplicate dead letter
        while (msg := consumer.poll(0.5)) is not None:
            if not msg.error():
                out.append(msg)
        return out
    finally:
        consumer.close()


def test_unusable_orders_records_are_dead_lettered_with_dlq_headers(payments_jar: Path, topics: Settings) -> None:
    """Hostile orders records sent with a plain client land on dead-letters, unchanged, with the reason.

    The good order in between is paid; a second run finds nothing to redo (the offsets moved past the
    dead letters only after they were stored).
    """
    orders_topic = topics.topic_prefix + "orders"
    good = make_envelope("order_placed", {
        "order_id": "O-good-1", "customer_id": "C1", "session_id": "S1", "country": "DE", "currency": "EUR",
        "items": [{"sku": "SKU-1", "category": "books", "quantity": 2, "unit_price": 9.5}], "amount": 19.0,
    }, "test-orders", trace_id="trace-good-1")
    good_bytes = json.dumps(good).encode()
    hostile: list[tuple[str, bytes | None, bytes | None]] = [
        ("not_json", b"K-garbage", b"this is not json"),
        ("not_json", b"K-bom", b"\xef\xbb\xbf" + good_bytes),
        ("not_json", b"K-inf", good_bytes.replace(b'"amount": 19.0', b'"amount": 1e400')),
        ("not_json", b"K-surrogate", good_bytes.replace(b'"C1"', b'"\\ud800"')),
        ("null_key", None, good_bytes),
        ("null_value", b"K-null", None),
        ("unknown_schema_version", b"K-v2", good_bytes.replace(b'"schema_version": 1', b'"schema_version": 2')),
        ("schema_violation", b"K-date", json.dumps({**good, "event_time": "2026-02-30T10:00:00Z"}).encode()),
        ("schema_violation", b"K-nl", json.dumps({**good, "payload": {**good["payload"], "country": "DE\n"}}).encode()),
        ("oversize", b"K-big", b" " * (512 * 1024) + good_bytes),
    ]
    for expected, key, value in hostile:
        assert verdict("orders", key, value) == expected, (key, expected)  # the Python codec agrees
    producer = Producer({"bootstrap.servers": topics.bootstrap(), "message.max.bytes": 2_000_000})
    sent: list[tuple[str, Message]] = []
    for expected, key, value in hostile[:5]:
        sent.append((expected, _delivered(producer, orders_topic, key, value,
                                          [("origin", b"kcat"), ("dlq.reason", b"forged")])))
    good_msg = _delivered(producer, orders_topic, b"O-good-1", good_bytes, [])
    for expected, key, value in hostile[5:]:
        sent.append((expected, _delivered(producer, orders_topic, key, value, [("origin", b"kcat")])))

    code, summary, err = run_payments("--idle-exit", "2")
    assert code == 0, err[-3000:]
    # At least once: a rebalance (a loaded machine) may redo what was not committed yet, so ">=" here;
    # the second run below proves that what was committed is not read again.
    assert summary["orders"] >= 1 and summary["failed"] == 0, (summary, err[-3000:])
    assert summary["dead_lettered"] == summary["dead_letters_delivered"] >= len(hostile), (summary, err[-3000:])
    paid = [r for r in read_payments(topics) if r.key == b"O-good-1"]
    assert paid and all(r.json()["trace_id"] == "trace-good-1" for r in paid), (good_msg.offset(), paid)

    dead = _read_raw(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=summary["dead_lettered"])
    assert len(dead) == summary["dead_lettered"]
    by_origin: dict[tuple[str, int, int], list[tuple[Message, DeadLetterInfo]]] = {}
    for msg in dead:
        info = parse_headers(_headers(msg))
        assert info.coordinates is not None, _headers(msg)
        by_origin.setdefault(info.coordinates, []).append((msg, info))
    expected_origins = {(orders_topic, original.partition() or 0, original.offset() or 0): (reason, original)
                        for reason, original in sent}
    assert set(by_origin) == set(expected_origins), "a dead letter for each unusable record, and only for those"
    for coordinates, copies in by_origin.items():
        expected, original = expected_origins[coordinates]
        for msg, info in copies:
            assert msg.key() == original.key() and msg.value() == original.value()
            assert info.reason == expected, (coordinates, info)
            assert info.consumer_group == topics.topic_prefix + "payments-service"
            assert info.timestamp_ms == original.timestamp()[1]
            assert info.error_class and info.error_message and info.traceback
            assert len(info.error_message) <= 2000 and len(info.traceback) <= 4000
            headers = _headers(msg)
            assert [h for h in headers if not h[0].startswith("dlq.")] == [("origin", b"kcat")]
            assert [name for name, _ in headers].count("dlq.reason") == 1  # the forged one is not carried over

    code, again, err = run_payments("--idle-exit", "1")
    assert code == 0, err[-3000:]
    assert again["dead_lettered"] == 0 and again["orders"] == 0, "dead-lettered records were read again"


def test_an_orders_record_of_the_brokers_largest_size_is_dead_lettered_not_fatal(payments_jar: Path,
                                                                                topics: Settings) -> None:
    """Just under the broker's 1 MiB: its dead letter (value + dlq.* headers) is larger than the Java client's
    default request limit, which stopped the service on it after every restart."""
    producer = Producer({"bootstrap.servers": topics.bootstrap(), "message.max.bytes": 2_000_000})
    _delivered(producer, topics.topic_prefix + "orders", b"O-big", b"x" * 1_048_400, [])
    code, summary, stderr = run_payments("--idle-exit", "3")
    assert code == 0, stderr[-3000:]
    assert summary["dead_lettered"] == 1 and summary["dead_letters_delivered"] == 1
    [letter] = _read_raw(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=1)
    assert letter.key() == b"O-big" and len(letter.value() or b"") == 1_048_400
