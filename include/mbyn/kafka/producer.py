"""The producer runtime every Python producer uses: validate → encode → send, flush per batch.

* Idempotent, ``acks=all``, lz4-compressed, batched with ``linger.ms`` — safe and fast defaults.
* ``send`` never blocks on the network: it serves delivery callbacks with ``poll(0)`` every
  ``POLL_EVERY`` records and only waits when librdkafka's queue is full. ``flush`` is called at the end
  of every batch and on exit, never per message.
* An invalid record (``ContractError``) is counted and logged with its reason, never sent and never
  silently dropped; ``invalid`` in the counters says how many.
* Batch producers call ``flush_or_raise`` before they advance their own state (watermarks, file
  hashes), so a crash re-sends rather than loses — and deterministic event ids make that re-send a no-op
  downstream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Producer

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import check_calendar, encode, validate
from mbyn.contracts.typed import typed_decoder
from mbyn.errors import ContractError, MbynError
from mbyn.kafka.clients import QuietLogger, client_config
from mbyn.settings import Settings, get_settings

log = logging.getLogger("mbyn.producer")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 512 * 1024,
    "queue.buffering.max.messages": 200_000,
    "message.timeout.ms": 120_000,
    # Java's (and franz-go's) key hashing: a key lands in the same partition whichever language wrote it,
    # which joins of co-partitioned topics (orders ⋈ payments in the fraud-detector) rely on.
    "partitioner": "murmur2_random",
}


#: ``send`` serves delivery callbacks (``poll(0)``) every this many records; ``flush`` serves the rest.
POLL_EVERY = 64


def encode_valid(topic: str, value: Mapping[str, Any]) -> bytes:
    """``value`` encoded once it has passed ``topic``'s contract; ContractError (with the reasons) if it has not.

    The fast path checks the bytes that will be sent: the topic's typed decoder (``mbyn.contracts.typed``,
    derived from the catalog's JSON Schema and never more lenient than it) and the calendar check — ~2x cheaper
    than ``validate``. Whatever it does not accept at once goes through ``validate`` (the JSON Schema path),
    which decides and words the reason, as for a topic without a typed decoder.
    """
    decoder = typed_decoder(topic)
    if decoder is not None:
        try:
            data = encode(value)
            decoder.decode(data)
            check_calendar(topic, value)
            return data
        except (msgspec.MsgspecError, ContractError, TypeError, ValueError, OverflowError, RecursionError):
            pass  # not certainly valid: the full path below decides
    validate(topic, value)
    return encode(value)


class DeliveryError(MbynError):
    """Some records of a batch were not acknowledged by the broker; the batch must be re-sent."""


@dataclass
class ProducerCounters:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    invalid: int = 0
    invalid_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "delivered": self.delivered, "failed": self.failed, "invalid": self.invalid}

    def line(self) -> str:
        return f"sent={self.sent} delivered={self.delivered} failed={self.failed} invalid={self.invalid}"


class TopicProducer:
    """Send envelopes to catalog topics; count deliveries; flush per batch.

    ``source`` names the producer (header ``source``); topics are logical catalog names and get the
    configured prefix. Pass ``config`` to override librdkafka settings (e.g. ``transactional.id``).
    """

    def __init__(self, source: str, settings: Settings | None = None, config: Mapping[str, Any] | None = None) -> None:
        self.settings = settings or get_settings()
        self.source = source
        self.counters = ProducerCounters()
        self._batch_failed = 0
        self._last_error = ""
        conf = {**PRODUCER_DEFAULTS, **client_config(self.settings),
                "client.id": f"mbyn-{source}", "error_cb": self._on_error, "logger": QuietLogger(),
                **(config or {})}
        self._producer = Producer(conf)
        self._catalog = load_catalog()
        self._last_error_log = 0.0
        self._physical: dict[str, str] = {}  # logical → physical topic name, resolved once per topic
        self._unpolled = 0

    # librdkafka callbacks ----------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 10:  # one line per 10 s, not one per retry
            self._last_error_log = now
            log.warning("%s: kafka: %s", self.source, err.str())

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.counters.delivered += 1
        else:
            self.counters.failed += 1
            self._batch_failed += 1
            self._last_error = err.str()

    # API ---------------------------------------------------------------------------------------

    @property
    def raw(self) -> Any:
        """The underlying confluent_kafka.Producer (transactions, metrics)."""
        return self._producer

    def send(self, topic: str, value: Mapping[str, Any] | None, key: str | None = None,
             headers: Mapping[str, str] | None = None, *, validated: bool = False) -> bool:
        """Validate and enqueue one envelope (``value=None`` sends a tombstone). Returns False if invalid."""
        entry = self._catalog.get(topic)
        try:
            if value is not None:
                data: bytes | None = encode(value) if validated else encode_valid(topic, value)
            else:
                if not entry.compacted:
                    raise ContractError(f"{topic}: tombstones are only allowed on compacted topics")
                if key is None:
                    raise ContractError(f"{topic}: a tombstone needs a key")
                data = None
        except ContractError as exc:
            self.counters.invalid += 1
            if len(self.counters.invalid_reasons) < 20:
                self.counters.invalid_reasons.append(str(exc))
            log.warning("%s: invalid record not sent: %s", self.source, exc)
            return False
        trace = (value or {}).get("trace_id") or (value or {}).get("event_id") or str(uuid.uuid4())
        hdrs: list[tuple[str, bytes | str | None]] = [("source", self.source.encode()),
                                                      ("trace_id", str(trace).encode())]
        if headers:
            hdrs += [(k, v.encode()) for k, v in headers.items()]
        physical = self._physical.get(topic)
        if physical is None:
            physical = self._physical[topic] = entry.physical
        self.send_raw(physical, data, key.encode() if key is not None else None, hdrs)
        return True

    def send_raw(self, physical_topic: str, value: bytes | None, key: bytes | None,
                 headers: Sequence[tuple[str, bytes | str | None]] | None = None) -> None:
        """Enqueue bytes as they are (no validation): dead-letter routing and replays."""
        while True:
            try:
                self._producer.produce(physical_topic, value=value, key=key,
                                       headers=list(headers) if headers is not None else None,
                                       on_delivery=self._on_delivery)  # type: ignore[arg-type]
                break
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve callbacks, then try again
        self.counters.sent += 1
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:  # serve delivery callbacks in bunches: poll() per record costs ~10%
            self._unpolled = 0
            self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        return int(self._producer.flush(timeout))

    def flush_or_raise(self, timeout: float = 120.0) -> None:
        """Flush and raise DeliveryError if any record since the previous call was not acknowledged."""
        remaining = self.flush(timeout)
        failed, self._batch_failed = self._batch_failed, 0
        if remaining or failed:
            raise DeliveryError(f"{self.source}: {failed} record(s) failed and {remaining} still in flight "
                                f"after {timeout:.0f}s (last error: {self._last_error or 'timeout'})")

    def close(self, timeout: float = 30.0) -> None:
        remaining = self.flush(timeout)
        if remaining:
            log.error("%s: %d record(s) not delivered at close", self.source, remaining)
