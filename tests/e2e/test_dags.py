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


def test_shipments_hourly_load_upserts_rows_and_commits(airflow_env: Settings, run_dag: Callable[..., Any]) -> None:
    from sqlalchemy import func, select

    from mbyn.kafka.producer import TopicProducer
    from mbyn.orchestration.connections import KAFKA_CONN_ID, kafka_extra
    from mbyn.warehouse.engine import warehouse_engine
    from mbyn.warehouse.schema import shipments

    envelopes = [_shipment(i) for i in range(40)]
    producer = TopicProducer("test-tracker", airflow_env)
    for env in envelopes:
        assert producer.send("shipments", env, key=env["payload"]["shipment_id"])
    producer.send_raw(airflow_env.topic_prefix + "shipments", b"{not json", b"S-broken")
    producer.flush_or_raise()
    producer.close()

    run_dag("shipments_hourly_load")

    engine = warehouse_engine(airflow_env)
    with engine.connect() as conn:
        loaded = set(conn.execute(select(shipments.c.event_id)).scalars())
    assert loaded == {e["event_id"] for e in envelopes}
    dead = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "dead-letters", expect=1)
    assert [d.value for d in dead] == [b"{not json"]
    assert b"JSONDecodeError" in dead[0].headers["error"]
    group = kafka_extra(airflow_env, KAFKA_CONN_ID)["group.id"]
    assert _committed(airflow_env, airflow_env.topic_prefix + "shipments", group) == 41

    # The next run starts after the committed offsets: nothing new, nothing duplicated.
    producer = TopicProducer("test-tracker", airflow_env)
    producer.send("shipments", envelopes[0], key="S00000")  # a redelivered event
    producer.flush_or_raise()
    producer.close()
    run_dag("shipments_hourly_load")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(shipments)).scalar_one() == 40
    engine.dispose()
    assert _committed(airflow_env, airflow_env.topic_prefix + "shipments", group) == 42


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
