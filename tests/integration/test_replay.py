"""Replay against the real broker and warehouse: rewind the warehouse-loader by time, re-load, nothing doubles.

Two bursts of shop traffic are produced a few seconds apart; the loader loads both. Replaying ``orders``
from a moment between the bursts must re-read exactly the second burst's orders, leave every row count as
it was (upserts on business keys) and end with the loader's stored and committed offsets at the end again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.errors import ConsumerGroupActiveError, ReplayError
from mbyn.replay import replay
from mbyn.settings import Settings
from mbyn.sources.generator import shop_events
from tests.helpers.kafka import read_all
from tests.integration.test_reports import end_offsets, query, run_until_caught_up
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration

TABLES = ("orders", "order_items", "clicks")


warehouse = warehouse_fixture(session_timeout_s=6)


def send_burst(settings: Settings, seed: int, events: int = 300) -> int:
    """Generated clicks and orders; returns how many orders were sent."""
    from mbyn.kafka.producer import TopicProducer

    producer = TopicProducer("test-replay", settings)
    orders = 0
    for e in islice(shop_events(seed=seed), events):
        assert producer.send(e.topic, e.value, e.key)
        orders += e.topic == "orders"
    producer.flush_or_raise()
    producer.close()
    return orders


def two_bursts_loaded(settings: Settings) -> tuple[datetime, int]:
    """Burst 1, a pause, burst 2, all loaded; returns (a moment between the bursts, orders of burst 2)."""
    send_burst(settings, seed=1)
    time.sleep(1.0)
    middle = datetime.now(UTC)
    time.sleep(1.0)
    second = send_burst(settings, seed=2)
    run_until_caught_up(settings, WarehouseLoader)
    return middle, second


def counts(settings: Settings) -> dict[str, int]:
    return {t: int(query(settings, f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}


def committed(settings: Settings, group: str, physical: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(physical, timeout=10).topics[physical].partitions
        return {(tp.topic, tp.partition): tp.offset
                for tp in consumer.committed([TopicPartition(physical, p) for p in parts], timeout=10)
                if tp.offset >= 0}
    finally:
        consumer.close()


def stored(settings: Settings, group: str, physical: str) -> dict[tuple[str, int], int]:
    return {(t, int(p)): int(o) for t, p, o in query(
        settings, "SELECT topic, partition, next_offset FROM kafka_offsets WHERE consumer_group = :g AND topic = :t",
        g=group, t=physical)}


def test_replay_reprocesses_the_second_burst_and_changes_no_row_count(warehouse: Settings) -> None:
    middle, second_orders = two_bursts_loaded(warehouse)
    before = counts(warehouse)
    physical, group = warehouse.topic_prefix + "orders", warehouse.topic_prefix + "warehouse-loader"

    summary = replay(warehouse, "orders", "warehouse-loader", middle.isoformat(), idle_exit=3)

    assert summary["group"] == group and summary["topic"] == physical
    assert second_orders > 0
    assert summary["rewound_records"] == second_orders, summary
    assert summary["reprocessed"] == second_orders, summary
    assert summary["warehouse_offsets_rewound"] == len(summary["partitions"]) > 0
    assert summary["rows_unchanged"] is True, summary
    assert summary["row_counts_before"]["orders"] == summary["row_counts_after"]["orders"] == before["orders"]
    assert counts(warehouse) == before
    assert query(warehouse, "SELECT event_id FROM orders GROUP BY event_id HAVING COUNT(*) > 1") == []
    ends = end_offsets(warehouse, ("orders",))
    assert stored(warehouse, group, physical) == ends, "the re-load moved the stored offsets to the end again"
    assert committed(warehouse, group, physical) == ends


def test_replay_without_reload_rewinds_kafka_and_the_warehouse(warehouse: Settings) -> None:
    middle, second_orders = two_bursts_loaded(warehouse)
    before = counts(warehouse)
    physical, group = warehouse.topic_prefix + "orders", warehouse.topic_prefix + "warehouse-loader"
    ends = end_offsets(warehouse, ("orders",))

    summary = replay(warehouse, "orders", "warehouse-loader", middle, reload=False)

    assert summary["reprocessed"] is None and "next start" in summary["reload"]
    rewound = {(physical, m["partition"]): m["to_offset"] for m in summary["partitions"]}
    assert sum(ends[k] - v for k, v in rewound.items()) == second_orders
    assert {k: v for k, v in stored(warehouse, group, physical).items() if k in rewound} == rewound
    assert {k: v for k, v in committed(warehouse, group, physical).items() if k in rewound} == rewound

    # The group's own consumer picks the replay up on its next start.
    rerun = run_until_caught_up(warehouse, WarehouseLoader)
    assert rerun["consumed"] == second_orders
    assert counts(warehouse) == before


def test_replay_refuses_a_group_with_active_members(topics: Settings) -> None:
    from confluent_kafka import Consumer, TopicPartition

    group = topics.topic_prefix + "warehouse-loader"
    member = Consumer({"bootstrap.servers": topics.bootstrap(), "group.id": group, "client.id": "busy-loader",
                       "session.timeout.ms": 6000})
    member.subscribe([topics.topic_prefix + "orders"])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment(), "the test member never joined"

        with pytest.raises(ConsumerGroupActiveError, match=group):
            replay(topics, "orders", "warehouse-loader", datetime.now(UTC) - timedelta(minutes=5))
        # A dry run previews a live group (and names its members) instead of refusing it.
        member.commit(offsets=[TopicPartition(tp.topic, tp.partition, 0) for tp in member.assignment()],
                      asynchronous=False)
        assert read_all(topics.bootstrap(), topics.topic_prefix + "orders") == []  # waits for partition leaders
        preview = replay(topics, "orders", "warehouse-loader", datetime.now(UTC) - timedelta(minutes=5), dry_run=True)
        assert preview["dry_run"] is True and preview["partitions"] == [], preview
        assert [m.split("@")[0] for m in preview["active_members"]] == ["busy-loader"], preview

        result = subprocess.run([str(Path(sys.executable).parent / "mbyn"), "replay", "--topic", "orders",
                                 "--group", "warehouse-loader", "--from-ts", "2026-01-01T00:00:00Z"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 1, result.stderr[-2000:]
        assert group in result.stderr and "busy-loader" in result.stderr and "active member" in result.stderr
    finally:
        member.close()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"topic": "nope"}, "not a catalog topic"),
    ({"from_ts": "yesterday"}, "not an ISO-8601 timestamp"),
    ({"from_ts": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "in the future"),
    ({"source": "lake"}, "no lake archive"),
    ({"source": "s3"}, "not one of kafka, lake"),
])
def test_replay_rejects_bad_requests(mbyn_env: Settings, kwargs: dict[str, Any], message: str) -> None:
    args = {"topic": "orders", "group": "warehouse-loader", "from_ts": "2026-01-01T00:00:00Z", **kwargs}
    source = args.pop("source", "kafka")
    with pytest.raises(ReplayError, match=message):
        replay(mbyn_env, args["topic"], args["group"], args["from_ts"], source=source)


def test_replay_command_prints_the_summary(topics: Settings) -> None:
    middle, second_orders = two_bursts_loaded(topics)
    result = subprocess.run([str(Path(sys.executable).parent / "mbyn"), "replay", "--topic", "orders",
                             "--group", "warehouse-loader", "--from-ts", middle.isoformat(), "--idle-exit", "3"],
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["reprocessed"] == second_orders and summary["rows_unchanged"] is True


def test_replay_refuses_the_additive_sales_aggregator_and_says_how_to_rebuild(mbyn_env: Settings) -> None:
    group = mbyn_env.topic_prefix + "sales-aggregator"
    with pytest.raises(ReplayError) as refused:
        replay(mbyn_env, "orders", "sales-aggregator", "2026-01-01T00:00:00Z")
    message = str(refused.value)
    assert group in message and "count the re-read records twice" in message
    assert "stop every sales-aggregator copy" in message and "sales_by_minute" in message
    assert f"consumer_group = '{group}'" in message

    result = subprocess.run([str(Path(sys.executable).parent / "mbyn"), "replay", "--topic", "orders",
                             "--group", "sales-aggregator", "--from-ts", "2026-01-01T00:00:00Z"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and group in result.stderr and "refuses" in result.stderr, result.stderr[-2000:]
