"""``WarehouseConsumer``: the shape of every consumer that writes the warehouse exactly once.

A subclass implements ``write(conn, batch)``; the base class runs it and ``store_offsets`` for the batch's
``next_offsets`` in ONE database transaction, and on partition assignment seeks to the offsets stored
there (``commit_mode = "sink"``). A crash before the commit loses nothing (the batch is re-read from the
stored offsets), a crash after it re-reads nothing — so every row lands once, without relying on the
Kafka commit. Database outages become SinkUnavailableError, which the runtime retries with back-off.

Every batch has one stamp, ``loaded_at`` (taken as its transaction starts; ``write`` gives it to every row),
and, with ``batch_log`` (``--batch-log FILE``), one JSON line per committed batch that wrote records, written
after COMMIT returned: ``loaded_at``, ``committed_at`` (ISO-8601 UTC, microseconds) and the same two as
``loaded_at_us`` / ``committed_at_us`` (integer microseconds since the epoch), ``records``, ``rows`` (rows
sent per table, as ``write`` counted them with ``count_rows``), ``group`` and ``pid``. A row's commit time is
the ``committed_at`` of the line whose ``loaded_at`` equals the row's: the latency with the commit included.

``shift`` moves a time by a delta without overflowing (the windowed consumers use it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from mbyn.consumers.contract import Batch, CommitMode, ConsumerRuntime, PartitionKey, StreamConsumer
from mbyn.errors import SinkUnavailableError
from mbyn.process import backoff_delays
from mbyn.settings import Settings
from mbyn.warehouse.engine import (
    claim_offsets,
    init_schema,
    load_offsets,
    sink_errors,
    store_offsets,
    utc_now,
    warehouse_engine,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("mbyn.consumer")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def shift(t: datetime, delta: timedelta) -> datetime:
    """``t + delta``, held at the ends of the calendar (year 1 / 9999) instead of raising OverflowError."""
    try:
        return t + delta
    except OverflowError:
        return (datetime.max if delta > timedelta(0) else datetime.min).replace(tzinfo=t.tzinfo)


class WarehouseConsumer(StreamConsumer):
    """A StreamConsumer whose sink is the warehouse and whose offsets live in ``kafka_offsets``."""

    commit_mode: ClassVar[CommitMode] = "sink"

    def __init__(self, settings: Settings, engine: Engine | None = None, *, batch_log: str | Path | None = None,
                 ) -> None:
        self.settings = settings
        self._engine = engine
        self.group_id = settings.topic_prefix + self.name
        self.rows_written = 0
        #: The batch being written: its stamp (every row's ``loaded_at``) and rows per table (``count_rows``).
        self.loaded_at: datetime = utc_now()
        self.batch_rows: dict[str, int] = {}
        self.batch_log = Path(batch_log) if batch_log else None
        self._batch_log: TextIO | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the warehouse engine is not open yet")
        return self._engine

    def open(self, runtime: ConsumerRuntime) -> None:
        """Create the engine and the schema (idempotent), waiting with back-off while the database is down."""
        if self._engine is None:
            self._engine = warehouse_engine(self.settings)
        self.group_id = runtime.group_id
        if self.batch_log is not None and self._batch_log is None:
            self.batch_log.parent.mkdir(parents=True, exist_ok=True)
            self._batch_log = self.batch_log.open("a", encoding="utf-8")  # O_APPEND: one write() per line
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
        self._start_batch()
        with sink_errors(f"{self.name}: warehouse"), self.engine.begin() as conn:
            written = self.write(conn, batch) if batch.records else 0
            store_offsets(conn, self.group_id, batch.next_offsets)
        self._log_batch(len(batch.records))
        self.rows_written += written

    def write(self, conn: Connection, batch: Batch) -> int:
        """Write the batch's rows with ``conn`` (inside the transaction); return how many rows were sent.

        Rows take ``self.loaded_at`` as their ``loaded_at``; ``count_rows`` feeds the batch log.
        """
        raise NotImplementedError

    def count_rows(self, table: str, rows: int) -> None:
        """``rows`` rows were sent to ``table`` in the batch being written (the batch log's ``rows``)."""
        if rows:
            self.batch_rows[table] = self.batch_rows.get(table, 0) + rows

    def _start_batch(self) -> None:
        self.loaded_at = utc_now()
        self.batch_rows = {}

    def _log_batch(self, records: int) -> None:
        """After COMMIT returned: the batch log's line for a batch that wrote records."""
        if self._batch_log is None or not records:
            return
        committed_at = utc_now()
        try:
            self._batch_log.write(json.dumps({
                "loaded_at": self.loaded_at.isoformat(), "committed_at": committed_at.isoformat(),
                "loaded_at_us": (self.loaded_at - _EPOCH) // _MICROSECOND,
                "committed_at_us": (committed_at - _EPOCH) // _MICROSECOND,
                "records": records, "rows": self.batch_rows, "group": self.group_id, "pid": os.getpid()}) + "\n")
            self._batch_log.flush()
        except OSError as exc:
            # The batch is committed: raising would make the runtime re-write it record by record and
            # dead-letter rows that are in the warehouse. The log is diagnostics; it stops here, loudly.
            log.error("%s: batch log %s cannot be written (%s); no more lines are written", self.name,
                      self.batch_log, exc)
            log_file, self._batch_log = self._batch_log, None
            try:
                log_file.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._batch_log is not None:
            self._batch_log.close()
            self._batch_log = None
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
        self._stored = {}
        self._start_batch()
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
        self._log_batch(len(fresh.records))
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
