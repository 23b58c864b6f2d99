"""warehouse-loader against the real broker and a real warehouse (SQLite file and PostgreSQL).

Exactly-once is checked by event id: the warehouse must hold every valid produced record once, none
missing, while loader copies are killed, restarted, join and leave; poison records end in quarantine.
Because event ids are keys, that check alone cannot see a batch written twice: a loader killed between
its rows and its offsets must also leave every row's write counter at 1 and earlier rows untouched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.consumers.dead_letters import DeadLetterSink
from mbyn.consumers.runtime import run_consumer
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.contracts.envelope import MAX_VALUE_BYTES, make_envelope, validate
from mbyn.errors import ContractError
from mbyn.kafka.producer import TopicProducer
from mbyn.process import StopFlag
from mbyn.settings import Settings
from mbyn.sources.generator import shop_events
from tests.helpers.crash import run_until_killed
from tests.helpers.kafka import end_offsets, read_all
from tests.helpers.processes import reap, stop
from tests.helpers.warehouse import count_writes, row_writes
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration

LOADER_GROUP = "warehouse-loader"


warehouse = warehouse_fixture(session_timeout_s=6)


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def stored_offsets(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    rows = query(settings, f"SELECT topic, partition, next_offset FROM kafka_offsets "
                           f"WHERE consumer_group = '{settings.topic_prefix}{group}'")
    return {(t, int(p)): int(o) for t, p, o in rows}


def valid_event_ids(settings: Settings, logical: str) -> tuple[set[str], int]:
    """Event ids of the records on a topic that satisfy the contract (checked here, not by the loader)."""
    ids: set[str] = set()
    poison = 0
    for r in read_all(settings.bootstrap(), settings.topic_prefix + logical):
        try:
            value = json.loads(r.value)
            validate(logical, value)
        except (ValueError, ContractError):  # not UTF-8 / not JSON / breaks the schema
            poison += 1
            continue
        ids.add(value["event_id"])
    return ids, poison


# In-process runs -----------------------------------------------------------------------------------

def send_every_topic(settings: Settings) -> dict[str, Any]:
    """A few records on each of the loader's topics, with a duplicate click and a customer tombstone."""
    producer = TopicProducer("test", settings)
    events = list(islice(shop_events(seed=11), 400))
    clicks = [e for e in events if e.topic == "clickstream"]
    orders = [e for e in events if e.topic == "orders"]
    for e in events:
        assert producer.send(e.topic, e.value, e.key)
    assert producer.send("clickstream", clicks[0].value, clicks[0].key), "a re-send of the same event"
    now = "2026-11-25T10:00:00Z"
    for n in (1, 2, 3):
        cid = f"C00000{n}"
        producer.send("customers", dict(make_envelope("customer_upserted", {
            "customer_id": cid, "name": f"Name {n}", "email": f"c{n}@example.com", "country": "DE",
            "segment": "consumer", "updated_at": now}, "test")), cid)
    producer.send("customers", None, "C000002")  # deleted
    producer.send("inventory", dict(make_envelope("stock_level", {
        "sku": "SKU-00001", "category": "books", "quantity": 5, "unit_price": 9.5, "location": "DE-1",
        "updated_at": now}, "test")), "SKU-00001")
    for currency, rate in (("USD", 1.08), ("GBP", 0.85)):
        producer.send("fx-rates", dict(make_envelope("fx_rate", {"currency": currency, "rate_date": "2026-11-24",
                                                                   "rate_per_eur": rate}, "test")), currency)
    producer.send("payments", dict(make_envelope("payment_authorized", {
        "payment_id": "P-1", "order_id": orders[0].key, "amount": 1.0, "currency": "EUR", "status": "authorized",
        "method": "card"}, "test")), orders[0].key)
    producer.send("shipments", dict(make_envelope("shipment_created", {
        "shipment_id": "S-1", "order_id": orders[0].key, "status": "created", "carrier": "DHL"}, "test")), "S-1")
    producer.send("alerts", dict(make_envelope("fraud_alert", {
        "alert_id": "A-1", "kind": "order_velocity", "severity": "high", "customer_id": "C000001",
        "details": "5 orders in 1 minute"}, "test")), "A-1")
    producer.flush_or_raise()
    return {"clicks": {e.value["event_id"] for e in clicks}, "orders": {e.key for e in orders},
            "items": sum(len(e.value["payload"]["items"]) for e in orders)}


def test_loader_loads_every_topic_once_and_resumes_from_stored_offsets(warehouse):
    sent = send_every_topic(warehouse)
    first = run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=3)
    assert first["dead_lettered"] == 0 and first["processed"] == first["consumed"]

    assert {r[0] for r in query(warehouse, "SELECT event_id FROM clicks")} == sent["clicks"]
    assert query(warehouse, "SELECT count(*) FROM clicks") == [(len(sent["clicks"]),)], "the re-send is loaded once"
    assert {r[0] for r in query(warehouse, "SELECT order_id FROM orders")} == sent["orders"]
    assert query(warehouse, "SELECT count(*) FROM order_items") == [(sent["items"],)]
    assert sorted(query(warehouse, "SELECT customer_id, deleted FROM customers")) == [
        ("C000001", False), ("C000002", True), ("C000003", False)]
    assert query(warehouse, "SELECT sku, quantity FROM inventory") == [("SKU-00001", 5)]
    assert sorted(r[0] for r in query(warehouse, "SELECT currency FROM fx_rates")) == ["GBP", "USD"]
    assert query(warehouse, "SELECT count(*) FROM payments") == [(1,)]
    assert query(warehouse, "SELECT shipment_id, status FROM shipments") == [("S-1", "created")]
    assert query(warehouse, "SELECT alert_id, status FROM alerts") == [("A-1", "open")]
    topics = list(WarehouseLoader.topics)
    assert stored_offsets(warehouse, LOADER_GROUP) == end_offsets(warehouse, topics)

    second = run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=2)
    assert second["consumed"] == 0, "a restart seeks to the offsets stored in the warehouse"
    assert query(warehouse, "SELECT count(*) FROM clicks") == [(len(sent["clicks"]),)]


def test_poison_of_every_kind_ends_in_quarantine(warehouse):
    producer = TopicProducer("test", warehouse)
    good = dict(make_envelope("order_placed", {
        "order_id": "O-good", "customer_id": "C000001", "session_id": "s", "country": "DE", "currency": "EUR",
        "amount": 3.0, "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": 3.0}]},
        "test"))
    producer.send("orders", good, "O-good")
    orders = warehouse.topic_prefix + "orders"
    v2 = {**good, "event_id": "00000000-0000-4000-8000-000000000002", "schema_version": 2}
    broken = {**good, "payload": {**good["payload"], "amount": "three"}}
    poison = {
        "not_json": (b"O-1", b"\xff not json"),
        "schema_violation": (b"O-2", json.dumps(broken).encode()),
        "oversize": (b"O-3", b'{"pad": "' + b"x" * (MAX_VALUE_BYTES + 10) + b'"}'),
        "null_key": (None, json.dumps(good).encode()),
        "unknown_schema_version": (b"O-5", json.dumps(v2).encode()),
    }
    for key, value in poison.values():
        producer.send_raw(orders, value, key, [("trace_id", b"t-1")])
    producer.flush_or_raise()

    loaded = run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=3)
    assert loaded["dead_letter_reasons"] == {reason: 1 for reason in poison}
    run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=3)
    again = run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=2)
    assert again["consumed"] == 0

    assert query(warehouse, "SELECT order_id FROM orders") == [("O-good",)]
    engine = sa.create_engine(warehouse.warehouse())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text('SELECT reason, topic, "partition", "offset", "key", value, error_class, '
                                        "consumer_group, headers FROM quarantine")).all()
    finally:
        engine.dispose()
    assert sorted(r.reason for r in rows) == sorted(poison)
    for row in rows:
        key, value = poison[row.reason]
        assert (row.key, bytes(row.value)) == (key, value), row.reason
        assert row.topic == orders and row.partition in range(6) and row.offset >= 0
        assert row.error_class == "PoisonRecordError"
        assert row.consumer_group == warehouse.topic_prefix + LOADER_GROUP
        assert "trace_id" in row.headers


# Subprocess copies ---------------------------------------------------------------------------------

class Copy:
    """One `mbyn consume warehouse-loader` process with its log file."""

    def __init__(self, name: str, tmp: Path, *extra: str) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        self.out = tmp / f"{name}.out"
        self.starts = 0
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "consume", "warehouse-loader",
                                          "--batch-size", "500", *self.extra], stdout=out, stderr=err)

    def kill(self) -> None:
        assert self.proc is not None
        reap(self.proc, timeout=30)

    def terminate(self, timeout: float) -> dict[str, Any]:
        """SIGTERM (a clean stop), then what `wait` returns."""
        assert self.proc is not None
        stop(self.proc, signal.SIGTERM, timeout=timeout)
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        assert code == 0, f"{self.name} exited {code}:\n{self.log.read_text()[-3000:]}"
        return json.loads(self.out.read_text().strip().splitlines()[-1])


def produce(count: int, seed: int, rate: int | None = None, invalid_ratio: float = 0.0) -> subprocess.Popen[str]:
    """The clickstream generator as a subprocess (its JSON summary is the last stdout line)."""
    limits = ["--rate", str(rate)] if rate else []
    return subprocess.Popen([sys.executable, "-m", "mbyn.cli", "produce", "clickstream", "--count", str(count),
                             "--seed", str(seed), "--invalid-ratio", str(invalid_ratio), *limits],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def loaded_ids(settings: Settings) -> list[str]:
    return [r[0] for r in query(settings, "SELECT event_id FROM clicks UNION ALL SELECT event_id FROM orders")]


def rows_loaded(settings: Settings) -> int:
    try:
        return len(loaded_ids(settings))
    except sa.exc.SQLAlchemyError:
        return 0  # the schema is not there yet


def assert_exactly_once(settings: Settings) -> None:
    clicks, _ = valid_event_ids(settings, "clickstream")
    orders, _ = valid_event_ids(settings, "orders")
    ids = loaded_ids(settings)
    assert len(ids) == len(set(ids)), "no event id twice"
    assert set(ids) == clicks | orders, "none missing, none extra"
    assert stored_offsets(settings, LOADER_GROUP) == end_offsets(settings, ["clickstream", "orders"])


def test_two_copies_killed_and_restarted_load_exactly_once(warehouse, tmp_path):
    producer = produce(6000, seed=5, rate=1500, invalid_ratio=0.01)
    a = Copy("a", tmp_path, "--idle-exit", "5", "--instance-id", "a")
    b = Copy("b", tmp_path, "--idle-exit", "5", "--instance-id", "b")
    a.start()
    b.start()
    kills = 0
    try:
        for _ in range(3):
            time.sleep(2.0)
            b.kill()
            kills += 1 if rows_loaded(warehouse) < 6000 else 0
            b.start()
        summary = json.loads(producer.communicate(timeout=120)[0].strip().splitlines()[-1])
        assert producer.returncode == 0 and summary["poison"] > 0
        a.wait()
        b.wait()
    finally:
        reap(a.proc, b.proc, producer)  # b.proc is a new process after each restart
    assert kills >= 1, "at least one copy was killed while there was still work"
    assert_exactly_once(warehouse)

    letters = run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=3)
    reasons = query(warehouse, "SELECT reason, count(*) FROM quarantine GROUP BY reason")
    assert sum(n for _, n in reasons) == summary["poison"], "every poison record quarantined once"
    assert {r for r, _ in reasons} <= {"not_json", "schema_violation", "unknown_schema_version"}
    assert letters["consumed"] >= summary["poison"]  # a killed copy may have dead-lettered a record twice


def test_a_copy_joining_and_leaving_keeps_exactly_once(warehouse, tmp_path):
    # Produces until b has joined and left (stopped below): b must find records arriving however long the
    # copies take to start on a busy machine.
    producer = produce(100_000, seed=8, rate=800)
    a = Copy("a", tmp_path, "--idle-exit", "5")
    b = Copy("b", tmp_path)
    a.start()
    try:
        deadline = time.monotonic() + 60
        while "assigned" not in a.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)  # a must own the partitions before b joins, however slow the machine
        b.start()  # joins: the group rebalances
        deadline = time.monotonic() + 30
        while "assigned" not in b.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)
        b_summary = b.terminate(60)  # leaves: the group rebalances again
        stop(producer, signal.SIGTERM, timeout=120)  # a clean stop: it flushes what it has sent
        a_summary = a.wait()
    finally:
        reap(a.proc, b.proc, producer)
    assert b_summary["processed"] > 0, "the joining copy got partitions and loaded some records"
    assert a_summary["assignments"] >= 3, "assigned at start, when b joined and when b left"
    assert_exactly_once(warehouse)


def test_sigterm_finishes_the_batch_and_exits_with_a_summary(warehouse, tmp_path):
    producer = produce(3000, seed=9)
    producer.communicate(timeout=120)
    copy = Copy("a", tmp_path)
    copy.start()
    deadline = time.monotonic() + 60
    while rows_loaded(warehouse) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    summary = copy.terminate(60)
    assert summary["stopped_by"] == "SIGTERM" and summary["consumer"] == "warehouse-loader"
    stored = stored_offsets(warehouse, LOADER_GROUP)
    assert sum(stored.values()) == rows_loaded(warehouse) == summary["processed"], \
        "offsets stored with the rows = rows loaded (no poison, offsets contiguous)"

    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": warehouse.bootstrap(),
                         "group.id": warehouse.topic_prefix + LOADER_GROUP})
    try:
        parts = [TopicPartition(t, p) for t, p in end_offsets(warehouse, ["clickstream", "orders"])]
        kafka = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        consumer.close()
    assert kafka == stored, "the Kafka commit matches the warehouse's offsets at exit"


def orders_as_loaded(settings: Settings) -> dict[str, tuple[str, ...]]:
    """order_id → (loaded_at, and on PostgreSQL the row version ``xmin``): both change when a row is rewritten."""
    version = ", xmin::text" if settings.warehouse().startswith("postgresql") else ""
    return {r[0]: tuple(str(v) for v in r[1:]) for r in query(settings, f"SELECT order_id, loaded_at{version} "
                                                                        "FROM orders")}


def count_writes_and_produce(warehouse: Settings, seed: int, records: int) -> str:
    """Count every write of clicks/orders rows (``count_writes``), then produce ``records`` clickstream/orders
    events of ``shop_events(seed)``; the warehouse URL."""
    url = warehouse.warehouse()
    count_writes(url, "clicks", ["event_id"])
    count_writes(url, "orders", ["order_id"])
    producer = TopicProducer("test", warehouse)
    for e in islice((e for e in shop_events(seed=seed) if e.topic in ("clickstream", "orders")), records):
        assert producer.send(e.topic, e.value, e.key)
    producer.flush_or_raise()
    return url


def test_a_sigkill_before_the_offsets_are_stored_writes_no_row_twice(warehouse, tmp_path):
    url = count_writes_and_produce(warehouse, seed=13, records=1500)

    # Killed as it stores the offsets of its 4th batch: that batch's rows are written but not committed.
    run_until_killed(["--kill-before-sql", "kafka_offsets", "--after", "4"],
                     ["consume", "warehouse-loader", "--batch-size", "100", "--instance-id", "a", "--idle-exit", "10"],
                     tmp_path / "killed.log")
    before = orders_as_loaded(warehouse)
    assert 0 < rows_loaded(warehouse) < 1500, "killed mid-stream"
    assert sum(stored_offsets(warehouse, LOADER_GROUP).values()) == rows_loaded(warehouse), \
        "the rows of the killed batch are gone with its offsets"

    run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=3, instance_id="a")
    assert_exactly_once(warehouse)
    for table in ("clicks", "orders"):
        writes = row_writes(url, table)
        assert len(writes) == len(query(warehouse, f"SELECT 1 FROM {table}")) > 0
        assert {k: n for k, n in writes.items() if n != 1} == {}, f"{table}: rows written more than once"
    after = orders_as_loaded(warehouse)
    assert {k: after[k] for k in before} == before, "rows loaded before the kill are not rewritten"


class SlowLoader(WarehouseLoader):
    """Holds each batch's transaction open a while after writing its rows: rebalances and stops land while a
    write is in flight (the loader overlaps writing with fetching the next batch)."""

    batch_size = 50

    def __init__(self, settings: Any, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.assignments = 0

    def on_assign(self, runtime: Any, partitions: Any) -> Any:
        self.assignments += 1
        return super().on_assign(runtime, partitions)

    def write(self, conn: Any, batch: Any) -> int:
        written = super().write(conn, batch)
        time.sleep(0.15)
        return written


def test_a_rebalance_and_a_stop_during_an_in_flight_write_lose_and_duplicate_nothing(warehouse, tmp_path):
    url = count_writes_and_produce(warehouse, seed=17, records=900)

    stop_a = StopFlag()
    a_log = tmp_path / "a.jsonl"
    summaries: dict[str, dict[str, Any]] = {}
    a_app = SlowLoader(warehouse, batch_log=a_log)
    a = threading.Thread(target=lambda: summaries.update(a=run_consumer(a_app, warehouse, stop=stop_a,
                                                                        idle_exit=20)))
    a.start()
    deadline = time.monotonic() + 60
    while rows_loaded(warehouse) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # b joins while a writes (a rebalance), then a is stopped while it writes (another rebalance).
    b = threading.Thread(target=lambda: summaries.update(b=run_consumer(SlowLoader(warehouse), warehouse,
                                                                        idle_exit=3)))
    b.start()
    # a is stopped only once b's join reached it (its second assignment): stopping it earlier leaves no rebalance.
    deadline = time.monotonic() + 60
    while summaries.get("a") is None and a_app.assignments < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while (summaries.get("a") is None and "b" not in summaries and time.monotonic() < deadline
           and rows_loaded(warehouse) < 450):
        time.sleep(0.05)
    stop_a.set()
    a.join(60)
    b.join(120)
    assert not a.is_alive() and not b.is_alive()
    assert summaries["a"]["assignments"] >= 2 and summaries["a"]["abandoned"] == 0
    assert_exactly_once(warehouse)
    for table in ("clicks", "orders"):
        writes = row_writes(url, table)
        assert {k: n for k, n in writes.items() if n != 1} == {}, f"{table}: rows written more than once"
    assert summaries["a"]["processed"] + summaries["b"]["processed"] == 900

    # a's batch log: one line per committed batch, each batch's rows sharing its loaded_at, committed after it.
    lines = [json.loads(line) for line in a_log.read_text().splitlines()]
    assert sum(line["records"] for line in lines) == summaries["a"]["processed"]
    assert all(line["committed_at_us"] > line["loaded_at_us"] for line in lines)
    clicks_per_stamp: dict[int, int] = {}
    for (stamp,) in query(warehouse, "SELECT loaded_at FROM clicks"):
        when = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp  # SQLite: text, UTC
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        us = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        clicks_per_stamp[us] = clicks_per_stamp.get(us, 0) + 1
    assert {line["loaded_at_us"]: clicks_per_stamp.get(line["loaded_at_us"], 0) for line in lines} == \
        {line["loaded_at_us"]: line["rows"].get("clicks", 0) for line in lines}, "a batch's rows share its stamp"
