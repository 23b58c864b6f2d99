"""lag-monitor against the real broker: a group that committed partway shows exactly the records it has left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer, TopicPartition

from mbyn.consumers.lag_monitor import monitor, sample_lag
from mbyn.settings import Settings
from tests.helpers.kafka import commit_offsets
from tests.helpers.processes import reaped, stop
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration


warehouse = warehouse_fixture()


def make_lag(settings: Settings) -> tuple[str, str]:
    """10 records on partition 0 and 4 on partition 1 of clickstream; group 'g' commits 7 and nothing."""
    topic = settings.topic_prefix + "clickstream"
    producer = Producer({"bootstrap.servers": settings.bootstrap()})
    for _ in range(10):
        producer.produce(topic, b"{}", b"k", partition=0)
    for _ in range(4):
        producer.produce(topic, b"{}", b"k", partition=1)
    assert producer.flush(30) == 0
    group = settings.topic_prefix + "g"
    commit_offsets(settings.bootstrap(), group, [TopicPartition(topic, 0, 7), TopicPartition(topic, 2, 0)])
    commit_offsets(settings.bootstrap(), "not-this-prefix-" + group, [TopicPartition(topic, 0, 1)])
    return group, topic


def test_sample_lag_reports_committed_end_and_lag_per_partition(topics):
    group, topic = make_lag(topics)
    rows = sample_lag(topics)
    assert {r["consumer_group"] for r in rows} == {group}, "only this prefix's groups"
    assert [(r["topic"], r["partition"], r["end_offset"], r["committed_offset"], r["lag"]) for r in rows] == [
        (topic, 0, 10, 7, 3), (topic, 2, 0, 0, 0)]


def test_monitor_writes_lag_samples_and_stops_on_sigterm(warehouse, tmp_path):
    group, topic = make_lag(warehouse)
    summary = monitor(warehouse, interval=0.5, duration=1.2)
    assert summary["rounds"] >= 2 and summary["failed_rounds"] == 0 and summary["groups"] == [group]
    engine = sa.create_engine(warehouse.warehouse())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text('SELECT sampled_at, consumer_group, topic, "partition", end_offset, '
                                        "committed_offset, lag FROM lag_samples ORDER BY id")).all()
    finally:
        engine.dispose()
    assert len(rows) == 2 * summary["rounds"]
    assert len({r.sampled_at for r in rows}) == summary["rounds"], "one timestamp per round"
    assert {(r.consumer_group, r.topic, r.partition, r.end_offset, r.committed_offset, r.lag) for r in rows} == {
        (group, topic, 0, 10, 7, 3), (group, topic, 2, 0, 0, 0)}

    log = tmp_path / "lag.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "consume", "lag-monitor", "--interval", "0.5"],
                                stdout=subprocess.PIPE, stderr=err)
    with reaped(proc):
        deadline = time.monotonic() + 60
        while "round 1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        out, _ = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, log.read_text()[-2000:]
    cli = json.loads(out.decode().strip().splitlines()[-1])
    assert cli["stopped_by"] == "SIGTERM" and cli["rounds"] >= 1 and cli["rows"] == 2 * cli["rounds"]
