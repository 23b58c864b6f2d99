"""The consumer runtime against the real broker: batches, commits, dead letters, retries, stop."""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mbyn.consumers.contract import Batch, StreamConsumer
from mbyn.consumers.runtime import run_consumer
from mbyn.contracts.dead_letters import parse_headers
from mbyn.contracts.envelope import make_envelope
from mbyn.errors import PoisonRecordError, SinkRejectedError, SinkUnavailableError
from mbyn.kafka.clients import client_config
from mbyn.kafka.producer import TopicProducer
from mbyn.process import StopFlag
from mbyn.settings import Settings
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration


def order(n: int, amount: float = 10.0) -> dict[str, Any]:
    payload = {"order_id": f"O-{n:05d}", "customer_id": "C000001", "session_id": "s1", "country": "DE",
               "currency": "EUR", "amount": amount,
               "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": amount}]}
    return dict(make_envelope("order_placed", payload, "test"))


def produce_orders(settings: Settings, count: int, poison: list[tuple[bytes | None, bytes]] = (),
                   amounts: dict[int, float] | None = None) -> list[str]:
    """``count`` valid orders (+ raw poison records); returns the valid event ids. Order 7 costs 999."""
    producer = TopicProducer("test", settings)
    ids = []
    amounts = {7: 999.0} if amounts is None else amounts
    for n in range(count):
        env = order(n, amount=amounts.get(n, 10.0))
        assert producer.send("orders", env, key=env["payload"]["order_id"])
        ids.append(env["event_id"])
    for key, value in poison:
        producer.send_raw(settings.topic_prefix + "orders", value, key, [("origin", b"poison-test")])
    producer.flush_or_raise()
    return ids


class Collector(StreamConsumer):
    """Keeps what it processed in memory; ``transient_failures`` / ``poison_amount`` simulate sink trouble."""

    name: ClassVar[str] = "collector"
    topics: ClassVar[tuple[str, ...]] = ("orders",)
    batch_timeout = 0.2

    def __init__(self, transient_failures: int = 0, poison_amount: float | None = None,
                 failures: dict[float, BaseException] | None = None, broken_writes: int = 0) -> None:
        self.seen: list[str] = []
        self.batches: list[Batch] = []
        self.transient_failures = transient_failures
        self.poison_amount = poison_amount
        self.failures = failures or {}  # amount → the error processing a record with that amount raises
        self.broken_writes = broken_writes  # every write fails (empty ones too) this many times
        self.writes = 0

    def process_batch(self, batch: Batch) -> None:
        self.writes += 1
        if self.broken_writes:
            self.broken_writes -= 1
            raise RuntimeError("the sink's table is gone (simulated)")
        if batch.records and self.transient_failures:
            self.transient_failures -= 1
            raise SinkUnavailableError("sink is down (simulated)")
        for r in batch.records:  # check first: all-or-nothing
            if self.poison_amount is not None and r.data["payload"]["amount"] == self.poison_amount:
                raise PoisonRecordError("amount_rule", f"amount {self.poison_amount} is refused")
            failure = self.failures.get(r.data["payload"]["amount"])
            if failure is not None:
                raise failure
        self.seen += [r.data["event_id"] for r in batch.records]
        self.batches.append(batch)


def committed(settings: Settings, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": "probe-" + uuid.uuid4().hex})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        return {p: o for p, o in ends.items() if o > 0}
    finally:
        consumer.close()


def test_batches_commits_and_dead_letters(topics):
    poison = [(b"k-notjson", b"this is not json"), (None, b'{"event_id": 1}'),
              (b"k-schema", b'{"event_id": "x", "schema_version": 1}')]
    ids = produce_orders(topics, 300, poison)
    app = Collector()
    summary = run_consumer(app, topics, idle_exit=3)

    assert sorted(app.seen) == sorted(ids), "every valid record processed exactly once"
    assert summary["consumed"] == 303 and summary["processed"] == 300 and summary["dead_lettered"] == 3
    assert summary["dead_letter_reasons"] == {"not_json": 1, "null_key": 1, "schema_violation": 1}
    assert summary["stopped_by"] == "idle" and summary["group"] == topics.topic_prefix + "collector"
    for batch in app.batches:  # grouped per partition, offsets in order, next offsets cover the batch
        for (topic, partition), records in batch.by_partition().items():
            assert [r.offset for r in records] == sorted(r.offset for r in records)
            assert batch.next_offsets[(topic, partition)] > records[-1].offset

    physical = topics.topic_prefix + "orders"
    assert committed(topics, summary["group"], physical, 6) == end_offsets(topics, physical, 6)

    letters = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=3)
    assert len(letters) == 3
    by_value = {r.value: r for r in letters}
    for key, value in poison:
        letter = by_value[value]
        assert letter.key == key
        assert letter.headers["origin"] == b"poison-test", "original headers are kept"
        assert letter.headers["dlq.topic"] == physical.encode()
        assert letter.headers["dlq.consumer_group"] == summary["group"].encode()
        assert letter.headers["dlq.error_class"] == b"PoisonRecordError"
        assert int(letter.headers["dlq.offset"]) >= 0 and int(letter.headers["dlq.partition"]) in range(6)
        assert int(letter.headers["dlq.timestamp"]) > 0
        assert letter.headers["dlq.error_message"]
    assert by_value[b"this is not json"].headers["dlq.reason"] == b"not_json"


def test_transient_sink_errors_retry_the_same_batch(topics):
    ids = produce_orders(topics, 100)
    app = Collector(transient_failures=2)
    summary = run_consumer(app, topics, idle_exit=3)
    assert summary["retries"] == 2 and summary["dead_lettered"] == 0
    assert sorted(app.seen) == sorted(ids), "retried, not lost and not duplicated"


def test_a_record_failing_processing_is_isolated_and_dead_lettered(topics):
    ids = produce_orders(topics, 50)  # order 7 has amount 999
    app = Collector(poison_amount=999.0)
    summary = run_consumer(app, topics, idle_exit=3)
    assert summary["dead_lettered"] == 1 and summary["dead_letter_reasons"] == {"amount_rule": 1}
    assert sorted(app.seen) == sorted(ids[:7] + ids[8:])
    letters = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=1)
    assert [r.json()["payload"]["order_id"] for r in letters] == ["O-00007"]
    physical = topics.topic_prefix + "orders"
    assert committed(topics, summary["group"], physical, 6) == end_offsets(topics, physical, 6)


def test_stop_during_an_outage_commits_nothing_and_the_next_run_gets_everything(topics):
    ids = produce_orders(topics, 60)
    stop = StopFlag()
    down = Collector(transient_failures=10**6)
    timer = threading.Timer(4.0, stop.set, args=("test",))
    timer.start()
    try:
        summary = run_consumer(down, topics, stop=stop, idle_exit=30)
    finally:
        timer.cancel()
    assert summary["abandoned"] > 0 and summary["processed"] == 0 and summary["stopped_by"] == "test"
    assert committed(topics, summary["group"], topics.topic_prefix + "orders", 6) == {}

    up = Collector()
    run_consumer(up, topics, idle_exit=3)
    assert sorted(up.seen) == sorted(ids)


def test_any_error_processing_one_record_dead_letters_that_record_only(topics):
    """Not an allow-list of exception types: what fails for one record alone is that record's dead letter."""
    ids = produce_orders(topics, 80, amounts={7: 999.0, 30: 777.0, 55: 555.0})
    failures = {999.0: KeyError("payload/amount"), 777.0: SinkRejectedError("value too long for type (simulated)"),
                555.0: ZeroDivisionError("division by zero")}
    app = Collector(failures=failures)
    summary = run_consumer(app, topics, idle_exit=3)

    assert summary["dead_letter_reasons"] == {"unexpected_error": 2, "sink_rejected": 1}
    assert sorted(app.seen) == sorted(ids[:7] + ids[8:30] + ids[31:55] + ids[56:])
    letters = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=3)
    by_order = {r.json()["payload"]["order_id"]: parse_headers(list(r.headers.items())) for r in letters}
    assert {k: (v.reason, v.error_class) for k, v in by_order.items()} == {
        "O-00007": ("unexpected_error", "KeyError"), "O-00030": ("sink_rejected", "SinkRejectedError"),
        "O-00055": ("unexpected_error", "ZeroDivisionError")}
    for info in by_order.values():
        assert info.traceback and "process_batch" in info.traceback, "a short traceback says where it failed"
        assert info.consumer_group == summary["group"] and info.coordinates is not None
    physical = topics.topic_prefix + "orders"
    assert committed(topics, summary["group"], physical, 6) == end_offsets(topics, physical, 6)


def test_a_decode_hook_raising_anything_dead_letters_the_record(topics):
    ids = produce_orders(topics, 20)

    class PickyDecoder(Collector):
        def decode(self, record: Any) -> Any:
            data = super().decode(record)
            if data["payload"]["amount"] == 999.0:
                raise RecursionError("maximum recursion depth exceeded (simulated)")
            return data

    app = PickyDecoder()
    summary = run_consumer(app, topics, idle_exit=3)
    assert summary["dead_letter_reasons"] == {"unexpected_error": 1}
    assert sorted(app.seen) == sorted(ids[:7] + ids[8:])


def test_a_sink_failing_for_every_write_is_retried_never_dead_lettered(topics):
    """An empty write failing too means the sink is broken, not the data: back off, commit nothing, keep all."""
    ids = produce_orders(topics, 40)
    app = Collector(broken_writes=4)
    summary = run_consumer(app, topics, idle_exit=6)
    assert summary["dead_lettered"] == 0 and summary["retries"] >= 2
    assert sorted(app.seen) == sorted(ids), "everything written once the sink came back"
    physical = topics.topic_prefix + "orders"
    assert committed(topics, summary["group"], physical, 6) == end_offsets(topics, physical, 6)


def test_an_outage_outliving_the_retry_timeout_is_never_blamed_on_the_records(topics):
    """Only non-empty writes fail (like the order-enricher's output being down): the probe passes, yet a
    SinkUnavailableError is an outage — retried, never a reason to dead-letter the batch's records."""
    ids = produce_orders(topics, 30)
    app = Collector(transient_failures=4)
    app.retry_timeout_s = 0.5
    summary = run_consumer(app, topics, idle_exit=6)
    assert summary["dead_lettered"] == 0 and summary["retries"] >= 4
    assert sorted(app.seen) == sorted(ids)


def test_a_value_too_large_to_send_on_is_dead_lettered_with_its_fingerprint(topics):
    """gzip lets a 6 MiB value onto the topic (the broker checks the compressed size); no producer can send it
    on, so the dead letter carries its length and SHA-256 instead of the bytes — the consumer carries on."""
    huge = b"[" + b" " * (6 * 1024 * 1024) + b"]"
    producer = Producer({**client_config(topics), "compression.type": "gzip", "message.max.bytes": 100_000_000})
    producer.produce(topics.topic_prefix + "orders", value=huge, key=b"huge")
    assert producer.flush(30) == 0
    ids = produce_orders(topics, 5)
    app = Collector()
    summary = run_consumer(app, topics, idle_exit=4)
    assert summary["dead_letter_reasons"] == {"oversize": 1} and sorted(app.seen) == sorted(ids)
    [letter] = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", expect=1)
    assert letter.key == b"huge" and letter.value is None
    fingerprint = f"{len(huge)} bytes, sha256 {hashlib.sha256(huge).hexdigest()}"
    assert letter.headers["dlq.value_dropped"] == fingerprint.encode()
