"""Each DAG that can run in-process runs with ``dag.test()`` against the real broker, and its effect is checked.

The incident DAG is not here: its asset watcher needs a triggerer (see ``test_incident_trigger.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mbyn.settings import Settings
from tests.helpers.kafka import read_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _shipment(i: int) -> dict[str, Any]:
    from mbyn.contracts.envelope import make_envelope

    status = ("created", "picked", "in_transit", "delivered")[i % 4]
    return dict(make_envelope(f"shipment_{status}", {"shipment_id": f"S{i // 4:05d}", "order_id": f"O{i // 4:05d}",
                                                     "status": status, "carrier": "DHL"}, "test-tracker"))


def _committed(settings: Settings, topic: str, group: str) -> int:
    """Sum of the offsets ``group`` committed on ``topic`` (what the operator promised it processed)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": group,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def test_clickstream_burst_sends_count_records(airflow_env: Settings, run_dag: Callable[..., Any]) -> None:
    run_dag("clickstream_burst", conf={"count": 300, "rate": None, "seed": 11})

    clicks = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "clickstream")
    orders = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "orders")
    assert len(clicks) + len(orders) == 300, f"{len(clicks)} clicks + {len(orders)} orders"
    assert len(clicks) > 0 and len(orders) > 0
    assert {r.json()["event_type"] for r in orders} == {"order_placed"}


def _refuse_carrier(settings: Settings, carrier: str, refuse: bool = True) -> None:
    """Make the warehouse refuse (or accept again) any ``shipments`` row of ``carrier``: a database-side rule the
    contract cannot know about, like a PostgreSQL column limit (SQLite enforces no lengths, so a trigger)."""
    from mbyn.warehouse.engine import init_schema, warehouse_engine

    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS test_refuse_carrier")
            if refuse:
                conn.exec_driver_sql(f"CREATE TRIGGER test_refuse_carrier BEFORE INSERT ON shipments "
                                     f"WHEN NEW.carrier = '{carrier}' BEGIN SELECT RAISE(ABORT, 'carrier {carrier} "
                                     "is not accepted'); END")
    finally:
        engine.dispose()


def _loaded_event_ids(settings: Settings) -> set[str]:
    from sqlalchemy import select

    from mbyn.warehouse.engine import warehouse_engine
    from mbyn.warehouse.schema import shipments

    engine = warehouse_engine(settings)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(shipments.c.event_id)).scalars())
    finally:
        engine.dispose()


def test_shipments_hourly_load_quarantines_hostile_records_and_fails_on_an_outage(
        airflow_env: Settings, run_dag: Callable[..., Any], load_dag: Callable[[str], Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Good rows loaded once; each hostile record dead-lettered with the ``dlq.*`` contract, quarantined with its
    reason and coordinates, replayable; a warehouse outage fails the task and commits nothing."""
    import json

    from mbyn.consumers.dead_letters import DeadLetterSink, replay
    from mbyn.consumers.runtime import run_consumer
    from mbyn.contracts.dead_letters import parse_headers
    from mbyn.kafka.producer import TopicProducer
    from mbyn.orchestration.connections import KAFKA_CONN_ID, kafka_extra
    from mbyn.settings import get_settings
    from mbyn.warehouse.engine import warehouse_engine
    from mbyn.warehouse.schema import quarantine
    from tests.conftest import free_port_block

    settings = airflow_env
    topic = settings.topic_prefix + "shipments"
    group = kafka_extra(settings, KAFKA_CONN_ID)["group.id"]
    envelopes = [_shipment(i) for i in range(40)]
    refused = _shipment(40)
    refused["payload"]["carrier"] = "REFUSED"  # valid by the contract; the warehouse says no (below)
    schema_violation = _shipment(41)
    schema_violation["payload"]["status"] = "lost"
    hostile = {  # reason → (key, value)
        "not_json": (b"S-broken", b"{not json"),
        "schema_violation": (b"S-bad", json.dumps(schema_violation).encode()),
        "null_key": (None, json.dumps(_shipment(42)).encode()),
        "sink_rejected": (b"S-refused", json.dumps(refused).encode()),
    }
    producer = TopicProducer("test-tracker", settings)
    for env in envelopes:
        assert producer.send("shipments", env, key=env["payload"]["shipment_id"])
    for key, value in hostile.values():
        producer.send_raw(topic, value, key, [("trace_id", b"t-1")])
    producer.flush_or_raise()
    producer.close()
    where = {r.value: (r.partition, r.offset) for r in read_all(settings.bootstrap(), topic, expect=44)}

    # An outage: the warehouse does not answer → the task fails, nothing is committed or dead-lettered.
    monkeypatch.setenv("MBYN_WAREHOUSE_URL", f"postgresql+psycopg://mbyn:x@127.0.0.1:{free_port_block(1)}/mbyn")
    get_settings.cache_clear()
    dag = load_dag("shipments_hourly_load")
    for task in dag.tasks:
        task.retries = 0
    assert dag.test().state == "failed"
    assert _committed(settings, topic, group) == 0, "an outage must not commit past the batch"
    assert read_all(settings.bootstrap(), settings.topic_prefix + "dead-letters") == []
    monkeypatch.delenv("MBYN_WAREHOUSE_URL")
    get_settings.cache_clear()

    # The warehouse is back (with a rule refusing carrier REFUSED): the hostile records cannot fail the run.
    _refuse_carrier(settings, "REFUSED")
    run_dag("shipments_hourly_load")
    assert _loaded_event_ids(settings) == {e["event_id"] for e in envelopes}
    assert _committed(settings, topic, group) == 44
    letters = read_all(settings.bootstrap(), settings.topic_prefix + "dead-letters")
    infos = {parse_headers(list(d.headers.items())).reason: (d, parse_headers(list(d.headers.items())))
             for d in letters}
    assert len(letters) == 4 and sorted(infos) == sorted(hostile), [parse_headers(list(d.headers.items()))
                                                                     for d in letters]
    for reason, (letter, info) in infos.items():
        key, value = hostile[reason]
        assert (letter.key, letter.value, letter.headers["trace_id"]) == (key, value, b"t-1"), reason
        assert info.coordinates == (topic, *where[value]), reason
        assert info.consumer_group == group and info.error_class and info.error_message, info
    assert infos["sink_rejected"][1].error_class == "SinkRejectedError"
    assert "is not accepted" in (infos["sink_rejected"][1].error_message or "")

    # Quarantined by the dead-letters sink with reason and coordinates; fix the warehouse, replay, load.
    run_consumer(DeadLetterSink(settings), settings, idle_exit=3)
    engine = warehouse_engine(settings)
    with engine.connect() as conn:
        rows = conn.execute(quarantine.select().with_only_columns(
            quarantine.c.reason, quarantine.c.topic, quarantine.c.partition, quarantine.c.offset,
            quarantine.c.consumer_group)).all()
    engine.dispose()
    assert sorted(tuple(r) for r in rows) == sorted(
        (reason, topic, *where[value], group) for reason, (_, value) in hostile.items())
    _refuse_carrier(settings, "REFUSED", refuse=False)
    assert replay(settings, topic="shipments") == 4

    producer = TopicProducer("test-tracker", settings)
    producer.send("shipments", envelopes[0], key="S00000")  # a redelivered event
    producer.flush_or_raise()
    producer.close()
    run_dag("shipments_hourly_load")
    assert _loaded_event_ids(settings) == {e["event_id"] for e in [*envelopes, refused]}, \
        "the replayed record the warehouse refused before is loaded, the redelivered one not twice"
    assert _committed(settings, topic, group) == 44 + 4 + 1
    again = read_all(settings.bootstrap(), settings.topic_prefix + "dead-letters")
    assert sorted(parse_headers(list(d.headers.items())).reason for d in again) == sorted(
        [*hostile, "not_json", "schema_violation", "null_key"]), "still hostile after a replay: dead-lettered again"


class _Message:
    """What ``ConsumeFromTopicOperator`` hands the batch function: a confluent-kafka Message's accessors."""

    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_780_000_000_000


def test_a_shipment_that_fails_alone_for_another_reason_is_dead_lettered_as_unexpected_error(
        airflow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch function without ``dag.test()``: a record whose processing raises anything (not a database
    refusal) is found by the record-by-record re-run and dead-lettered ``unexpected_error``; the rest load."""
    import json

    from mbyn.contracts.dead_letters import parse_headers
    from mbyn.orchestration import shipments_load
    from mbyn.orchestration.connections import KAFKA_CONN_ID, kafka_extra
    from mbyn.orchestration.shipments_load import load_shipment_batch

    write = shipments_load.upsert_records

    def write_or_explode(conn: Any, spec: Any, records: Any) -> Any:
        if any(r.data["payload"]["carrier"] == "BOOM" for r in records):
            raise RuntimeError("a bug that only this record triggers")
        return write(conn, spec, records)

    monkeypatch.setattr(shipments_load, "upsert_records", write_or_explode)
    topic = airflow_env.topic_prefix + "shipments"
    envelopes = [_shipment(i) for i in range(5)]
    envelopes[2]["payload"]["carrier"] = "BOOM"
    messages = [_Message(topic, n, env["payload"]["shipment_id"].encode(), json.dumps(env).encode())
                for n, env in enumerate(envelopes)]

    assert load_shipment_batch(messages, KAFKA_CONN_ID, airflow_env) == {"loaded": 4, "dead_lettered": 1}

    assert _loaded_event_ids(airflow_env) == {e["event_id"] for n, e in enumerate(envelopes) if n != 2}
    [letter] = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "dead-letters", expect=1)
    info = parse_headers(list(letter.headers.items()))
    assert (info.reason, info.error_class, info.coordinates, info.timestamp_ms) == (
        "unexpected_error", "RuntimeError", (topic, 0, 2), 1_780_000_000_000)
    assert info.consumer_group == kafka_extra(airflow_env, KAFKA_CONN_ID)["group.id"]
    assert "only this record" in (info.error_message or "") and "write_or_explode" in (info.traceback or "")
    assert letter.value == messages[2].value()


def test_fx_rates_hourly_publishes_rates(airflow_env: Settings, run_dag: Callable[..., Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBYN_FX_REPLAY", "true")  # recorded ECB answers over local HTTP: no internet
    from mbyn.settings import get_settings

    get_settings.cache_clear()
    run_dag("fx_rates_hourly")

    rates = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "fx-rates")
    assert rates, "no fx-rates records"
    assert all(r.json()["event_type"] == "fx_rate" for r in rates)


def test_inventory_file_drop_publishes_a_dropped_file(airflow_env: Settings, run_dag: Callable[..., Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBYN_LANDING_MIN_AGE_S", "0")  # the file below is complete the moment it appears
    from mbyn.settings import get_settings
    from mbyn.sources.inventory_drop import inbox, write_demo_file

    get_settings.cache_clear()
    dropped = write_demo_file(get_settings(), rows=40, seed=3)

    run_dag("inventory_file_drop")

    records = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "inventory", expect=40)
    assert len(records) == 40
    assert {r.json()["event_type"] for r in records} == {"stock_level"}
    assert not dropped.exists(), "the published file should have left the inbox"
    assert (inbox(airflow_env) / "done" / dropped.name).exists()


def test_customers_snapshot_publishes_changes(airflow_env: Settings, run_dag: Callable[..., Any]) -> None:
    from mbyn.sources import shop

    run_dag("customers_snapshot")

    records = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "customers", expect=shop.CUSTOMERS)
    assert len(records) == shop.CUSTOMERS, "the first run publishes the whole seeded customer table"
    assert {r.key for r in records} == {shop.customer_id(i).encode() for i in range(1, shop.CUSTOMERS + 1)}
