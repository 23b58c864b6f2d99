"""Test helpers that read what landed on a topic, independently of the code under test."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition


@dataclass
class Read:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)


def _watermarks(consumer: Consumer, tp: TopicPartition, attempts: int = 20) -> tuple[int, int]:
    """Watermarks, retried: right after topic creation a partition may have no leader yet."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def read_all(bootstrap: str, topic: str, *, timeout: float = 30.0, expect: int | None = None,
             isolation: str = "read_committed") -> list[Read]:
    """Read a physical topic from the beginning to its current end offsets (or ``expect`` records)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": isolation})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {}
        for tp in parts:
            low, high = _watermarks(consumer, tp)
            ends[tp.partition] = high
            tp.offset = low
        consumer.assign(parts)
        out: list[Read] = []
        deadline = time.monotonic() + timeout
        done = {p for p, high in ends.items() if high == 0}
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            if expect is None and len(done) == len(ends):
                break
            msg = consumer.poll(0.5)
            if msg is None:
                if expect is None:
                    # transactional markers occupy offsets: re-check positions
                    for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                        if tp.offset >= ends[tp.partition]:
                            done.add(tp.partition)
                continue
            if msg.error():
                continue
            out.append(Read(msg.key(), msg.value(), dict(msg.headers() or []), msg.partition(), msg.offset()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


def end_offsets(settings: Any, logical: Iterable[str]) -> dict[tuple[str, int], int]:
    """End offsets of the non-empty partitions of the ``logical`` catalog topics (with the settings' prefix)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": "test-probe"})
    try:
        out = {}
        for name in logical:
            physical = settings.topic_prefix + name
            for p in consumer.list_topics(physical, timeout=10).topics[physical].partitions:
                high = consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)[1]
                if high > 0:
                    out[(physical, p)] = high
        return out
    finally:
        consumer.close()


def commit_offsets(bootstrap: str, group: str, offsets: list[TopicPartition], attempts: int = 20) -> None:
    """Commit ``offsets`` as ``group`` without joining it (a group with no members), e.g. to fake a consumer's
    progress. Retried every 0.5 s while the group coordinator is still loading (right after the broker or the
    group's ``__consumer_offsets`` partition came up); the last error is raised."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        for attempt in range(attempts):
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
