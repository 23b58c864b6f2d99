"""The consumer runtime every Python consumer runs on: poll in batches, process, commit, dead-letter.

A consumer is a subclass of ``StreamConsumer`` that names its catalog topics and implements
``process_batch(batch)``; ``run_consumer`` (or ``run_consumer_cli`` from a ``mbyn consume`` module) owns
everything around it:

* **Group.** ``group.id`` = ``settings.topic_prefix + consumer.name``; run several copies (processes) of
  the same consumer and the group spreads the partitions (``roundrobin`` assignment). Auto-commit is off,
  ``isolation.level=read_committed`` (records of aborted transactions are never seen).
* **Batches.** ``consume(batch_size, batch_timeout)`` returns up to ``batch_size`` records; each is decoded
  by ``consumer.decode(record)`` (default: the catalog envelope, validated against the topic's JSON
  Schema; a tombstone on a compacted topic decodes to ``None``). The batch handed to ``process_batch``
  holds the good records in poll order (``batch.by_partition()`` groups them per partition) and
  ``next_offsets``, the offset to resume from per partition — covering dead-lettered records too.
* **Commit policy** (``commit_mode``):
  ``"kafka"`` — after ``process_batch`` returns, the batch's next offsets are committed synchronously
  (at-least-once: a crash between the sink write and the commit re-delivers the batch; make the sink
  idempotent). ``"sink"`` — the consumer stores ``batch.next_offsets`` in its sink in the same
  transaction as the data and returns them from ``on_assign`` (exactly-once into that sink); Kafka
  commits still happen, asynchronously, so lag tools see progress, but nothing reads them back.
  ``"transaction"`` — the consumer commits itself (``send_offsets_to_transaction`` with
  ``runtime.group_metadata()`` and ``batch.offsets()``); the runtime never commits.
* **Failures are classified by where they happen**, not by a list of exception types — no record can
  stop a consumer:

  - *Decoding one record* raises anything → that record is dead-lettered: the ``PoisonRecordError``
    reason of the codec (``mbyn.contracts.codec``), else ``unexpected_error``.
  - *Processing the batch* raises a ``transient_errors`` error (default ``SinkUnavailableError``: the
    database or broker is down) → the same batch is retried with exponential back-off (0.5 s … 15 s);
    nothing is committed or dead-lettered.
  - *Processing the batch* raises anything else → the runtime checks that the sink still answers (an
    empty ``process_batch``) and re-runs the batch one record at a time; a record that fails alone is
    dead-lettered with its error's ``reason`` (``sink_rejected`` for ``SinkRejectedError``: the database
    refused its row) or ``unexpected_error``, the others are written. ``process_batch`` must therefore be
    all-or-nothing when it raises (one database transaction, one Kafka transaction).
  - What fails with no record to blame — the empty write fails too — is an outage or a broken sink, not
    data: back-off and retry the batch, never commit past it, never dead-letter it.
  - ``fatal_errors`` (default ``StateError``, ``ConfigError``: the process itself cannot go on, e.g. a
    fenced transactional producer) end the run; the supervisor restarts the copy.

  A dead letter is produced to ``dead-letters`` with the original key, value bytes and headers plus the
  ``dlq.*`` headers of ``mbyn.contracts.dead_letters`` (reason, error class, message and a short
  traceback, original topic / partition / offset / timestamp, consumer group), and acknowledged by the
  broker (``flush_or_raise``) before any offset past it is committed or stored. A stop signal during
  retries abandons the batch uncommitted (it is re-read on the next start) and the exit status is 1. A
  retry that outlives ``max.poll.interval.ms`` (5 min) costs the copy its partitions; the next owner
  re-reads the batch, which every commit mode tolerates.
* **Rebalances.** ``on_assign`` may return start offsets (``"sink"`` mode: the offsets the sink stored;
  partitions it does not know start from the earliest record). ``on_revoke`` is called before partitions
  go away; the previous batch is always fully processed and committed by then, because librdkafka only
  runs rebalance callbacks inside ``consume``.
* **Shutdown.** SIGTERM/SIGINT (``StopFlag``), ``duration`` or ``idle_exit`` (seconds without a record,
  counted from the end of the last batch or rebalance; a copy that never joins the group gives up after
  ``idle_exit`` + 60 s) stop the loop between batches: the current batch is finished and committed, then the consumer is
  closed in ``finally`` (leaving the group promptly), and a JSON summary line is printed on stdout.
* **Broker down at start** → ``wait_for_broker`` (back-off, one line per attempt).

Progress lines (counts and rate) go to stderr every ``progress_interval`` seconds.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gc
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mbyn.catalog import Catalog, load_catalog
from mbyn.contracts.codec import decode_record
from mbyn.contracts.dead_letters import build_headers, describe_error, shorten
from mbyn.errors import ConfigError, SinkUnavailableError, StateError
from mbyn.kafka.producer import TopicProducer, wait_for_broker
from mbyn.kafka.security import client_config
from mbyn.process import Progress, StopFlag, backoff_delays, setup_logging
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

log = logging.getLogger("mbyn.consumer")

CommitMode = Literal["kafka", "sink", "transaction"]
#: (physical topic, partition) — the unit of ordering and of offsets.
PartitionKey = tuple[str, int]

DEAD_LETTER_TOPIC = "dead-letters"
#: The dead-letter producer's largest message: a raw record of up to the broker's default 1 MiB plus the
#: ``dlq.*`` headers must fit (``dead-letters`` allows the same in include/topics.yaml).
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024
#: Added to a dead letter whose value was too large to send on (its length and SHA-256); the value is then null.
VALUE_DROPPED_HEADER = "dlq.value_dropped"

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "partition.assignment.strategy": "roundrobin",
    "auto.offset.reset": "earliest",
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.poll.interval.ms": 300_000,
}


@dataclass
class Record:
    """One consumed record. ``data`` is what ``decode`` returned (the envelope dict; ``None`` for a tombstone)."""

    topic: str  # logical catalog name
    physical_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int | None
    data: Any = None

    @property
    def partition_key(self) -> PartitionKey:
        return (self.physical_topic, self.partition)

    @property
    def key_str(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")

    def header(self, name: str) -> str | None:
        """The last header called ``name`` as text, or None."""
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode("utf-8", errors="replace") if v is not None else None
        return None


class _PolledRecord(Record):
    """A Record straight from ``consume()``: its headers are read from the message on first use.

    Converting a message's headers costs more than decoding its JSON, and most consumers never look at
    them (dead-lettering and the lake archiver do).
    """

    _headers: list[tuple[str, bytes | None]] | None

    def __init__(self, message: Message, **fields: Any) -> None:
        self._message: Message | None = message
        super().__init__(headers=None, **fields)  # type: ignore[arg-type]  # the setter below keeps "unread"

    @property  # type: ignore[override]
    def headers(self) -> list[tuple[str, bytes | None]]:
        if self._headers is None:
            assert self._message is not None
            headers = message_headers(self._message)
            self._headers = headers
            self._message = None
            return headers
        return self._headers

    @headers.setter
    def headers(self, value: list[tuple[str, bytes | None]] | None) -> None:
        self._headers = value


@dataclass
class Batch:
    """The good records of one poll, in poll order, and the offsets to resume from afterwards.

    ``next_offsets`` maps every partition the poll touched — including partitions whose records were all
    dead-lettered — to ``last offset + 1``. A batch can therefore be empty and still carry offsets: a
    ``"sink"``-mode consumer must store them anyway.
    """

    records: list[Record]
    next_offsets: dict[PartitionKey, int]

    def __len__(self) -> int:
        return len(self.records)

    def by_partition(self) -> dict[PartitionKey, list[Record]]:
        """Records grouped per (physical topic, partition), each group in offset order."""
        groups: dict[PartitionKey, list[Record]] = {}
        for record in self.records:
            groups.setdefault(record.partition_key, []).append(record)
        return groups

    def by_topic(self) -> dict[str, list[Record]]:
        """Records grouped per logical topic, in poll order (offset order within a partition)."""
        groups: dict[str, list[Record]] = {}
        for record in self.records:
            groups.setdefault(record.topic, []).append(record)
        return groups

    def offsets(self) -> list[TopicPartition]:
        """``next_offsets`` as confluent-kafka TopicPartitions (for commits and transactions)."""
        from confluent_kafka import TopicPartition

        return [TopicPartition(t, p, o) for (t, p), o in sorted(self.next_offsets.items())]


@dataclass
class ConsumerCounters:
    consumed: int = 0
    processed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    retries: int = 0
    assignments: int = 0
    abandoned: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "processed": self.processed, "dead_lettered": self.dead_lettered,
                "batches": self.batches, "commits": self.commits, "commit_failures": self.commit_failures,
                "retries": self.retries, "assignments": self.assignments, "abandoned": self.abandoned,
                "dead_letter_reasons": dict(self.dead_letter_reasons)}


class StreamConsumer:
    """Base class of a consumer: name, topics, policy attributes and hooks; override ``process_batch``.

    Class attributes (override per consumer):

    * ``name`` — the consumer (and group) name, e.g. ``warehouse-loader``.
    * ``topics`` — logical catalog topics to subscribe to.
    * ``commit_mode`` — ``"kafka"`` (default), ``"sink"`` or ``"transaction"``; see the module docstring.
    * ``batch_size`` / ``batch_timeout`` — ``consume(batch_size, batch_timeout)``: a batch is handed over
      when ``batch_size`` records have arrived or ``batch_timeout`` seconds have passed, whichever is first
      (``--batch-size`` / ``--max-wait-ms``). Under load batches fill at once; at a low rate the timeout is
      the latency a record can wait before it is processed. Larger batches mean fewer commits and
      transactions, smaller ones less re-processing after a crash.
    * ``transient_errors`` — errors that retry the batch with back-off (the sink is down);
      ``retry_timeout_s`` — give up (raise) after that long (None: never); ``fatal_errors`` — errors that
      end the run; ``dead_letters`` — False for a consumer that must never dead-letter (the dead-letters
      sink itself): a record it cannot write is retried, never skipped.
    * ``kafka_config`` — extra librdkafka settings (merged last).
    """

    name: ClassVar[str] = ""
    topics: ClassVar[tuple[str, ...]] = ()
    commit_mode: ClassVar[CommitMode] = "kafka"
    batch_size: int = 1000
    batch_timeout: float = 1.0
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = (SinkUnavailableError,)
    fatal_errors: ClassVar[tuple[type[BaseException], ...]] = (StateError, ConfigError)
    dead_letters: ClassVar[bool] = True
    retry_timeout_s: float | None = None
    kafka_config: ClassVar[Mapping[str, Any]] = {}

    # Hooks --------------------------------------------------------------------------------------

    def open(self, runtime: ConsumerRuntime) -> None:
        """Called once after the Kafka consumer exists and before subscribing (open sinks here)."""

    def decode(self, record: Record) -> Any:
        """Turn a record into ``record.data``; whatever it raises dead-letters the record. Default: envelope."""
        return decode_envelope(record)

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> Mapping[PartitionKey, int] | None:
        """Partitions were assigned. Return start offsets per partition to seek there (``"sink"`` mode);
        None keeps Kafka's committed offsets (or ``auto.offset.reset`` = earliest)."""
        return None

    def on_revoke(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        """Partitions are about to go to another copy; everything polled so far is processed and committed."""

    def process_batch(self, batch: Batch) -> None:
        """Write the batch to the sink — all-or-nothing when it raises. Must accept an empty batch."""
        raise NotImplementedError

    def on_idle(self, runtime: ConsumerRuntime) -> None:
        """Called after every poll that returned no record (timers, window flushes, lag sampling)."""

    def offsets_to_commit(self, batch: Batch) -> Mapping[PartitionKey, int]:
        """What the runtime commits after ``batch`` (``"kafka"``/``"sink"`` modes); default its next offsets.

        A consumer holding state built from records (a join) returns less — per partition the oldest
        offset it still needs — so a restarted copy rebuilds that state by re-reading from there.
        """
        return batch.next_offsets

    def close(self) -> None:
        """Called once at exit (in ``finally``), after the Kafka consumer is closed."""

    def summary(self) -> dict[str, Any]:
        """Extra fields for the JSON summary line."""
        return {}


class ConsumerRuntime:
    """Runs one copy of a StreamConsumer: the poll → decode → dead-letter → process → commit loop."""

    def __init__(self, consumer: StreamConsumer, settings: Settings, *, stop: StopFlag | None = None,
                 instance_id: str | None = None, progress_interval: float = 5.0) -> None:
        if not consumer.name or not consumer.topics:
            raise ValueError(f"{type(consumer).__name__} must set `name` and `topics`")
        self.app = consumer
        self.settings = settings
        self.stop = stop or StopFlag()
        self.instance_id = instance_id
        self.progress_interval = progress_interval
        self.catalog: Catalog = load_catalog()
        self.group_id = settings.topic_prefix + consumer.name
        self.counters = ConsumerCounters()
        self.assignment: set[PartitionKey] = set()
        self._kafka: Consumer | None = None
        self._last_rebalance: float | None = None
        self._dlq: TopicProducer | None = None
        self._physical_to_logical = {t.physical: t.name for t in self.catalog.topics.values()}

    # Properties consumers may use ---------------------------------------------------------------

    @property
    def kafka(self) -> Consumer:
        """The underlying confluent_kafka.Consumer (positions, watermarks, group metadata)."""
        if self._kafka is None:
            raise RuntimeError("the Kafka consumer is not open yet")
        return self._kafka

    def group_metadata(self) -> Any:
        """For ``producer.send_offsets_to_transaction(batch.offsets(), runtime.group_metadata())``."""
        return self.kafka.consumer_group_metadata()

    # The loop -----------------------------------------------------------------------------------

    def run(self, *, duration: float | None = None, idle_exit: float | None = None) -> dict[str, Any]:
        """Consume until stopped, ``duration`` elapsed or ``idle_exit`` seconds without a record; the summary."""
        from confluent_kafka import Consumer

        app = self.app
        started = time.monotonic()
        wait_for_broker(self.settings, app.name, stop=self.stop)
        conf: dict[str, Any] = {
            **CONSUMER_DEFAULTS,
            **client_config(self.settings),
            "group.id": self.group_id,
            "client.id": f"mbyn-{app.name}",
            "session.timeout.ms": int(self.settings.consumer_session_timeout_s * 1000),
            "heartbeat.interval.ms": max(500, int(self.settings.consumer_session_timeout_s * 1000 / 4)),
            "error_cb": self._on_error,
            **app.kafka_config,
        }
        if self.instance_id:
            conf["group.instance.id"] = self.instance_id  # static membership: a restart keeps the partitions
        self._kafka = Consumer(conf)
        self._last_error_log = 0.0
        stopped_by = "stop"
        last_record = time.monotonic()
        progress = Progress(lambda: self._report(started), self.progress_interval)
        try:
            app.open(self)
            physical = [self.catalog.get(t).physical for t in app.topics]
            self._kafka.subscribe(physical, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                  on_lost=self._on_lost)
            log.info("%s: group %s subscribed to %s (commit mode %s)", app.name, self.group_id,
                     ", ".join(physical), app.commit_mode)
            deadline = started + duration if duration else None
            while True:
                if self.stop.is_set():
                    stopped_by = self.stop.reason or "stop"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stopped_by = "duration"
                    break
                # The idle clock starts at the last record or rebalance: joining the group can take
                # seconds on a busy broker and must not count as "no records".
                if idle_exit is not None and self._last_rebalance is not None \
                        and now - max(last_record, self._last_rebalance) >= idle_exit:
                    stopped_by = "idle"
                    break
                if idle_exit is not None and self._last_rebalance is None and now - started >= idle_exit + 60:
                    stopped_by = "idle (never joined the group)"
                    break
                messages = self._kafka.consume(app.batch_size, app.batch_timeout)
                records = self._records(messages)
                if records:
                    if not self._handle(records):
                        stopped_by = self.stop.reason or "stop"
                        break
                    # Counted from the end of the batch: time spent writing it (or retrying through a
                    # sink outage) is not time without records.
                    last_record = time.monotonic()
                else:
                    app.on_idle(self)
                progress.tick()
        finally:
            try:
                self._kafka.close()  # leaves the group now, not after the session timeout
            finally:
                try:
                    if self._dlq is not None:
                        self._dlq.close()
                finally:
                    app.close()
        summary = {"consumer": app.name, "group": self.group_id, **self.counters.as_dict(),
                   "stopped_by": stopped_by, "seconds": round(time.monotonic() - started, 2), **app.summary()}
        log.info("%s: stopped (%s) %s", app.name, stopped_by, self._line())
        return summary

    def _records(self, messages: list[Message]) -> list[Record]:
        from confluent_kafka import KafkaError, KafkaException

        records: list[Record] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                self._log_error(f"consume: {err.str()}")
                continue
            ts_type, ts = msg.timestamp()
            physical = msg.topic() or ""
            records.append(_PolledRecord(
                msg, topic=self._physical_to_logical.get(physical, physical), physical_topic=physical,
                partition=int(msg.partition() or 0), offset=int(msg.offset() or 0), key=msg.key(),
                value=msg.value(), timestamp_ms=ts if ts_type != 0 else None))  # 0 = TIMESTAMP_NOT_AVAILABLE
        self.counters.consumed += len(records)
        return records

    def _handle(self, records: list[Record]) -> bool:
        """Decode, dead-letter, process and commit one poll. False: stopped before the batch was written."""
        app = self.app
        next_offsets: dict[PartitionKey, int] = {}
        good: list[Record] = []
        rejected = 0
        for record in records:
            next_offsets[record.partition_key] = max(next_offsets.get(record.partition_key, 0), record.offset + 1)
            try:
                record.data = app.decode(record)
            except app.fatal_errors:
                raise
            except Exception as exc:  # whatever one record's bytes cause, it is that record's
                if not app.dead_letters:
                    raise
                self.dead_letter(record, exc)
                rejected += 1
                continue
            good.append(record)
        if rejected:
            self._dead_letters().flush_or_raise()
        batch = Batch(good, next_offsets)
        if not self._write(batch):
            return False
        self.counters.batches += 1
        self._commit(batch)
        return True

    def _write(self, batch: Batch) -> bool:
        """``process_batch`` until it succeeds: outages retried, records the sink refuses dead-lettered."""
        delays = backoff_delays()
        while True:
            outage = False
            try:
                return self._process_with_retry(batch)
            except self.app.fatal_errors:
                raise
            except self.app.transient_errors as exc:  # outlived retry_timeout_s: still an outage, never data
                error, outage = exc, True
            except Exception as exc:  # noqa: BLE001 - classified below by where it happened, not by type
                error = exc
            if not outage and batch.records and self.app.dead_letters and self._sink_answers():
                return self._process_one_by_one(batch)
            if not self._wait_after_failure(error, next(delays), len(batch.records)):
                return False

    def _process_with_retry(self, batch: Batch) -> bool:
        """``process_batch`` with back-off on transient errors; False if stopped before it succeeded."""
        app = self.app
        started = time.monotonic()
        for attempt, delay in enumerate(backoff_delays(), start=1):
            try:
                app.process_batch(batch)
                self.counters.processed += len(batch.records)
                if attempt > 1:
                    log.info("%s: batch written after %d attempts", app.name, attempt)
                return True
            except app.transient_errors as exc:
                self.counters.retries += 1
                if app.retry_timeout_s is not None and time.monotonic() - started + delay > app.retry_timeout_s:
                    raise
                log.warning("%s: sink unavailable (%s: %s); retrying the batch of %d in %.1fs", app.name,
                            type(exc).__name__, shorten(str(exc), 300), len(batch.records), delay)
                if self.stop.wait(delay):
                    self.counters.abandoned += len(batch.records)
                    log.warning("%s: stopped while the sink was down; %d records left uncommitted (re-read on "
                                "the next start)", app.name, len(batch.records))
                    return False
        raise AssertionError("unreachable")  # backoff_delays is infinite

    def _sink_answers(self) -> bool:
        """Whether an empty ``process_batch`` succeeds: if not, a failure is the sink's, not a record's."""
        try:
            self.app.process_batch(Batch([], {}))
        except self.app.fatal_errors:
            raise
        except Exception:  # noqa: BLE001 - any failure of an empty write means "not the data"
            return False
        return True

    def _wait_after_failure(self, error: BaseException, delay: float, records: int) -> bool:
        """A failure no record can be blamed for: log, back off; False when stopped meanwhile."""
        self.counters.retries += 1
        error_class, message, _ = describe_error(error)
        log.error("%s: the sink failed for the whole batch of %d and for an empty write (%s: %s); nothing is "
                  "committed, retrying in %.1fs", self.app.name, records, error_class, shorten(message, 300), delay)
        if self.stop.wait(delay):
            self.counters.abandoned += records
            log.warning("%s: stopped while the sink was failing; %d records left uncommitted (re-read on the next "
                        "start)", self.app.name, records)
            return False
        return True

    def _process_one_by_one(self, batch: Batch) -> bool:
        """A batch failed while the sink answers: write it record by record, dead-letter what fails alone.

        Each dead letter is acknowledged before the next record's write can store an offset past it.
        """
        app = self.app
        log.warning("%s: a batch of %d failed; writing it record by record to find the culprit(s)", app.name,
                    len(batch.records))
        delays = backoff_delays()
        for record in batch.records:
            single = Batch([record], {record.partition_key: record.offset + 1})
            while True:
                try:
                    if not self._process_with_retry(single):
                        return False
                    break
                except app.fatal_errors:
                    raise
                except app.transient_errors as exc:  # an outage outlived retry_timeout_s: never the record's
                    if not self._wait_after_failure(exc, next(delays), 1):
                        return False
                except Exception as exc:  # noqa: BLE001 - the record's own failure, unless the sink is gone
                    if self._sink_answers():
                        self.dead_letter(record, exc)
                        self._dead_letters().flush_or_raise()
                        break
                    if not self._wait_after_failure(exc, next(delays), 1):
                        return False
        # Store the offsets past the dead-lettered records too ("sink" mode needs the empty batch).
        return self._write(Batch([], batch.next_offsets))

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        mode = self.app.commit_mode
        offsets = self.app.offsets_to_commit(batch)
        if mode == "transaction" or not offsets:
            return
        # Synchronous in both modes: a few milliseconds per batch buys "committed == written" at every
        # stop, which lag monitoring and operators rely on. In "sink" mode a failure is harmless (the sink
        # holds the offsets that count); in "kafka" mode it means the batch will be re-delivered.
        consequence = "informational only" if mode == "sink" else "the batch will be re-delivered"
        try:
            result = self.kafka.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                                       asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions away while the batch was being processed.
            self.counters.commit_failures += 1
            log.warning("%s: commit failed (%s); %s", self.app.name, exc, consequence)
            return
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            self.counters.commit_failures += 1
            log.warning("%s: commit failed for %s; %s", self.app.name,
                        ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed), consequence)
        else:
            self.counters.commits += 1

    # Dead letters -------------------------------------------------------------------------------

    def _dead_letters(self) -> TopicProducer:
        if self._dlq is None:
            self._dlq = dead_letter_producer(self.app.name, self.settings)
        return self._dlq

    def dead_letter(self, record: Record, error: BaseException) -> None:
        """Send ``record`` to the dead-letters topic with its original bytes, key, headers and the reason.

        Enqueued only; the runtime flushes (``flush_or_raise``) before the batch's offsets move on.
        """
        reason = send_dead_letter(self._dead_letters(), record, error, self.group_id, self.catalog)
        self.counters.dead_lettered += 1
        self.counters.dead_letter_reasons[reason] = self.counters.dead_letter_reasons.get(reason, 0) + 1

    # Rebalance callbacks (run inside consume()) -------------------------------------------------

    def _on_assign(self, kafka: Consumer, partitions: list[TopicPartition]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.counters.assignments += 1
        start = self.app.on_assign(self, keys)
        if start is not None:
            for tp in partitions:
                tp.offset = start.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        kafka.assign(partitions)
        self.assignment = set(keys)
        self._last_rebalance = time.monotonic()
        log.info("%s: assigned %d partition(s)%s", self.app.name, len(keys),
                 " (positions from the sink)" if start is not None else "")

    def _on_revoke(self, kafka: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.app.on_revoke(self, keys)
        self.assignment.clear()
        self._last_rebalance = time.monotonic()
        log.info("%s: revoked %d partition(s)", self.app.name, len(keys))

    def _on_lost(self, kafka: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("%s: lost %d partition(s) (session timed out); another copy owns them now", self.app.name,
                    len(keys))
        self.app.on_revoke(self, keys)
        self.assignment.clear()
        # A rebalance like any other: rejoining (e.g. while a broker fails over) is not idle time.
        self._last_rebalance = time.monotonic()

    # Logging ------------------------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        self._log_error(f"kafka: {err.str()}")

    def _log_error(self, text: str) -> None:
        now = time.monotonic()
        if now - getattr(self, "_last_error_log", 0.0) > 10:  # one line per 10 s, not one per retry
            self._last_error_log = now
            log.warning("%s: %s", self.app.name, text)

    def _line(self) -> str:
        c = self.counters
        return (f"consumed={c.consumed} processed={c.processed} dead_lettered={c.dead_lettered} "
                f"batches={c.batches} retries={c.retries}")

    def _report(self, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        log.info("%s: %s (%.0f/s) partitions=%d", self.app.name, self._line(), self.counters.consumed / elapsed,
                 len(self.assignment))


# Decoding -----------------------------------------------------------------------------------------

#: A call through ``ctypes.pythonapi`` raises whatever exception a C function left pending (see below).
_RAISE_PENDING = ctypes.pythonapi.PyErr_Occurred


def message_headers(message: Message) -> list[tuple[str, bytes | None]]:
    """A consumed message's headers as (name, value) pairs, in order; ``[]`` when they cannot be read.

    The only safe way to read headers from confluent-kafka (2.16): when a header *name* is not UTF-8, its
    ``Message.headers()`` returns a list holding a tuple with a NULL slot and leaves a UnicodeDecodeError
    pending (raised at some later, unrelated call), and returns the same broken list on every later call.
    Unpacking that tuple crashes the interpreter. Here the pending error is raised at once and every tuple
    is checked for a missing slot before it is touched, so such a record reads as having no headers.
    """
    try:
        raw = message.headers()
        _RAISE_PENDING()
    except (ValueError, SystemError):  # the UnicodeDecodeError, raised bare or as "result with an exception set"
        log.warning("%s[%s]@%s: a header name is not UTF-8; the record's headers are ignored", message.topic(),
                    message.partition(), message.offset())
        return []
    if not raw:
        return []
    headers: list[tuple[str, bytes | None]] = []
    for item in raw:
        if type(item) is not tuple or len(item) != 2 or len(gc.get_referents(item)) != 2:
            return []  # the broken list of an earlier call (a slot is NULL): never unpack it
        name, value = item
        headers.append((name, value.encode() if isinstance(value, str) else value))
    return headers


def decode_envelope(record: Record, catalog: Catalog | None = None) -> dict[str, Any] | None:
    """The record's envelope (``mbyn.contracts.codec.decode_record``); ``None`` for a tombstone.

    Raises PoisonRecordError (``reason`` = the code) and nothing else.
    """
    return decode_record(record.topic, record.key, record.value, catalog)


def send_dead_letter(producer: TopicProducer, record: Record, error: BaseException, consumer_group: str,
                     catalog: Catalog | None = None) -> str:
    """Enqueue ``record`` on ``dead-letters`` with the ``dlq.*`` headers of ``error``; returns the reason.

    The caller flushes (``producer.flush_or_raise()``) before it commits any offset past the record. Used
    by the runtime and by the Airflow tasks that consume without it, so every dead letter looks the same.
    """
    reason = dead_letter_reason(error)
    error_class, message, trace = describe_error(error)
    headers = build_headers(record.headers, reason=reason, error_class=error_class, error_message=message,
                            traceback_text=trace, topic=record.physical_topic, partition=record.partition,
                            offset=record.offset, timestamp_ms=record.timestamp_ms, consumer_group=consumer_group)
    physical = (catalog or load_catalog()).get(DEAD_LETTER_TOPIC).physical
    value = record.value
    size = len(value or b"") + len(record.key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
    if value is not None and size > DEAD_LETTER_MAX_BYTES - 64 * 1024:
        # The broker checks a batch's *compressed* size: a compressible value far beyond any limit can arrive,
        # but no producer can send it on. Its fingerprint goes instead, so the record is still accounted for.
        fingerprint = f"{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()}"
        headers.append((VALUE_DROPPED_HEADER, fingerprint.encode()))
        value = None
    producer.send_raw(physical, value, record.key, headers)
    log.warning("%s: dead-lettered %s[%d]@%d (%s): %s", consumer_group, record.physical_topic, record.partition,
                record.offset, reason, shorten(message, 200))
    return reason


def dead_letter_producer(name: str, settings: Settings) -> TopicProducer:
    """A producer for dead letters: room for a raw record of the broker's largest size plus the headers."""
    return TopicProducer(f"{name}-dlq", settings, config={"message.max.bytes": DEAD_LETTER_MAX_BYTES})


def dead_letter_reason(error: BaseException) -> str:
    """The dead letter's reason code: the error's ``reason`` attribute, else ``unexpected_error``."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else "unexpected_error"


def encode_headers(headers: Iterable[tuple[str, bytes | None]]) -> str:
    """Headers as JSON text (values base64) — how sinks store original headers for a later replay."""
    return json.dumps([[k, None if v is None else base64.b64encode(v).decode()] for k, v in headers])


def decode_headers(text: str | None) -> list[tuple[str, bytes | None]]:
    """The inverse of ``encode_headers``."""
    if not text:
        return []
    return [(k, None if v is None else base64.b64decode(v)) for k, v in json.loads(text)]


# Entry points -------------------------------------------------------------------------------------

def run_consumer(consumer: StreamConsumer, settings: Settings, *, stop: StopFlag | None = None,
                 duration: float | None = None, idle_exit: float | None = None,
                 instance_id: str | None = None) -> dict[str, Any]:
    """Run one copy of ``consumer`` in this thread until stopped; returns the summary dict."""
    runtime = ConsumerRuntime(consumer, settings, stop=stop, instance_id=instance_id)
    return runtime.run(duration=duration, idle_exit=idle_exit)


def add_consumer_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every runtime consumer accepts beyond --duration/--idle-exit (added by `mbyn consume`)."""
    parser.add_argument("--batch-size", type=int, default=None, help="records per poll (default: per consumer)")
    parser.add_argument("--max-wait-ms", type=int, default=None,
                        help="longest wait for a batch to fill before the records that have arrived are processed "
                             "(default: per consumer; lower = less latency, more and smaller transactions)")
    parser.add_argument("--instance-id", default=None,
                        help="static group membership id: a restarted copy gets its partitions back at once")


def run_consumer_cli(factory: Callable[[], StreamConsumer], settings: Settings, args: argparse.Namespace) -> int:
    """CLI wrapper: logging, signals, limits from args, JSON summary on stdout; 0 unless a batch was abandoned."""
    setup_logging()
    stop = StopFlag().install()
    consumer = factory()
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None:
        if batch_size < 1:
            raise SystemExit("mbyn: --batch-size must be at least 1")
        consumer.batch_size = batch_size
    max_wait_ms = getattr(args, "max_wait_ms", None)
    if max_wait_ms is not None:
        if max_wait_ms < 1:
            raise SystemExit("mbyn: --max-wait-ms must be at least 1")
        consumer.batch_timeout = max_wait_ms / 1000
    summary = run_consumer(consumer, settings, stop=stop, duration=getattr(args, "duration", None),
                           idle_exit=getattr(args, "idle_exit", None), instance_id=getattr(args, "instance_id", None))
    print(json.dumps(summary), flush=True)
    sys.stdout.flush()
    return 0 if summary["abandoned"] == 0 else 1
