"""Writing one batch with ``process_batch`` until it succeeds: outages retried, failing records isolated.

Part of the consumer runtime (``mbyn.consumers.runtime``, whose docstring states the rules): a
``transient_errors`` error retries the same batch with back-off; any other error, while an empty write still
succeeds, re-runs the batch one record at a time and dead-letters each record that fails alone; a failure no
record can be blamed for is an outage — back off, retry, never dead-letter. A stop signal meanwhile abandons
the batch (``write`` returns False; nothing is committed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mbyn.consumers.contract import Batch, ConsumerCounters, Record, StreamConsumer
from mbyn.contracts.dead_letters import describe_error, shorten
from mbyn.process import StopFlag, backoff_delays

log = logging.getLogger("mbyn.consumer")


class BatchWriter:
    """Writes batches of one consumer (``app``), counting into the runtime's ``counters``.

    ``dead_letter(record, error)`` enqueues a dead letter; ``flush_dead_letters()`` waits until the broker
    acknowledged them (raises otherwise) — called before the next record's write can store an offset past one.
    """

    def __init__(self, app: StreamConsumer, counters: ConsumerCounters, stop: StopFlag,
                 dead_letter: Callable[[Record, BaseException], None],
                 flush_dead_letters: Callable[[], None]) -> None:
        self.app = app
        self.counters = counters
        self.stop = stop
        self.dead_letter = dead_letter
        self.flush_dead_letters = flush_dead_letters

    def write(self, batch: Batch) -> bool:
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
                        self.flush_dead_letters()
                        break
                    if not self._wait_after_failure(exc, next(delays), 1):
                        return False
        # Store the offsets past the dead-lettered records too ("sink" mode needs the empty batch).
        return self.write(Batch([], batch.next_offsets))
