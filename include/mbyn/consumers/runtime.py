"""The consumer runtime every Python consumer runs on: poll in batches, process, commit, dead-letter.

A consumer is a subclass of ``StreamConsumer`` (``mbyn.consumers.contract``) that names its catalog topics
and implements ``process_batch(batch)``; ``run_consumer`` (or ``run_consumer_cli`` from a ``mbyn consume``
module) owns everything around it — the loop here, writing a batch in ``mbyn.consumers.batch_writer``,
sending dead letters in ``mbyn.consumers.dead_letter_sender``:

* **Group.** ``group.id`` = ``settings.topic_prefix + consumer.name``; run several copies (processes) of
  the same consumer and the group spreads the partitions (``roundrobin`` assignment). Auto-commit is off,
  ``isolation.level=read_committed`` (records of aborted transactions are never seen).
* **Batches.** Adaptive: ``consume(1, batch_timeout)`` waits for a first record, then ``consume(n, 0)``
  takes what is already waiting, up to ``batch_size`` records; the batch is handed over as soon as nothing
  more is waiting (never held back to fill up). A rebalance callback run by one of those calls drops what
  the earlier calls returned for the partitions it revoked (re-read from the committed / stored offset by
  their new owner), as librdkafka itself does within one call. Each record is decoded
  by ``consumer.decode(record)`` (default: the catalog envelope, validated against the topic's JSON
  Schema; a tombstone on a compacted topic decodes to ``None``). The batch handed to ``process_batch``
  holds the good records in poll order (``batch.by_partition()`` groups them per partition) and
  ``next_offsets``, the offset to resume from per partition — covering dead-lettered records too.
* **Commit policy** (``commit_mode``):
  ``"kafka"`` — after ``process_batch`` returns, the batch's next offsets are committed synchronously
  (at-least-once: a crash between the sink write and the commit re-delivers the batch; make the sink
  idempotent). ``"sink"`` — the consumer stores ``batch.next_offsets`` in its sink in the same
  transaction as the data and returns them from ``on_assign`` (exactly-once into that sink); Kafka
  commits still happen so lag tools see progress, but nothing reads them back: asynchronously after each
  batch (the loop does not wait a round trip per batch), then synchronously for the owned partitions
  before they are revoked and at the end of the run, so "Kafka committed == written" holds at every stop.
  ``"transaction"`` — the consumer commits itself (``send_offsets_to_transaction`` with
  ``runtime.group_metadata()`` and ``batch.offsets()``); the runtime never commits.
  A consumer whose ``offsets_to_commit`` stays below what it processed (a join holding records) commits with
  the metadata ``mbyn:next=<next offset processed>`` (``mbyn.kafka.consumer.held_metadata``), so the lag
  monitor tells records it holds from records waiting.
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
* **Overlap** (``consumer.overlap``): ``process_batch`` runs in one writer thread while the loop fetches
  and decodes the next batch (librdkafka and the database drivers release the GIL). Batch N+1 is handed
  over only after batch N's write returned and N was committed; a write that failed (abandoned at a stop)
  or raised a fatal error ends the run before anything else is written. Dead letters of N+1 are flushed
  before its hand-over, so no stored offset passes an unacknowledged dead letter.
* **Rebalances.** ``on_assign`` may return start offsets (``"sink"`` mode: the offsets the sink stored;
  partitions it does not know start from the earliest record). ``on_revoke`` is called before partitions
  go away; the previous batch is always fully processed and committed by then, because librdkafka only
  runs rebalance callbacks inside ``consume`` and they first wait for the write in flight (overlap).
* **Shutdown.** SIGTERM/SIGINT (``StopFlag``), ``duration`` or ``idle_exit`` (seconds without a record,
  counted from the end of the last batch or rebalance; a copy that never joins the group gives up after
  ``idle_exit`` + 60 s) stop the loop between batches: the current batch is finished and committed, then the consumer is
  closed in ``finally`` (leaving the group promptly), and a JSON summary line is printed on stdout.
* **Broker down at start** → ``wait_for_broker`` (back-off, one line per attempt).

Progress lines (counts and rate) go to stderr every ``progress_interval`` seconds.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from mbyn.catalog import Catalog, load_catalog
from mbyn.consumers.batch_writer import BatchWriter
from mbyn.consumers.contract import Batch, ConsumerCounters, PartitionKey, PolledRecord, Record, StreamConsumer
from mbyn.consumers.dead_letter_sender import dead_letter_producer, send_dead_letter
from mbyn.kafka.clients import wait_for_broker
from mbyn.kafka.consumer import group_consumer, held_metadata
from mbyn.kafka.producer import DeliveryError, TopicProducer
from mbyn.options import Args
from mbyn.process import Progress, StopFlag, setup_logging
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

log = logging.getLogger("mbyn.consumer")


class ConsumerLoop:
    """Runs one copy of a StreamConsumer: the poll → decode → dead-letter → process → commit loop.

    It is the ``ConsumerRuntime`` (``mbyn.consumers.contract``) the consumer's hooks are given.
    """

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
        # Dead letters are sent from the loop (decoding) and, with overlap, from the writer thread.
        self._dlq_lock = threading.RLock()
        self._writer = BatchWriter(consumer, self.counters, self.stop, self.dead_letter, self._flush_dead_letters)
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: tuple[Future[bool], Batch] | None = None
        self._write_failed = False
        # A dead letter the broker refused: every later flush fails too, whichever thread saw the failure.
        self._dlq_error: BaseException | None = None
        # While ``_poll`` drains: the partitions a rebalance callback revoked (or lost) inside that consume call.
        self._revoked: set[PartitionKey] | None = None
        # The next offset processed per partition (the last batch's): a commit below it carries held_metadata.
        self._processed: dict[PartitionKey, int] = {}
        # "sink" mode: the next offsets committed asynchronously and not yet confirmed by a synchronous commit.
        self._unconfirmed: dict[PartitionKey, int] = {}

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
        app = self.app
        started = time.monotonic()
        wait_for_broker(self.settings, app.name, stop=self.stop)
        # A static member (instance_id) gets its partitions back at once after a restart.
        self._kafka = group_consumer(self.settings, self.group_id, f"mbyn-{app.name}", instance_id=self.instance_id,
                                     error_cb=self._on_error, config=app.kafka_config)
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
                if self._write_failed:
                    stopped_by = self.stop.reason or "stop"
                    break
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
                records = self._records(self._poll())
                if records:
                    if not self._handle(records):
                        stopped_by = self.stop.reason or "stop"
                        break
                    # Counted from the end of the batch: time spent writing it (or retrying through a
                    # sink outage) is not time without records.
                    last_record = time.monotonic()
                else:
                    if self._in_flight is not None:  # nothing to overlap with: finish the write now
                        if not self._settle():
                            stopped_by = self.stop.reason or "stop"
                            break
                        last_record = time.monotonic()
                    app.on_idle(self)
                progress.tick()
        finally:
            try:
                self._close_kafka()
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

    def _poll(self) -> list[Message]:
        """Adaptive hand-over: wait up to ``batch_timeout`` for a first record, then take what is waiting.

        A rebalance callback can run inside any of these consume calls. One call never returns records of a
        partition it revoked (librdkafka drops outdated ones), but records an EARLIER call of this poll returned
        for a revoked or lost partition are dropped here: ``on_revoke`` was told everything polled was processed,
        and the partition is re-read from its committed / stored offset by whoever owns it now.
        """
        kafka, size = self.kafka, self.app.batch_size
        messages = kafka.consume(1, self.app.batch_timeout)
        while messages and len(messages) < size:
            self._revoked = set()
            try:
                more = kafka.consume(size - len(messages), 0)
            finally:
                revoked, self._revoked = self._revoked, None
            if revoked:
                messages = [m for m in messages if (m.topic(), m.partition()) not in revoked]
            if not more:
                break
            messages.extend(more)
        return messages

    def _records(self, messages: list[Message]) -> list[Record]:
        records: list[Record] = []
        logical = self._physical_to_logical
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
            records.append(PolledRecord(msg, logical.get(physical, physical), physical, msg.partition() or 0,
                                        msg.offset() or 0, msg.key(), msg.value(),
                                        ts if ts_type != 0 else None))  # 0 = TIMESTAMP_NOT_AVAILABLE
        self.counters.consumed += len(records)
        return records

    def _handle(self, records: list[Record]) -> bool:
        """Decode, dead-letter, process and commit one poll. False: stopped before the batch was written."""
        app = self.app
        next_offsets: dict[PartitionKey, int] = {}
        good: list[Record] = []
        rejected = 0
        decode = app.decode
        for record in records:
            key, end = (record.physical_topic, record.partition), record.offset + 1
            if next_offsets.get(key, 0) < end:
                next_offsets[key] = end
            try:
                record.data = decode(record)
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
            self._flush_dead_letters()
        batch = Batch(good, next_offsets)
        if not self._settle():  # the batch before must be written and committed first
            self.counters.abandoned += len(good)  # left uncommitted with it (re-read on the next start)
            return False
        if app.overlap:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"{app.name}-writer")
            self._in_flight = (self._pool.submit(self._writer.write, batch), batch)
            return True
        return self._written(batch, self._writer.write(batch))

    def _written(self, batch: Batch, ok: bool) -> bool:
        """After a write: count and commit the batch; a failed write (False) stops further hand-overs."""
        if not ok:
            self._write_failed = True
            return False
        self.counters.batches += 1
        self._commit(batch)
        return True

    def _settle(self) -> bool:
        """Wait for the write in flight (overlap) and commit its batch; False once a write has failed. A fatal
        error of the write is raised here (out of ``consume`` when a rebalance callback waited)."""
        if self._in_flight is not None:
            future, batch = self._in_flight
            self._in_flight = None
            try:
                ok = future.result()
            except BaseException:
                self._write_failed = True
                raise
            self._written(batch, ok)
        return not self._write_failed

    def _close_kafka(self) -> None:
        """At the end of the run: finish (and commit) the write in flight, then close the Kafka consumer —
        which leaves the group now, not after the session timeout."""
        try:
            self._settle()
            self._confirm_commits()
        finally:
            try:
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                    self._pool = None
            finally:
                self.kafka.close()

    def _commit(self, batch: Batch) -> None:
        mode = self.app.commit_mode
        offsets = self.app.offsets_to_commit(batch)
        # Only what the consumer kept: a batch it dropped (a fenced sink commits nothing of it) holds nothing.
        self._processed.update((k, o) for k, o in batch.next_offsets.items() if k in offsets)
        if mode == "transaction" or not offsets:
            return
        if mode == "sink":
            # Informational (the sink holds the offsets that count): asynchronous, confirmed synchronously by
            # ``_confirm_commits`` before a revoke and at the end of the run.
            self._unconfirmed.update(offsets)
            try:
                self.kafka.commit(offsets=_partitions(offsets, self._processed), asynchronous=True)
            except KafkaException as exc:
                self.counters.commit_failures += 1
                log.warning("%s: commit failed (%s); informational only", self.app.name, exc)
            else:
                self.counters.commits += 1
            return
        # Synchronous: a few milliseconds per batch buys "committed == written" at every stop, which lag
        # monitoring and operators rely on; a failure means the batch will be re-delivered.
        self._commit_now(offsets, "the batch will be re-delivered")

    def _commit_now(self, offsets: Mapping[PartitionKey, int], consequence: str) -> bool:
        """A synchronous commit of ``offsets``; False (logged, counted) when it failed."""
        try:
            result = self.kafka.commit(offsets=_partitions(offsets, self._processed), asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions away while the batch was being processed.
            self.counters.commit_failures += 1
            log.warning("%s: commit failed (%s); %s", self.app.name, exc, consequence)
            return False
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            self.counters.commit_failures += 1
            log.warning("%s: commit failed for %s; %s", self.app.name,
                        ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed), consequence)
            return False
        self.counters.commits += 1
        return True

    def _confirm_commits(self, keys: Iterable[PartitionKey] | None = None) -> None:
        """In "sink" mode: commit synchronously the latest offsets committed asynchronously (of ``keys``, or all),
        so the group's Kafka offsets equal what the sink wrote when partitions move or the run ends."""
        chosen = {k: o for k, o in self._unconfirmed.items() if keys is None or k in keys}
        for key in chosen:
            del self._unconfirmed[key]
        if chosen:
            self._commit_now(chosen, "informational only")

    # Dead letters -------------------------------------------------------------------------------

    def _dead_letters(self) -> TopicProducer:
        with self._dlq_lock:
            if self._dlq is None:
                self._dlq = dead_letter_producer(self.app.name, self.settings)
            return self._dlq

    def _flush_dead_letters(self) -> None:
        """Wait until the broker acknowledged every dead letter; raise if one was not. The producer counts
        failures for both threads (overlap): once one flush raised, every later flush raises too, so the thread
        whose dead letter it was never moves past it."""
        with self._dlq_lock:
            if self._dlq_error is not None:
                raise DeliveryError(f"{self.app.name}: a dead letter was not acknowledged ({self._dlq_error})")
            try:
                self._dead_letters().flush_or_raise()
            except Exception as exc:
                self._dlq_error = exc
                raise

    def dead_letter(self, record: Record, error: BaseException) -> None:
        """Send ``record`` to the dead-letters topic with its original bytes, key, headers and the reason.

        Enqueued only; the runtime flushes (``flush_or_raise``) before the batch's offsets move on.
        """
        with self._dlq_lock:
            reason = send_dead_letter(self._dead_letters(), record, error, self.group_id, self.catalog)
            self.counters.dead_lettered += 1
            self.counters.dead_letter_reasons[reason] = self.counters.dead_letter_reasons.get(reason, 0) + 1

    # Rebalance callbacks (run inside consume()) -------------------------------------------------

    def _on_assign(self, kafka: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()  # the sink's stored offsets include the write in flight
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
        self._settle()  # written and committed before the partitions go to another copy
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._confirm_commits(set(keys))
        if self._revoked is not None:
            self._revoked.update(keys)
        self.app.on_revoke(self, keys)
        self.assignment.clear()
        self._last_rebalance = time.monotonic()
        log.info("%s: revoked %d partition(s)", self.app.name, len(keys))

    def _on_lost(self, kafka: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        for key in keys:  # another copy owns them: a commit now would fail
            self._unconfirmed.pop(key, None)
        if self._revoked is not None:
            self._revoked.update(keys)
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


# Entry points -------------------------------------------------------------------------------------

def run_consumer(consumer: StreamConsumer, settings: Settings, *, stop: StopFlag | None = None,
                 duration: float | None = None, idle_exit: float | None = None,
                 instance_id: str | None = None) -> dict[str, Any]:
    """Run one copy of ``consumer`` in this thread until stopped; returns the summary dict."""
    runtime = ConsumerLoop(consumer, settings, stop=stop, instance_id=instance_id)
    return runtime.run(duration=duration, idle_exit=idle_exit)


def run_consumer_cli(factory: Callable[[], StreamConsumer], settings: Settings, args: Args) -> int:
    """``mbyn consume NAME``'s run: logging, signals, the limits and ``mbyn.options.CONSUMER_OPTIONS`` from
    ``args``, JSON summary on stdout; 0 unless a batch was abandoned."""
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


def _partitions(offsets: Mapping[PartitionKey, int],
                processed: Mapping[PartitionKey, int] | None = None) -> list[TopicPartition]:
    """What to commit; an offset below the one ``processed`` says so in its metadata (a join holds records)."""
    processed = processed or {}
    # held_metadata is "" when nothing is held (confluent-kafka refuses metadata=None)
    return [TopicPartition(t, p, o, metadata=held_metadata(o, processed.get((t, p))))
            for (t, p), o in sorted(offsets.items())]
