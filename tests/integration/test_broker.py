"""The real broker: catalog topics, a confluent-kafka round trip, the generator on the wire."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import validate
from mbyn.kafka.admin import apply_topics
from mbyn.kafka.clients import admin_client
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration


def test_apply_topics_creates_the_catalog_idempotently(mbyn_env):
    first = apply_topics(mbyn_env)
    assert {c.action for c in first} == {"created"}
    second = apply_topics(mbyn_env)
    assert {c.action for c in second} == {"unchanged"}
    meta = admin_client(mbyn_env).list_topics(timeout=10).topics
    for topic in load_catalog().topics.values():
        assert len(meta[topic.physical].partitions) == topic.partitions


def test_apply_topics_raises_partition_counts(mbyn_env):
    from confluent_kafka.admin import NewTopic

    name = mbyn_env.topic_prefix + "alerts"
    admin = admin_client(mbyn_env)
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result()
    deadline = time.monotonic() + 10
    while name not in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    changes = {c.topic: c for c in apply_topics(mbyn_env, names=["alerts"])}
    assert changes[name].action == "partitions-raised"
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == 3


def test_round_trip_through_confluent_kafka(topics):
    topic = topics.topic_prefix + "orders"
    producer = Producer({"bootstrap.servers": topics.bootstrap(), "enable.idempotence": True})
    for i in range(100):
        producer.produce(topic, key=f"k{i}", value=f"v{i}".encode())
    assert producer.flush(30) == 0
    got = read_all(topics.bootstrap(), topic, expect=100)
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(100))


def test_generator_cli_writes_valid_envelopes(topics):
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "clickstream", "--count", "2000",
                             "--seed", "7"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    clicks = read_all(topics.bootstrap(), topics.topic_prefix + "clickstream")
    orders = read_all(topics.bootstrap(), topics.topic_prefix + "orders")
    assert len(clicks) + len(orders) == 2000
    assert orders, "2000 shop events should contain at least one order"
    for r in clicks[:200]:
        validate("clickstream", r.json())
        assert r.headers["source"] == b"clickstream-generator"
        assert r.key == r.json()["payload"]["session_id"].encode()
    for r in orders:
        validate("orders", r.json())
        assert r.key == r.json()["payload"]["order_id"].encode()
