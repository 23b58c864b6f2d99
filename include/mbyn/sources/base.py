"""The shared shape of a streaming producer: iterate a source, send, flush per batch, stop cleanly.

A source is any iterator of ``Outgoing`` records. ``stream_to_kafka`` owns everything around it: waiting
for the broker, rate / count / duration limits, progress lines, a flush every ``batch_size`` records
or ``batch_seconds``, and on SIGTERM/SIGINT: stop reading, flush, print the counts, return 0.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from mbyn.kafka.clients import wait_for_broker
from mbyn.kafka.producer import TopicProducer
from mbyn.options import Args
from mbyn.process import Progress, RateLimiter, StopFlag, setup_logging
from mbyn.settings import Settings

log = logging.getLogger("mbyn.source")


@dataclass(frozen=True)
class Outgoing:
    """One record for a catalog topic. ``raw`` set means: send these bytes unvalidated (test poison)."""

    topic: str
    key: str | None
    value: dict[str, Any] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResult:
    records: int
    counters: dict[str, int]
    poison: int
    stopped_by: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, **self.counters, "poison": self.poison, "stopped_by": self.stopped_by,
                "seconds": round(self.seconds, 2)}


def stream_to_kafka(source: str, records: Iterable[Outgoing], settings: Settings, *, count: int | None = None,
                    rate: float | None = None, duration: float | None = None, stop: StopFlag | None = None,
                    batch_size: int = 50_000, batch_seconds: float = 1.0,
                    producer: TopicProducer | None = None) -> StreamResult:
    """Send ``records`` until exhausted, a limit is reached or ``stop`` is set; flush per batch.

    A batch ends after ``batch_size`` records or ``batch_seconds``, whichever comes first — at the generator's
    rates that is once a second: each flush stalls the loop until the broker has acknowledged everything (a
    ``linger.ms`` and a round trip), so flushing every few thousand records cost 10–20 % of the throughput.
    """
    stop = stop or StopFlag()
    wait_for_broker(settings, source, stop=stop)
    producer = producer or TopicProducer(source, settings)
    limiter = RateLimiter(rate, stop)
    started = time.monotonic()
    deadline = started + duration if duration else None
    sent = poison = 0
    stopped_by = "exhausted"

    def report() -> None:
        elapsed = time.monotonic() - started
        log.info("%s: %d records (%.0f/s) %s", source, sent, sent / max(elapsed, 1e-9), producer.counters.line())

    progress = Progress(report)
    iterator: Iterator[Outgoing] = iter(records) if count is None else islice(records, count)
    batch_started = time.monotonic()
    in_batch = 0
    try:
        for record in iterator:
            if stop.is_set():
                stopped_by = stop.reason or "stop"
                break
            if deadline is not None and time.monotonic() >= deadline:
                stopped_by = "duration"
                break
            limiter.acquire()
            if record.raw is not None:
                producer.send_raw(settings.topic_prefix + record.topic, record.raw,
                                  record.key.encode() if record.key is not None else None,
                                  [("source", source.encode())])
                poison += 1
            else:
                producer.send(record.topic, record.value, record.key, record.headers)
            sent += 1
            in_batch += 1
            if in_batch >= batch_size or time.monotonic() - batch_started >= batch_seconds:
                producer.flush()
                in_batch = 0
                batch_started = time.monotonic()
                progress.tick()
        else:
            stopped_by = "count" if count is not None else "exhausted"
    finally:
        producer.close()
    result = StreamResult(sent, producer.counters.as_dict(), poison, stopped_by, time.monotonic() - started)
    return result


def print_summary(source: str, summary: dict[str, Any]) -> None:
    """The last line a producer prints: its counts as one JSON object on stdout."""
    print(json.dumps({"producer": source, **summary}), flush=True)
    sys.stdout.flush()


def run_stream_cli(source: str, records: Iterable[Outgoing], settings: Settings, args: Args) -> int:
    """CLI wrapper: logging, signal handling, limits from the args, summary line; exit 0 on a clean stop."""
    setup_logging()
    stop = StopFlag().install()
    result = stream_to_kafka(source, records, settings, count=args.count, rate=args.rate, duration=args.duration,
                             stop=stop)
    print_summary(source, result.summary())
    return 0 if result.counters["failed"] == 0 else 1
