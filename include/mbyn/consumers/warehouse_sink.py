"""``WarehouseConsumer``: the shape of every consumer that writes the warehouse exactly once.

A subclass implements ``write(conn, batch)``; the base class runs it and ``store_offsets`` for the batch's
``next_offsets`` in ONE database transaction, and on partition assignment seeks to the offsets stored
there (``commit_mode = "sink"``). A crash before the commit loses nothing (the batch is re-read from the
stored offsets), a crash after it re-reads nothing — so every row lands once, without relying on the
Kafka commit. Database outages become SinkUnavailableError, which the runtime retries with back-off.

``TopicTable`` / ``FxRates``: a compacted topic read in full by every copy as an in-memory table (the
order-enricher and the sales-aggregator both convert amounts to EUR with ``FxRates``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from mbyn.errors import StateError
from mbyn.kafka.consumer import Batch, CommitMode, ConsumerRuntime, PartitionKey, StreamConsumer
from mbyn.process import StopFlag, backoff_delays
from mbyn.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("mbyn.consumer")


def shift(t: datetime, delta: timedelta) -> datetime:
    """``t + delta``, held at the ends of the calendar (year 1 / 9999) instead of raising OverflowError."""
    try:
        return t + delta
    except OverflowError:
        return (datetime.max if delta > timedelta(0) else datetime.min).replace(tzinfo=t.tzinfo)


class WarehouseConsumer(StreamConsumer):
    """A StreamConsumer whose sink is the warehouse and whose offsets live in ``kafka_offsets``."""

    commit_mode: ClassVar[CommitMode] = "sink"

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self._engine = engine
        self.group_id = settings.topic_prefix + self.name
        self.rows_written = 0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the warehouse engine is not open yet")
        return self._engine

    def open(self, runtime: ConsumerRuntime) -> None:
        """Create the engine and the schema (idempotent), waiting with back-off while the database is down."""
        from mbyn.errors import SinkUnavailableError
        from mbyn.warehouse import init_schema, sink_errors, warehouse_engine

        if self._engine is None:
            self._engine = warehouse_engine(self.settings)
        self.group_id = runtime.group_id
        for attempt, delay in enumerate(backoff_delays(), start=1):
            try:
                with sink_errors(f"{self.name}: warehouse {self.engine.url!r}"):
                    init_schema(self.engine)
                return
            except SinkUnavailableError as exc:
                if runtime.stop.is_set() or attempt >= 12:
                    raise
                log.warning("%s (attempt %d), retrying in %.1fs", exc, attempt, delay)
                runtime.stop.wait(delay)

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> Mapping[PartitionKey, int]:
        """Start where the warehouse says this group stopped; unknown partitions start from the earliest."""
        from mbyn.errors import SinkUnavailableError
        from mbyn.warehouse import load_offsets, sink_errors

        for attempt, delay in enumerate(backoff_delays(), start=1):
            try:
                with sink_errors(f"{self.name}: reading stored offsets"), self.engine.begin() as conn:
                    return load_offsets(conn, self.group_id, partitions)
            except SinkUnavailableError as exc:
                # Inside a rebalance callback: we cannot skip the seek, so wait (bounded by the stop flag).
                if runtime.stop.is_set() or attempt >= 12:
                    raise
                log.warning("%s (attempt %d), retrying in %.1fs", exc, attempt, delay)
                runtime.stop.wait(delay)
        raise AssertionError("unreachable")

    def process_batch(self, batch: Batch) -> None:
        """``write`` + stored offsets in one transaction."""
        from mbyn.warehouse import sink_errors, store_offsets

        with sink_errors(f"{self.name}: warehouse"), self.engine.begin() as conn:
            written = self.write(conn, batch) if batch.records else 0
            store_offsets(conn, self.group_id, batch.next_offsets)
        self.rows_written += written

    def write(self, conn: Connection, batch: Batch) -> int:
        """Write the batch's rows with ``conn`` (inside the transaction); return how many rows were sent."""
        raise NotImplementedError

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def summary(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written}


class FencedBatch(Exception):
    """Raised inside the transaction when the stored offsets are not where this copy left them (rolls it back)."""

    def __init__(self, stale: list[PartitionKey]) -> None:
        super().__init__(", ".join(f"{t}[{p}]" for t, p in stale))
        self.stale = stale


class FencedWarehouseConsumer(WarehouseConsumer):
    """A WarehouseConsumer whose writes add up (not idempotent upserts): every batch is fenced by its offsets.

    The copy remembers, per assigned partition, the offset it last stored (``positions``: what ``on_assign``
    returned, None for a partition never stored, then each committed batch's next offset). ``process_batch``
    runs ``claim_offsets`` (compare-and-set from ``positions``) and ``write`` in ONE transaction. If another
    copy — the new owner of partitions this one lost, or anything else — moved a stored offset meanwhile, the
    transaction is rolled back, nothing of the batch is counted or committed, and ``on_fenced`` re-reads the
    stored offsets and seeks there, as a fresh assignment would. Records before a partition's position (the
    rest of a poll read before such a seek) are skipped, and an offset is never stored backwards.

    A fenced batch returns normally: raising would make the runtime retry it or dead-letter its records.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.runtime: ConsumerRuntime | None = None
        self.positions: dict[PartitionKey, int | None] = {}
        self.fenced_batches = 0
        self._stored: dict[PartitionKey, int] = {}

    def open(self, runtime: ConsumerRuntime) -> None:
        super().open(runtime)
        self.runtime = runtime

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> Mapping[PartitionKey, int]:
        offsets = super().on_assign(runtime, partitions)
        for key in partitions:
            self.positions[key] = offsets.get(key)
        return offsets

    def on_revoke(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        for key in partitions:
            self.positions.pop(key, None)

    def process_batch(self, batch: Batch) -> None:
        """Claim the offsets, then ``write``, in one transaction; a fenced batch is dropped (``on_fenced``)."""
        from mbyn.warehouse import claim_offsets, sink_errors

        self._stored = {}
        fresh = Batch([r for r in batch.records if self._unseen(r.partition_key, r.offset)],
                      {k: o for k, o in batch.next_offsets.items() if self._unseen(k, o - 1)})
        try:
            with sink_errors(f"{self.name}: warehouse"), self.engine.begin() as conn:
                stale = claim_offsets(conn, self.group_id, self.positions, fresh.next_offsets)
                if stale:
                    raise FencedBatch(stale)
                written = self.write(conn, fresh) if fresh.records else 0
        except FencedBatch as fenced:
            self.fenced_batches += 1
            log.warning("%s: stored offsets of %s moved since this copy read them (another copy owns them now?); "
                        "batch of %d dropped, re-reading from the stored offsets", self.name, fenced,
                        len(fresh.records))
            self.on_fenced(sorted(fresh.next_offsets))
            return
        self.positions.update(fresh.next_offsets)
        self._stored = dict(fresh.next_offsets)
        self.rows_written += written

    def _unseen(self, key: PartitionKey, offset: int) -> bool:
        """Whether ``offset`` of ``key`` lies at or after this copy's position (an assigned partition only)."""
        if key not in self.positions:
            return False
        position = self.positions[key]
        return position is None or offset >= position

    def on_fenced(self, partitions: list[PartitionKey]) -> None:
        """Take the stored offsets of ``partitions`` as this copy's positions and seek there (earliest: none)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        from mbyn.warehouse import load_offsets, sink_errors

        with sink_errors(f"{self.name}: reading stored offsets"), self.engine.connect() as conn:
            stored = load_offsets(conn, self.group_id, partitions)
        for key in partitions:
            self.positions[key] = stored.get(key)
            if self.runtime is None:
                continue
            try:
                self.runtime.kafka.seek(TopicPartition(key[0], key[1], stored.get(key, OFFSET_BEGINNING)))
            except KafkaException as exc:  # no longer assigned here: the next assignment seeks anyway
                log.info("%s: no seek on %s[%d] (%s)", self.name, key[0], key[1], exc)

    def offsets_to_commit(self, batch: Batch) -> Mapping[PartitionKey, int]:
        """The Kafka commit (informational) follows what was stored: nothing for a fenced batch."""
        return self._stored

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "fenced_batches": self.fenced_batches}


# Compacted topics read as tables -------------------------------------------------------------------

class TopicTable:
    """A compacted catalog topic held in memory as ``key → value``, read by every copy in full.

    Unlike a subscription, the table *assigns* all partitions of the topic to itself (no group, no
    commits), so each copy of a consumer sees every key — the Kafka Streams "global table" shape.
    ``open`` reads from the beginning up to the end offsets seen at start (read_committed), so the table
    is complete before the first batch; ``refresh`` picks up later changes without blocking. A tombstone
    removes the key; a record that does not decode (poison) is logged and skipped, because the table's
    owner (the producer) dead-letters nothing and the warehouse-loader quarantines it anyway.
    Subclasses turn the envelope into the stored value with ``to_value``.
    """

    topic: ClassVar[str] = ""

    def __init__(self, settings: Settings, who: str) -> None:
        self.settings = settings
        self.who = who
        self.rows: dict[str, Any] = {}
        self.updates = 0
        self.skipped = 0
        self._consumer: Any = None
        self._physical = ""

    def to_value(self, envelope: dict[str, Any]) -> Any:
        """What to store for an envelope (default: the payload)."""
        return envelope["payload"]

    def open(self, stop: StopFlag | None = None, timeout: float = 60.0) -> None:
        """Assign every partition from the beginning and read up to the current end offsets."""
        import uuid

        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from mbyn.catalog import load_catalog
        from mbyn.kafka.security import client_config

        physical = self._physical = load_catalog().get(self.topic).physical
        self._consumer = Consumer({
            **client_config(self.settings),
            # Required by librdkafka even though the table never joins a group or commits.
            "group.id": f"{self.settings.topic_prefix}{self.who}-table-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed", "client.id": f"mbyn-{self.who}-table",
        })
        meta = self._consumer.list_topics(physical, timeout=10).topics.get(physical)
        if meta is None or meta.error is not None or not meta.partitions:
            raise StateError(f"{self.who}: topic {physical} does not exist; run `mbyn topics apply` first")
        parts = [TopicPartition(physical, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        deadline = time.monotonic() + timeout
        ends = {tp.partition: self._end_offset(tp, deadline) for tp in parts}
        self._consumer.assign(parts)
        while any(self._position(p) < end for p, end in ends.items()):
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                raise StateError(f"{self.who}: could not read {physical} to its end within {timeout:.0f}s")
            self.refresh(0.5)
        log.info("%s: table %s loaded (%d keys)", self.who, physical, len(self.rows))

    def _end_offset(self, tp: Any, deadline: float) -> int:
        """The partition's end offset, retried while it has no leader yet (right after the topic was created)."""
        from confluent_kafka import KafkaException

        while True:
            try:
                return int(self._consumer.get_watermark_offsets(tp, timeout=10)[1])
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise StateError(f"{self.who}: cannot read the end of {tp.topic}[{tp.partition}]: {exc}") from exc
                time.sleep(0.5)

    def _position(self, partition: int) -> int:
        from confluent_kafka import TopicPartition

        [tp] = self._consumer.position([TopicPartition(self._physical, partition)])
        return int(tp.offset) if tp.offset >= 0 else 0

    def refresh(self, timeout: float = 0.0) -> int:
        """Apply the changes available now (waiting up to ``timeout`` for the first); returns how many."""
        from mbyn.errors import ContractError
        from mbyn.kafka.consumer import Record, decode_envelope

        if self._consumer is None:
            raise RuntimeError(f"{self.who}: table {self.topic} is not open")
        applied = 0
        for msg in self._consumer.consume(500, timeout):
            if msg.error() is not None:
                continue  # partition EOF and transient errors; librdkafka retries by itself
            record = Record(self.topic, msg.topic() or "", int(msg.partition() or 0), int(msg.offset() or 0),
                            msg.key(), msg.value(), [], None)
            try:
                envelope = decode_envelope(record)
            except ContractError as exc:
                self.skipped += 1
                log.warning("%s: skipped a bad %s record at %d@%d: %s", self.who, self.topic, record.partition,
                            record.offset, exc)
                continue
            if envelope is None:
                self.rows.pop(record.key_str or "", None)
            else:
                self.rows[record.key_str or ""] = self.to_value(envelope)
            applied += 1
        self.updates += applied
        return applied

    def get(self, key: str) -> Any:
        return self.rows.get(key)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class FxRates(TopicTable):
    """The ``fx-rates`` table: currency → (rate per EUR, rate date); EUR is always (1.0, None).

    ``rate(currency)`` waits for a currency that has no rate yet — polling the topic — for at most
    ``max_wait_s`` counted from the first time that currency was asked for, then raises
    PoisonRecordError (reason ``no_fx_rate``) so the runtime dead-letters the record instead of emitting a
    made-up amount. Once a currency has timed out, later records in it fail at once until a rate arrives
    (one wait per currency, not one per record).
    """

    topic: ClassVar[str] = "fx-rates"

    def __init__(self, settings: Settings, who: str, max_wait_s: float = 30.0) -> None:
        super().__init__(settings, who)
        self.max_wait_s = max_wait_s
        self._missing_since: dict[str, float] = {}
        self.waits = 0

    def to_value(self, envelope: dict[str, Any]) -> tuple[float, str]:
        p = envelope["payload"]
        return float(p["rate_per_eur"]), str(p["rate_date"])

    def rate(self, currency: str, stop: StopFlag | None = None) -> tuple[float, str | None]:
        """(units of ``currency`` per EUR, rate date) — waiting a bounded time for a missing currency."""
        from mbyn.errors import PoisonRecordError

        if currency == "EUR":
            return 1.0, None
        found = self.rows.get(currency)
        if found is None:
            first = self._missing_since.setdefault(currency, time.monotonic())
            if time.monotonic() - first < self.max_wait_s:
                self.waits += 1
                log.info("%s: no %s rate yet; waiting up to %.0fs", self.who, currency,
                         self.max_wait_s - (time.monotonic() - first))
            while found is None and time.monotonic() - first < self.max_wait_s:
                if stop is not None and stop.is_set():
                    break
                self.refresh(0.5)
                found = self.rows.get(currency)
        if found is None:
            raise PoisonRecordError("no_fx_rate", f"no {currency} rate on {self.topic} after waiting "
                                    f"{self.max_wait_s:.0f}s; the record cannot be converted to EUR")
        self._missing_since.pop(currency, None)
        return found  # type: ignore[no-any-return]
