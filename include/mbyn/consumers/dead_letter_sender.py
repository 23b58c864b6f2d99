"""Sending a record that cannot be processed to ``dead-letters``: the same dead letter from every Python reader.

Used by the consumer runtime (``mbyn.consumers.runtime``) and by the Airflow tasks that consume without it
(the shipments load). A dead letter carries the original key, value bytes and headers plus the ``dlq.*``
headers of ``mbyn.contracts.dead_letters``; a value too large to send on is replaced by its fingerprint.
"""

from __future__ import annotations

import hashlib
import logging

from mbyn.catalog import Catalog, load_catalog
from mbyn.consumers.contract import Record
from mbyn.contracts.dead_letters import (
    DEAD_LETTER_TOPIC,
    VALUE_DROPPED_HEADER,
    build_headers,
    describe_error,
    shorten,
)
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings

log = logging.getLogger("mbyn.consumer")

#: The dead-letter producer's largest message: a raw record of up to the broker's default 1 MiB plus the
#: ``dlq.*`` headers must fit (``dead-letters`` allows the same in include/topics.yaml).
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


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
