"""The Go shipment tracker against the real broker: payments in, four ordered, valid stages out.

Each test writes payments with the Python producer runtime (hostile ones with a plain confluent_kafka
producer), runs ``mbyn produce shipments`` as a subprocess (which builds the Go binary if needed), and
reads the shipments and dead-letters topics back independently.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mbyn.contracts.dead_letters import parse_headers
from mbyn.contracts.envelope import make_envelope, validate
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings, get_settings
from mbyn.sources import shipments
from tests.helpers.kafka import Read, read_all
from tests.helpers.processes import reaped, stop

pytestmark = pytest.mark.integration

STAGES = ["created", "picked", "in_transit", "delivered"]
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "payments.jsonl"
DLQ_HEADERS = ["dlq.reason", "dlq.error_class", "dlq.error_message", "dlq.traceback", "dlq.topic", "dlq.partition",
               "dlq.offset", "dlq.timestamp", "dlq.consumer_group"]


@pytest.fixture(scope="module")
def tracker_binary() -> str:
    """Build once per module (a no-op when up to date); fail clearly if Go is absent from this machine."""
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is required for the shipment tracker (go ≥ 1.26 on PATH)")
    shipments.build(get_settings())
    return str(shipments.BINARY)


def _mbyn(*args: str) -> list[str]:
    return [sys.executable, "-m", "mbyn.cli", "produce", "shipments", *args]


def _payment(order_id: str, status: str = "authorized", payment_id: str | None = None) -> dict[str, Any]:
    payload = {"payment_id": payment_id or f"P-{uuid.uuid4().hex[:12]}", "order_id": order_id, "amount": 42.5,
               "currency": "EUR", "status": status, "method": "card"}
    return dict(make_envelope(f"payment_{status}", payload, "payments-test", trace_id=f"trace-{order_id}"))


def _write_payments(settings: Settings, payments: list[dict[str, Any]], garbage: int = 0) -> None:
    producer = TopicProducer("payments-test", settings)
    for env in payments:
        assert producer.send("payments", env, env["payload"]["order_id"])
    for i in range(garbage):
        producer.send_raw(settings.topic_prefix + "payments", b"{not json", f"junk-{i}".encode())
    producer.flush_or_raise()


def _summary(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"expected one JSON summary line, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["producer"] == "shipment-tracker"
    return summary


def _by_shipment(records: list[Read]) -> dict[str, list[dict[str, Any]]]:
    """Validate every record against the catalog and group the envelopes by key, in topic order."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = r.json()
        validate("shipments", value)
        assert r.key is not None
        assert r.key.decode() == value["payload"]["shipment_id"]
        assert r.headers["source"] == b"shipment-tracker"
        assert r.headers["trace_id"] == value["trace_id"].encode()
        grouped[r.key.decode()].append(value)
    return grouped


def _assert_walked(envelopes: list[dict[str, Any]], order_id: str, trace_id: str | None = None) -> None:
    assert [e["payload"]["status"] for e in envelopes] == STAGES
    assert [e["event_type"] for e in envelopes] == [f"shipment_{s}" for s in STAGES]
    assert {e["payload"]["order_id"] for e in envelopes} == {order_id}
    assert len({e["event_id"] for e in envelopes}) == 4
    if trace_id is not None:
        assert {e["trace_id"] for e in envelopes} == {trace_id}
    times = [datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")) for e in envelopes]
    assert times == sorted(times)


def _read_eventually(settings: Settings, expect: int, timeout: float = 60.0) -> list[Read]:
    """read_all for a topic that is still being written: retry while leadership settles after creation."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_all(settings.bootstrap(), settings.topic_prefix + "shipments", expect=expect,
                            timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _committed(settings: Settings) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic_prefix + "payments"
    group = settings.topic_prefix + "shipment-tracker"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        consumer.close()


def _end_offsets(settings: Settings) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic_prefix + "payments"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        return {p: high for p, high in ends.items() if high > 0}
    finally:
        consumer.close()


def test_go_unit_tests_pass(tracker_binary: str) -> None:
    """`go test ./...`: state machine, offsets, LRU, timer queue, catalog validation, config."""
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false"}
    result = subprocess.run(["go", "test", "./..."], cwd=shipments.GO_DIR, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for package in ("mbyn/shipments-go", "mbyn/shipments-go/internal/tracker", "mbyn/shipments-go/internal/contract"):
        assert f"ok  \t{package}\t" in result.stdout, result.stdout


def test_authorized_payments_become_four_ordered_stages(topics: Settings, tracker_binary: str) -> None:
    authorized = [f"O-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    declined = [f"O-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    payments = [_payment(o) for o in authorized] + [_payment(o, "declined") for o in declined]
    payments.append(_payment(authorized[0], payment_id="P-retry"))  # same order paid twice → one shipment
    _write_payments(topics, payments, garbage=1)

    result = subprocess.run(_mbyn("--stage-delay", "0.2", "--duration", "4"), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)

    records = read_all(topics.bootstrap(), topics.topic_prefix + "shipments")
    grouped = _by_shipment(records)
    expected = {shipments_id(o): o for o in authorized}
    assert set(grouped) == set(expected), "every authorized order, and only those, has a shipment"
    for shipment_id, order_id in expected.items():
        _assert_walked(grouped[shipment_id], order_id, trace_id=f"trace-{order_id}")
        times = [datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")) for e in grouped[shipment_id]]
        assert [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)] == [0.2] * 3
    assert not any(e["payload"]["order_id"] in declined for env in grouped.values() for e in env)

    assert summary["shipments"] == 5 and summary["duplicates"] == 1
    assert summary["declined"] == 3 and summary["malformed"] == summary["dead_lettered"] == 1
    assert summary["sent"] == summary["delivered"] == len(records) == 20
    assert summary["failed"] == 0 and summary["invalid"] == 0 and summary["pending"] == 0
    assert summary["stopped_by"] == "duration"
    # Every payment is finished, so the group committed each partition to its end.
    assert _committed(topics) == _end_offsets(topics)


def test_sigterm_fast_forwards_pending_stages_and_commits(topics: Settings, tracker_binary: str) -> None:
    orders = [f"O-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    _write_payments(topics, [_payment(o) for o in orders])
    proc = subprocess.Popen(_mbyn("--stage-delay", "60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        created = _read_eventually(topics, expect=3)
        assert len(created) == 3, "the tracker should emit 'created' for each payment first"
        assert {r.json()["payload"]["status"] for r in created} == {"created"}
        assert all(offset == 0 for offset in _committed(topics).values()), \
            "no offset may move past a payment whose shipment has stages pending"
        stdout, stderr = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, stderr
    assert "fast-forwarded 9 pending stage(s)" in stderr
    summary = _summary(stdout)
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["fast_forwarded"] == 9 and summary["pending"] == 0

    records = read_all(topics.bootstrap(), topics.topic_prefix + "shipments")
    assert summary["delivered"] == summary["sent"] == len(records) == 12
    grouped = _by_shipment(records)
    for order_id in orders:
        _assert_walked(grouped[shipments_id(order_id)], order_id)
    assert _committed(topics) == _end_offsets(topics)


def test_synthetic_mode_walks_synthesized_orders(topics: Settings, tracker_binary: str) -> None:
    started = time.monotonic()
    result = subprocess.run(_mbyn("--synthetic", "--count", "6", "--stage-delay", "0.1", "--rate", "50"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert summary["stopped_by"] == "count" and summary["shipments"] == 6
    assert summary["fast_forwarded"] == 0, "--count lets the stages finish on schedule"
    assert time.monotonic() - started >= 0.3, "three stage delays must have passed"

    records = read_all(topics.bootstrap(), topics.topic_prefix + "shipments")
    assert summary["delivered"] == len(records) == 24
    grouped = _by_shipment(records)
    assert len(grouped) == 6
    for shipment_id, envelopes in grouped.items():
        order_id = envelopes[0]["payload"]["order_id"]
        assert shipment_id == shipments_id(order_id)
        _assert_walked(envelopes, order_id)


def test_unreachable_broker_is_retried_with_one_line_per_attempt(mbyn_env: Settings, tracker_binary: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MBYN_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    result = subprocess.run(_mbyn("--synthetic", "--duration", "2.5"), env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    attempts = [line for line in result.stderr.splitlines() if "unreachable (attempt" in line]
    assert 2 <= len(attempts) <= 4, result.stderr
    assert f"127.0.0.1:{port}" in attempts[0] and "retrying in 0.5s" in attempts[0]
    assert _summary(result.stdout)["sent"] == 0


def _hostile_vectors() -> list[dict[str, Any]]:
    """Every payments vector the tracker must refuse, as (key, value) bytes with the expected reason."""
    out = []
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        vector = json.loads(line)
        if vector["verdict"] == "ok":
            continue
        if "value_b64" in vector:
            value: bytes | None = base64.b64decode(vector["value_b64"])
        else:
            value = None if vector["value"] is None else vector["value"].encode()
        key = None if vector["key"] is None else vector["key"].encode()
        out.append({"name": vector["name"], "key": key, "value": value, "reason": vector["verdict"]})
    return out


def _produce_raw(settings: Settings, records: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """Send records with a plain confluent_kafka producer, as any client could; returns them by (partition,
    offset), each with the timestamp the broker acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.bootstrap(), "enable.idempotence": True,
                         "message.max.bytes": 2_000_000})
    sent: dict[tuple[int, int], dict[str, Any]] = {}
    errors: list[Any] = []

    def on_delivery(record: dict[str, Any]) -> Any:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
                return
            sent[(msg.partition(), msg.offset())] = {**record, "timestamp": msg.timestamp()[1]}
        return callback

    for record in records:
        producer.produce(settings.topic_prefix + "payments", value=record["value"], key=record["key"],
                         headers=record.get("headers"), on_delivery=on_delivery(record))
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    return sent


def _read_raw(settings: Settings, topic: str, expect: int, timeout: float = 120.0) -> list[Any]:
    """The first ``expect`` records of a physical topic as confluent_kafka messages (headers as a list, so a
    repeated header would show)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": f"test-raw-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    out: list[Any] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
        return out
    finally:
        consumer.close()


def test_unreadable_payments_are_dead_lettered_before_the_commit_passes_them(topics: Settings,
                                                                             tracker_binary: str) -> None:
    """Every refused vector of tests/vectors/payments.jsonl lands on dead-letters once, with its original key,
    value and headers and the contract's dlq.* headers; the good payment becomes a shipment; the group commits
    past all of them; the tracker keeps running and exits cleanly."""
    hostile = _hostile_vectors()
    assert len(hostile) >= 25
    # Near the broker's default limit of 1 MiB: its dead letter (plus dlq.* headers) is larger than that.
    hostile.append({"name": "a 1000000-byte value", "key": b"O-big", "value": b"x" * 1_000_000, "reason": "oversize"})
    hostile[0]["headers"] = [("origin", b"kcat"), ("dlq.reason", b"forged"), ("empty", None)]
    good_order = f"O-{uuid.uuid4().hex[:12]}"
    good = _payment(good_order)
    sent = _produce_raw(topics, [*hostile, {"name": "good", "key": good_order.encode(),
                                            "value": json.dumps(good).encode()}])
    bad = {pos: r for pos, r in sent.items() if r["name"] != "good"}

    proc = subprocess.Popen(_mbyn("--stage-delay", "0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        letters = _read_raw(topics, topics.topic_prefix + "dead-letters", expect=len(bad))
        shipments_read = _read_eventually(topics, expect=4)
        deadline = time.monotonic() + 60
        while _committed(topics) != _end_offsets(topics) and time.monotonic() < deadline:
            time.sleep(0.5)
        stdout, stderr = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, stderr
    summary = _summary(stdout)
    assert summary["malformed"] == summary["dead_lettered"] == len(bad), stderr
    assert summary["shipments"] == 1 and summary["failed"] == 0
    _assert_walked(_by_shipment(shipments_read)[shipments_id(good_order)], good_order)
    assert _committed(topics) == _end_offsets(topics), "the group must have committed past every dead letter"

    assert len(letters) == len(bad), f"{len(letters)} dead letters for {len(bad)} refused records"
    seen = set()
    for msg in letters:
        headers = msg.headers() or []
        info = parse_headers(headers)
        assert info.coordinates is not None, headers
        topic, partition, offset = info.coordinates
        assert topic == topics.topic_prefix + "payments"
        original = bad[(partition, offset)]
        name = original["name"]
        assert (partition, offset) not in seen, f"dead-lettered twice: {name}"
        seen.add((partition, offset))
        assert info.reason == original["reason"], name
        assert msg.key() == original["key"] and msg.value() == original["value"], name
        assert info.consumer_group == topics.topic_prefix + "shipment-tracker"
        assert info.error_class == "*contract.PoisonError" and info.error_message and info.traceback, name
        assert info.timestamp_ms == original["timestamp"], name
        kept = [(k, v) for k, v in original.get("headers") or [] if not k.startswith("dlq.")]
        assert headers[:len(kept)] == kept, f"original headers first, unchanged, without dlq.*: {name}"
        assert [k for k, _ in headers[len(kept):]] == DLQ_HEADERS, name


def shipments_id(order_id: str) -> str:
    """The shipment id the tracker derives, recomputed here: "S-" + 16 hex of SHA-256("mbyn-shipment:" + id)."""
    import hashlib

    return "S-" + hashlib.sha256(f"mbyn-shipment:{order_id}".encode()).hexdigest()[:16]
