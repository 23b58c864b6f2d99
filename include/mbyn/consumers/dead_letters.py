"""dead-letters: the ``dead-letters`` topic → the ``quarantine`` table, exactly once; replay and listing.

Every consumer — the Python runtime, the Java payments service, the Go tracker, the Airflow tasks — sends a
record it cannot process to ``dead-letters`` with the original key, value bytes and headers plus the
``dlq.*`` headers of ``mbyn.contracts.dead_letters``. This consumer stores each one as a quarantine row —
rows and offsets in one transaction, like the warehouse-loader — and ``(consumer_group, topic, partition,
offset)`` is unique, so a record dead-lettered twice (its consumer crashed before moving on) is quarantined
once. Whatever else arrives on the topic is stored too: a record without ``dlq.*`` headers (written by
another tool) with reason ``unknown``; header values that do not fit a column are cut or dropped, never
refused — this sink never dead-letters (it would be writing to itself), so building a row cannot fail.

``mbyn dlq list`` counts quarantined records by topic and reason; ``mbyn dlq replay [--topic T]
[--since ISO-TS]`` re-publishes records not yet replayed to their original topic with their original key
and headers (plus ``mbyn.replay_of``) and marks them replayed — after the broker acknowledged them, so a
crash mid-replay re-sends rather than loses (the loaders' upserts make a re-send harmless).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import func, select, update

from mbyn.consumers.contract import Batch, Record
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.consumers.warehouse_sink import WarehouseConsumer
from mbyn.contracts.dead_letters import DEAD_LETTER_TOPIC, original_headers, parse_headers
from mbyn.contracts.headers import decode_headers, encode_headers
from mbyn.kafka.clients import wait_for_broker
from mbyn.kafka.producer import TopicProducer
from mbyn.options import CONSUMER_OPTIONS, Args, Option
from mbyn.settings import Settings
from mbyn.warehouse import init_schema, schema, upsert, utc_now, warehouse_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger("mbyn.consumer")

NAME = "dead-letters"


class DeadLetterSink(WarehouseConsumer):
    """dead-letters → quarantine (value bytes kept exactly; text too when it is UTF-8)."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = (DEAD_LETTER_TOPIC,)
    batch_size: int = 1000
    dead_letters: ClassVar[bool] = False  # nothing here may loop back to dead-letters

    def decode(self, record: Record) -> Any:
        """Dead letters are raw bytes by design: nothing to decode or validate."""
        return None

    def write(self, conn: Connection, batch: Batch) -> int:
        now = utc_now()
        rows = [quarantine_row(r, now) for r in batch.records]
        keyed = [r for r in rows if r["topic"] is not None]
        unkeyed = [r for r in rows if r["topic"] is None]
        count = upsert(conn, schema.quarantine, keyed, ["consumer_group", "topic", "partition", "offset"], update=[])
        if unkeyed:
            conn.execute(schema.quarantine.insert(), unkeyed)
        return count + len(unkeyed)


def quarantine_row(record: Record, now: datetime) -> dict[str, Any]:
    """One quarantine row from any record on ``dead-letters`` (never raises; see the module docstring)."""
    info = parse_headers(record.headers)
    text: str | None = None
    if record.value is not None:
        try:
            text = record.value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\x00" in text:
            text = None  # PostgreSQL text cannot hold NUL; the bytes are kept in ``value``
    original_ts = None
    if info.timestamp_ms is not None:
        original_ts = datetime.fromtimestamp(info.timestamp_ms / 1000, UTC)
    return {
        "topic": info.topic,
        "partition": info.partition,
        "offset": info.offset,
        "key": record.key,
        "value": record.value,
        "value_text": text,
        "headers": encode_headers(original_headers(record.headers)),
        "reason": info.reason,
        "error_class": info.error_class,
        "error_message": info.error_message,
        "error_traceback": info.traceback,
        "consumer_group": info.consumer_group,
        "original_timestamp": original_ts,
        "quarantined_at": now,
    }


# Commands -----------------------------------------------------------------------------------------

def quarantine_counts(settings: Settings) -> list[tuple[str, str, int, int]]:
    """(topic, reason, quarantined, replayed) for every topic/reason pair, most frequent first."""
    q = schema.quarantine
    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                select(func.coalesce(q.c.topic, "?"), q.c.reason, func.count(), func.count(q.c.replayed_at))
                .group_by(q.c.topic, q.c.reason).order_by(func.count().desc())).all()
    finally:
        engine.dispose()
    return [(str(t), str(r), int(n), int(m)) for t, r, n, m in rows]


def replay(settings: Settings, topic: str | None = None, since: datetime | None = None,
           chunk: int = 1000, ids: Collection[int] | None = None) -> int:
    """Re-publish quarantined, not-yet-replayed records to their original topic; returns how many.

    ``topic`` is a logical catalog name or a physical topic; ``ids`` keeps only those quarantine rows (the
    ``quarantine_resend`` DAG, which checks them first: ``mbyn.orchestration.actions``). A record several
    consumer groups quarantined (one row per group, same topic / partition / offset) is sent once — every group
    reads it again — and all its rows are marked replayed. Records are sent in chunks; a chunk is marked replayed
    only after ``flush_or_raise`` — a failure leaves it unmarked, to be replayed again.
    """
    q = schema.quarantine
    physical = None
    if topic is not None:
        physical = topic if topic.startswith(settings.topic_prefix) and settings.topic_prefix else \
            settings.topic_prefix + topic
    condition = q.c.replayed_at.is_(None) & q.c.topic.is_not(None)
    if physical is not None:
        condition &= q.c.topic == physical
    if since is not None:
        condition &= q.c.quarantined_at >= since
    if ids is not None:
        condition &= q.c.id.in_(sorted(ids))
    wait_for_broker(settings, "dlq-replay")
    engine = warehouse_engine(settings)
    producer = TopicProducer("dlq-replay", settings)
    total = 0
    last_id = 0
    try:
        init_schema(engine)
        while True:
            with engine.connect() as conn:
                rows = conn.execute(select(q.c.id, q.c.topic, q.c.partition, q.c.offset, q.c.key, q.c.value,
                                           q.c.headers)
                                    .where(condition & (q.c.id > last_id)).order_by(q.c.id).limit(chunk)).all()
            if not rows:
                break
            coordinates: set[tuple[str, int, int]] = set()
            sent = 0
            for row in rows:
                if row.partition is not None and row.offset is not None:
                    coordinate = (row.topic, row.partition, row.offset)
                    if coordinate in coordinates:
                        continue  # the same record, quarantined by another group: sent once
                    coordinates.add(coordinate)
                headers = [(k, v) for k, v in decode_headers(row.headers) if k != "mbyn.replay_of"]
                headers.append(("mbyn.replay_of", str(row.id).encode()))
                producer.send_raw(row.topic, row.value, row.key, headers)  # type: ignore[arg-type]
                sent += 1
            producer.flush_or_raise()
            ids = [row.id for row in rows]
            now = utc_now()
            with engine.begin() as conn:
                conn.execute(update(q).where(q.c.id.in_(ids)).values(replayed_at=now))
                for t, part, off in coordinates:  # the other groups' rows of the records sent
                    conn.execute(update(q).where(q.c.replayed_at.is_(None) & (q.c.topic == t) & (q.c.partition == part)
                                                 & (q.c.offset == off)).values(replayed_at=now))
            total += sent
            last_id = ids[-1]
            log.info("dlq replay: %d record(s) re-published", total)
    finally:
        producer.close()
        engine.dispose()
    return total


OPTIONS: tuple[Option, ...] = CONSUMER_OPTIONS


def run(settings: Settings, args: Args) -> int:
    return run_consumer_cli(lambda: DeadLetterSink(settings), settings, args)
