"""lake-archiver against the real broker: Parquet files that match the topics, no duplicates after a restart."""

from __future__ import annotations

import json
import re
from itertools import islice

import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from mbyn.consumers.lake_archiver import LakeArchiver, reload_from_lake
from mbyn.consumers.runtime import run_consumer
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings
from mbyn.sources.generator import shop_events
from tests.helpers.kafka import commit_offsets, read_all

pytestmark = pytest.mark.integration

NAME = re.compile(r"^[a-z-]+/date=\d{4}-\d{2}-\d{2}/hour=\d{2}/part-\d+-\d+-\d+\.parquet$")


def produce(settings: Settings, seed: int, n: int) -> None:
    p = TopicProducer("test", settings)
    for e in islice(shop_events(seed=seed), n):
        assert p.send(e.topic, e.value, e.key)
    p.send("customers", dict(make_envelope("customer_upserted", {
        "customer_id": "C000001", "name": "A", "email": "a@example.com", "country": "DE", "segment": "vip",
        "updated_at": "2026-11-25T10:00:00Z"}, "test")), "C000001")
    p.send("customers", None, "C000001")  # tombstone
    p.flush_or_raise()


def lake_frame(settings: Settings) -> pd.DataFrame:
    files = sorted(settings.lake_dir.rglob("*.parquet"))
    assert files, "no parquet files"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def on_topics(settings: Settings) -> dict[tuple[str, int, int], bytes | None]:
    out = {}
    for topic in ("clickstream", "orders", "customers"):
        for r in read_all(settings.bootstrap(), settings.topic_prefix + topic):
            out[(topic, r.partition, r.offset)] = r.key
    return out


def reset_group(settings: Settings) -> None:
    """Commit offset 0 everywhere: what a crash after the rename and before the commit looks like."""
    metadata = AdminClient({"bootstrap.servers": settings.bootstrap()}).list_topics(timeout=10).topics
    physical = [settings.topic_prefix + topic for topic in LakeArchiver.topics]
    commit_offsets(settings.bootstrap(), settings.topic_prefix + "lake-archiver",
                   [TopicPartition(t, p, 0) for t in physical for p in metadata[t].partitions])


def test_parquet_matches_the_topics_and_a_restart_writes_nothing_twice(topics):
    produce(topics, seed=3, n=600)
    first = run_consumer(LakeArchiver(topics), topics, idle_exit=3)
    expected = on_topics(topics)
    assert first["rows"] == len(expected) == first["processed"]

    names = [str(p.relative_to(topics.lake_dir)) for p in topics.lake_dir.rglob("*.parquet")]
    assert names and all(NAME.match(n) for n in names), names
    assert not list(topics.lake_dir.rglob("*.tmp")), "no temporary files left"
    df = lake_frame(topics)
    got = {(t, int(p), int(o)): (k.encode() if k is not None else None)
           for t, p, o, k in zip(df.topic, df.partition, df.offset, df.key, strict=True)}
    assert got == expected and len(df) == len(expected)
    orders = [r.json() for r in read_all(topics.bootstrap(), topics.topic_prefix + "orders")]
    lake_orders = df[df.topic == "orders"].set_index("event_id")
    for o in orders:
        row = lake_orders.loc[o["event_id"]]
        assert row.event_time == o["event_time"] and row.source == o["source"]
        assert json.loads(row.payload) == o["payload"]
    tomb = df[(df.topic == "customers") & df.event_id.isna()]
    assert list(tomb.key) == ["C000001"], "the tombstone is archived with its key"

    # Crash after the rename, before the commit: offsets back to 0, and the newest file of one partition
    # lost (it had not been renamed yet). The restart re-writes only that file's records.
    reset_group(topics)
    newest = max(topics.lake_dir.glob("clickstream/*/*/part-0-*.parquet"),
                 key=lambda p: int(p.name.split("-")[3].split(".")[0]))
    newest.unlink()
    second = run_consumer(LakeArchiver(topics), topics, idle_exit=3)
    assert second["consumed"] == len(expected) and second["skipped_already_archived"] == len(expected) - second["rows"]
    assert 0 < second["rows"] < len(expected)
    df = lake_frame(topics)
    assert len(df) == len(expected) and not df.duplicated(["topic", "partition", "offset"]).any()


def test_reload_from_lake_yields_the_records_back(topics):
    produce(topics, seed=4, n=300)
    run_consumer(LakeArchiver(topics), topics, idle_exit=3)
    orders = {r.json()["event_id"]: r for r in read_all(topics.bootstrap(), topics.topic_prefix + "orders")}
    back = list(reload_from_lake("orders", topics))
    assert {r.data["event_id"] for r in back} == set(orders)
    for r in back:
        original = orders[r.data["event_id"]]
        assert (r.key, r.partition, r.offset, r.data) == (original.key, original.partition, original.offset,
                                                          original.json())
        assert dict(r.headers)["source"] == b"test"
    assert [r.offset for r in back if r.partition == back[0].partition] == sorted(
        r.offset for r in back if r.partition == back[0].partition)
    customers = list(reload_from_lake("customers", topics))
    assert [(r.key, r.data is None) for r in customers] == [(b"C000001", False), (b"C000001", True)]
    assert list(reload_from_lake("payments", topics)) == []
