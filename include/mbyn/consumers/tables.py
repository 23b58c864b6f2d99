"""Compacted topics read as in-memory tables by every copy of a consumer: ``TopicTable`` and ``FxRates``.

The order-enricher and the sales-aggregator both convert amounts to EUR with ``FxRates`` (the ``fx-rates``
topic, currency → rate per EUR).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, ClassVar

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from mbyn.catalog import load_catalog
from mbyn.consumers.contract import Record, decode_envelope
from mbyn.errors import ContractError, PoisonRecordError, StateError
from mbyn.kafka.inspect import partitions_of, reader
from mbyn.process import StopFlag
from mbyn.settings import Settings

log = logging.getLogger("mbyn.consumer")


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
        physical = self._physical = load_catalog().get(self.topic).physical
        # The group id is never joined nor committed to; it is the one the secured mode allows this service's
        # table readers (``mbyn.kafka.security.acl_plan``: ``<prefix><group>-table-`` prefixed).
        self._consumer = reader(self.settings, f"{self.who}-table",
                                group_id=f"{self.settings.topic_prefix}{self.who}-table-{uuid.uuid4().hex[:8]}")
        partitions = partitions_of(self._consumer, physical, timeout_s=10)
        if partitions is None:
            raise StateError(f"{self.who}: topic {physical} does not exist; run `mbyn topics apply` first")
        parts = [TopicPartition(physical, p, OFFSET_BEGINNING) for p in partitions]
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
        while True:
            try:
                return int(self._consumer.get_watermark_offsets(tp, timeout=10)[1])
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise StateError(f"{self.who}: cannot read the end of {tp.topic}[{tp.partition}]: {exc}") from exc
                time.sleep(0.5)

    def _position(self, partition: int) -> int:
        [tp] = self._consumer.position([TopicPartition(self._physical, partition)])
        return int(tp.offset) if tp.offset >= 0 else 0

    def refresh(self, timeout: float = 0.0) -> int:
        """Apply the changes available now (waiting up to ``timeout`` for the first); returns how many."""
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
