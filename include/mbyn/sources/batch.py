"""The shared shape of a batch producer: load state → read the source → send → flush_or_raise → save state.

Streaming producers (``base.py``) never remember anything; batch producers (FX rates, the customers
database, inventory file drops) must remember what they already published — a watermark, published
keys, file hashes — so a re-run publishes only what is new. The rule every batch producer follows:

* state is written **only after** ``TopicProducer.flush_or_raise()`` succeeded, and atomically
  (temp file + fsync + ``os.replace``), so a crash between send and save re-sends a batch but never
  skips one;
* every event id is a uuid5 of the record's natural key (``event_id``), so such a re-send carries the
  same ids and downstream de-duplication makes it harmless.

``run_batch`` owns the broker wait, the producer's life cycle and the summary; a producer only writes
the body (``Callable[[BatchRun], None]``) that reads its source, calls ``run.send`` and ``run.commit``.
``run_batch_cli`` adds logging, signal handling and the JSON summary line for ``mbyn produce <name>``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from mbyn.contracts.envelope import Envelope
from mbyn.errors import SourceError, StateError
from mbyn.files import atomic_write_json
from mbyn.kafka.clients import wait_for_broker
from mbyn.kafka.producer import TopicProducer
from mbyn.options import Args
from mbyn.process import StopFlag, setup_logging
from mbyn.settings import Settings, get_settings
from mbyn.sources.base import print_summary

log = logging.getLogger("mbyn.source")

#: Namespace of every deterministic event id mbyn's batch producers derive (uuid5).
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mbyn.dev/events")


def event_id(topic: str, *natural_key: object) -> str:
    """A deterministic event id: uuid5 of the topic and the record's natural key (same input → same id)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join([topic, *map(str, natural_key)])))


class StateFile:
    """One producer's durable state: a JSON object in ``settings.state_dir / <name>.json``.

    ``save`` writes a temp file in the same folder, fsyncs it and renames it over the old one, so a
    reader (or a crash) sees either the old or the new state, never half of one.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = settings.state_dir / f"{name}.json"

    def load(self) -> dict[str, Any]:
        """The saved state, or ``{}`` when none was saved yet; StateError if the file is corrupt."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StateError(f"state file {self.path} is not JSON ({exc}); delete it to start over "
                             "(everything is re-sent once, with the same event ids)") from None
        if not isinstance(data, dict):
            raise StateError(f"state file {self.path} must hold a JSON object")
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        """Replace the state atomically (0600 temp file + fsync + rename + fsync of the folder)."""
        atomic_write_json(self.path, data, mode=0o600, separators=(",", ":"), sort_keys=True)


class BatchRun:
    """What a batch producer's body works with: settings, its state, a producer, a stop flag, counts.

    ``state`` is a plain dict the body mutates freely; it reaches disk only through ``commit()``.
    ``stats`` holds producer-specific counts (``skipped``, ``files_done`` ...) for the summary.
    """

    def __init__(self, source: str, settings: Settings, state_file: StateFile, producer: TopicProducer,
                 stop: StopFlag) -> None:
        self.source = source
        self.settings = settings
        self.state_file = state_file
        self.state: dict[str, Any] = state_file.load()
        self.producer = producer
        self.stop = stop
        self.stats: Counter[str] = Counter()
        self.records = 0
        self.commits = 0

    def send(self, topic: str, value: Envelope | None, key: str, *, validated: bool = False) -> None:
        """Enqueue one envelope (``None``: a tombstone). A record the contract refuses raises SourceError.

        Batch producers validate their input before sending, so a refusal here is a bug worth stopping
        for: the state is not advanced and the next run tries the same records again.
        """
        if not self.producer.send(topic, value, key, validated=validated):
            reason = self.producer.counters.invalid_reasons[-1] if self.producer.counters.invalid_reasons else "?"
            raise SourceError(f"{self.source}: record with key {key!r} refused by the {topic} contract: {reason}")
        self.records += 1

    def commit(self) -> None:
        """Wait until the broker acknowledged everything sent so far, then save the state atomically."""
        self.producer.flush_or_raise()
        self.state_file.save(self.state)
        self.commits += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        return {"records": self.records, **self.producer.counters.as_dict(), **dict(sorted(self.stats.items())),
                "commits": self.commits, "stopped_by": self.stop.reason or "done", "seconds": round(seconds, 2)}


Body = Callable[[BatchRun], None]


def run_batch(source: str, state_name: str, body: Body, settings: Settings | None = None, *,
              stop: StopFlag | None = None, producer: TopicProducer | None = None) -> dict[str, Any]:
    """Wait for the broker, run ``body`` with a fresh producer and the loaded state; return the summary.

    The producer is closed (flushed) in every case. If ``body`` raises, whatever it committed before
    stays committed and the rest is re-sent by the next run.
    """
    settings = settings or get_settings()
    stop = stop or StopFlag()
    started = time.monotonic()
    wait_for_broker(settings, source, stop=stop)
    producer = producer or TopicProducer(source, settings)
    run = BatchRun(source, settings, StateFile(settings, state_name), producer, stop)
    try:
        body(run)
    finally:
        producer.close()
    summary = run.summary(time.monotonic() - started)
    log.info("%s: %s", source, " ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def refuse_stream_limits(source: str, args: Args, allowed: tuple[str, ...] = ()) -> None:
    """Batch producers publish what is new, not N records: refuse --count/--rate/--duration unless allowed."""
    for name in ("count", "rate", "duration"):
        if name not in allowed and getattr(args, name, None) is not None:
            raise SystemExit(f"mbyn: --{name} does not apply to `mbyn produce {source}` (a batch producer "
                             "publishes everything new once)")


def run_batch_cli(source: str, publish: Callable[[StopFlag], dict[str, Any]]) -> int:
    """CLI wrapper: logging, SIGTERM/SIGINT → finish the current batch, one JSON summary line; exit 0 if clean."""
    setup_logging()
    stop = StopFlag().install()
    summary = publish(stop)
    print_summary(source, summary)
    return 0 if summary["failed"] == 0 and summary["invalid"] == 0 else 1
