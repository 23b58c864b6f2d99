"""Consumer runtime pieces that need no broker: decoding and poison classification, batches, headers,
and the warehouse helpers the sink-mode consumers rely on (on a temporary SQLite file)."""

from __future__ import annotations

import io
import json
from concurrent.futures import Future
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import TopicPartition

from mbyn.consumers.contract import Batch, Record, StreamConsumer, decode_envelope
from mbyn.consumers.dead_letter_sender import dead_letter_reason
from mbyn.consumers.runtime import ConsumerLoop
from mbyn.contracts.envelope import MAX_VALUE_BYTES, make_envelope
from mbyn.contracts.headers import decode_headers, encode_headers
from mbyn.errors import PoisonRecordError, WarehouseError
from mbyn.kafka.producer import DeliveryError
from mbyn.settings import load_settings
from mbyn.warehouse import init_schema, load_offsets, make_engine, store_offsets, upsert, utc_now
from mbyn.warehouse.schema import fx_rates


def click() -> dict:
    return dict(make_envelope("page_view", {"session_id": "s1", "customer_id": "C000001", "page": "/",
                                            "country": "DE", "device": "mobile"}, "test"))


def record(topic: str, value: bytes | None, key: bytes | None = b"k", offset: int = 0, partition: int = 0) -> Record:
    return Record(topic, "p-" + topic, partition, offset, key, value, [("h", b"v")], 1)


def test_a_valid_envelope_decodes_and_a_tombstone_on_a_compacted_topic_is_none():
    env = click()
    assert decode_envelope(record("clickstream", json.dumps(env).encode())) == env
    assert decode_envelope(record("customers", None, key=b"C000001")) is None


@pytest.mark.parametrize(("topic", "key", "value", "reason"), [
    ("clickstream", b"k", b"\x00\xff not json", "not_json"),
    ("clickstream", b"k", b'{"half": ', "not_json"),
    ("clickstream", b"k", b"[1, 2]", "schema_violation"),
    ("clickstream", b"k", b'{"pad": "' + b"x" * MAX_VALUE_BYTES + b'"}', "oversize"),
    ("clickstream", None, b"{}", "null_key"),
    ("clickstream", b"k", None, "null_value"),
    ("customers", None, None, "null_key"),
])
def test_poison_is_classified(topic, key, value, reason):
    with pytest.raises(PoisonRecordError) as info:
        decode_envelope(record(topic, value, key=key))
    assert info.value.reason == reason
    assert dead_letter_reason(info.value) == reason


def test_schema_violations_and_unknown_versions_are_poison_with_the_reference_message():
    env = click()
    env["payload"]["device"] = "fridge"
    with pytest.raises(PoisonRecordError) as info:
        decode_envelope(record("clickstream", json.dumps(env).encode()))
    assert info.value.reason == "schema_violation" and "payload/device" in str(info.value)
    env = {**click(), "schema_version": 2}
    with pytest.raises(PoisonRecordError) as info:
        decode_envelope(record("clickstream", json.dumps(env).encode()))
    assert info.value.reason == "unknown_schema_version"
    assert dead_letter_reason(ValueError("x")) == "unexpected_error"


def test_batch_groups_per_partition_and_lists_offsets():
    records = [record("orders", b"{}", offset=o, partition=p) for o, p in ((5, 0), (9, 1), (6, 0))]
    batch = Batch(records, {("p-orders", 0): 7, ("p-orders", 1): 12})
    groups = batch.by_partition()
    assert [r.offset for r in groups[("p-orders", 0)]] == [5, 6]
    assert [(tp.topic, tp.partition, tp.offset) for tp in batch.offsets()] == [("p-orders", 0, 7), ("p-orders", 1, 12)]
    assert list(batch.by_topic()) == ["orders"] and len(batch) == 3


def test_headers_round_trip_including_binary_and_null_values():
    headers = [("a", b"\x00\xff"), ("b", None), ("a", b"second")]
    assert decode_headers(encode_headers(headers)) == headers
    assert decode_headers(None) == []
    assert record("orders", b"").header("h") == "v"


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    init_schema(engine)
    init_schema(engine)  # idempotent
    yield engine
    engine.dispose()


def test_upsert_collapses_duplicate_keys_and_updates_on_conflict(engine):
    row = {"currency": "USD", "rate_date": date(2026, 1, 2), "event_id": "e", "loaded_at": utc_now()}
    with engine.begin() as conn:
        assert upsert(conn, fx_rates, [{**row, "rate_per_eur": 1.0}, {**row, "rate_per_eur": 1.1}],
                      ["currency", "rate_date"]) == 1
        upsert(conn, fx_rates, [{**row, "rate_per_eur": 1.2}], ["currency", "rate_date"])
        upsert(conn, fx_rates, [{**row, "rate_per_eur": 9.9}], ["currency", "rate_date"], update=[])
    with engine.connect() as conn:
        assert conn.execute(sa.select(fx_rates.c.rate_per_eur)).all() == [(1.2,)]


def test_stored_offsets_only_move_forward(engine):
    with engine.begin() as conn:
        store_offsets(conn, "g", {("t", 0): 10, ("t", 1): 3})
        store_offsets(conn, "g", {("t", 0): 4, ("t", 1): 8})  # a late zombie write for partition 0
        store_offsets(conn, "other", {("t", 0): 1})
    with engine.connect() as conn:
        assert load_offsets(conn, "g") == {("t", 0): 10, ("t", 1): 8}
        assert load_offsets(conn, "g", [("t", 1)]) == {("t", 1): 8}


def test_read_only_engine_refuses_writes(engine, tmp_path):
    reader = make_engine(f"sqlite:///{tmp_path / 'wh.db'}", read_only=True)
    try:
        with reader.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 0
        with pytest.raises(sa.exc.OperationalError), reader.begin() as conn:
            conn.execute(sa.text("DELETE FROM orders"))
    finally:
        reader.dispose()


def test_unsupported_database_names_the_setting():
    with pytest.raises(WarehouseError, match="MBYN_WAREHOUSE_URL"):
        make_engine("mysql://x@localhost/db")


class _Queue:
    """consume(n, timeout) over a list of waiting messages, recording the calls."""

    def __init__(self, waiting: int) -> None:
        self.waiting = list(range(waiting))
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list[int]:
        self.calls.append((n, timeout))
        taken, self.waiting = self.waiting[:min(n, 3)], self.waiting[min(n, 3):]  # at most 3 per call
        return taken


@pytest.mark.parametrize(("waiting", "handed_over"), [(0, 0), (1, 1), (5, 5), (20, 8)])
def test_a_batch_is_handed_over_as_soon_as_nothing_more_is_waiting(waiting, handed_over):
    class Sink(StreamConsumer):
        name = "sink"
        topics = ("orders",)
        batch_size = 8
        batch_timeout = 0.25

    loop = ConsumerLoop(Sink(), load_settings())
    loop._kafka = queue = _Queue(waiting)  # type: ignore[assignment]
    assert len(loop._poll()) == handed_over
    assert queue.calls[0] == (1, 0.25), "only the first record is waited for"
    assert all(timeout == 0 for _, timeout in queue.calls[1:]), "then only what is already waiting is taken"
    assert len(queue.waiting) == waiting - handed_over


class _Message:
    """The bits of a confluent_kafka.Message the runtime reads."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"


@pytest.mark.parametrize(("revoked", "kept"), [([0, 1], [(1, 7)]), ([1], [(0, 5), (1, 7)])])
def test_records_polled_before_a_rebalance_inside_the_drain_are_not_handed_over(revoked, kept):
    """The drain's consume(n, 0) can run on_revoke (eager: every partition; cooperative: some). on_revoke was told
    that everything polled is processed, and the partitions' positions go back to the committed/stored offsets: a
    record fetched by an earlier consume call of the same poll must not be handed over afterwards (it would be
    written for a partition another copy owns, then read and written again). What the call that ran the callback
    returned is after the rebalance (librdkafka drops outdated records inside one call) and stays."""
    class Sink(StreamConsumer):
        name = "sink"
        topics = ("orders",)
        batch_size = 10

    loop = ConsumerLoop(Sink(), load_settings())

    class Kafka:
        calls = 0

        def consume(self, n: int, timeout: float) -> list[_Message]:
            self.calls += 1
            if self.calls == 1:
                return [_Message("p-orders", 0, 5)]
            if self.calls == 2:
                loop._on_revoke(self, [TopicPartition("p-orders", p) for p in revoked])  # type: ignore[arg-type]
                return [_Message("p-orders", 1, 7)]
            return []

    loop._kafka = Kafka()  # type: ignore[assignment]
    assert [(m.partition(), m.offset()) for m in loop._poll()] == kept


def test_a_failed_dead_letter_fails_the_flush_of_the_other_thread_too():
    """With overlap the loop (decoding) and the writer thread (a record the sink refused) share one dead-letter
    producer, whose failures are counted per producer, not per thread: the flush that sees a failure may be the
    other thread's. The writer's own flush must still fail, or it stores offsets past its lost dead letter."""
    class Sink(StreamConsumer):
        name = "sink"
        topics = ("orders",)

    class Producer:
        failed = 0

        def flush_or_raise(self) -> None:
            failed, self.failed = self.failed, 0
            if failed:
                raise DeliveryError(f"{failed} record(s) failed")

    loop = ConsumerLoop(Sink(), load_settings())
    loop._dlq = producer = Producer()  # type: ignore[assignment]
    producer.failed = 1  # the writer's dead letter was refused; the loop's flush serves the delivery report
    with pytest.raises(DeliveryError):
        loop._flush_dead_letters()  # the loop's (decode) flush
    with pytest.raises(DeliveryError):
        loop._flush_dead_letters()  # the writer's flush, before it writes past the record


def test_records_polled_while_the_write_before_failed_are_counted_abandoned():
    """Overlap: batch N+1 is fetched while N is written; when N is abandoned (stop during an outage) N+1 is left
    uncommitted too and the summary counts it (consumed = processed + dead_lettered + abandoned)."""
    class Sink(StreamConsumer):
        name = "sink"
        topics = ("orders",)
        overlap = True

        def decode(self, record: Record) -> Any:
            return {}

    loop = ConsumerLoop(Sink(), load_settings())
    failed: Future[bool] = Future()
    failed.set_result(False)
    loop.counters.abandoned = 3  # what the writer counted for batch N
    loop._in_flight = (failed, Batch([record("orders", b"{}")] * 3, {("p-orders", 0): 3}))
    records = [record("orders", b"{}", offset=o) for o in (3, 4)]
    loop.counters.consumed += 5
    assert loop._handle(records) is False
    assert loop.counters.abandoned == 5 and loop.counters.batches == 0


def test_a_batch_log_that_cannot_be_written_does_not_fail_a_committed_batch(engine, tmp_path):
    """The batch log is written after COMMIT: a full disk there must not make the runtime treat the committed
    batch as failed (record by record, each one committed again and dead-lettered as unexpected_error)."""
    from mbyn.consumers.warehouse_loader import WarehouseLoader
    from mbyn.warehouse.rows import ROWS

    env = click()
    loader = WarehouseLoader(load_settings(), engine=engine, batch_log=tmp_path / "b.jsonl")

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(28, "No space left on device")

    loader._batch_log = Full()
    rec = Record("clickstream", "p-clickstream", 0, 0, b"k", json.dumps(env).encode(), [], 1, env)
    assert "clickstream" in ROWS
    loader.process_batch(Batch([rec], {("p-clickstream", 0): 1}))  # must not raise
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM clicks")).scalar() == 1
        assert load_offsets(conn, loader.group_id) == {("p-clickstream", 0): 1}
    assert loader.rows_written == 1


class _Committer:
    """commit(offsets=, asynchronous=) recording each call; assign/close for the rebalance and stop paths."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.metadata: list[dict[tuple[str, int], str | None]] = []  # per call: the commit metadata

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition] | None:
        self.calls.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))
        self.metadata.append({(tp.topic, tp.partition): tp.metadata for tp in offsets})
        return None if asynchronous else offsets

    def close(self) -> None:
        pass


def test_sink_mode_commits_asynchronously_and_confirms_before_a_revoke_and_at_the_stop():
    """"sink" mode: the Kafka commit is informational (the offsets that count are in the sink), so the loop does
    not wait for it per batch; but before partitions go to another copy, and at the end of the run, the latest
    offsets are committed synchronously — Kafka's committed offsets then equal what the sink wrote."""
    class Sink(StreamConsumer):
        name = "sink"
        topics = ("orders",)
        commit_mode = "sink"

    loop = ConsumerLoop(Sink(), load_settings())
    loop._kafka = kafka = _Committer()  # type: ignore[assignment]
    for p0, p1 in ((5, 3), (9, 4)):
        batch = Batch([], {("o", 0): p0, ("o", 1): p1})
        loop._commit(batch)
    assert kafka.calls == [({("o", 0): 5, ("o", 1): 3}, True), ({("o", 0): 9, ("o", 1): 4}, True)]
    loop._on_revoke(kafka, [TopicPartition("o", 1)])  # type: ignore[arg-type]
    assert kafka.calls[-1] == ({("o", 1): 4}, False), "the revoked partition's latest offset, synchronously"
    loop._close_kafka()
    assert kafka.calls[-1] == ({("o", 0): 9}, False), "at the stop: the rest, synchronously"
    assert len(kafka.calls) == 4 and loop.counters.commit_failures == 0


def test_a_batch_the_consumer_dropped_is_not_reported_as_held():
    """A sink that drops a batch (fenced by another copy's offsets: ``offsets_to_commit`` is empty) kept none of its
    records. The next commit of that partition — here the synchronous one at the stop — must not claim them as
    held by design (``mbyn:next=``): the lag monitor would show them as held, not waiting, and time the lag at the
    wrong record."""
    class Fenced(StreamConsumer):
        name = "fenced"
        topics = ("orders",)
        commit_mode = "sink"
        drop = False

        def offsets_to_commit(self, batch: Batch) -> dict[tuple[str, int], int]:
            return {} if self.drop else dict(batch.next_offsets)

    app = Fenced()
    loop = ConsumerLoop(app, load_settings())
    loop._kafka = kafka = _Committer()  # type: ignore[assignment]
    loop._commit(Batch([], {("o", 0): 100}))
    app.drop = True
    loop._commit(Batch([], {("o", 0): 150}))  # dropped: nothing stored, nothing committed
    loop._close_kafka()
    assert kafka.calls[-1] == ({("o", 0): 100}, False)
    assert kafka.metadata[-1] == {("o", 0): ""}, "nothing is held: the dropped records were never kept"
