"""The Kafka consumer client as mbyn's consumers use it: its defaults, a configured group member, safe headers,
and the commit metadata of a consumer that holds records (``held_metadata``; read back by
``mbyn.kafka.inspect.groups``).

The loop that runs on it (poll in batches, decode, dead-letter, process, commit) is ``mbyn.consumers.runtime``;
the contract a consumer implements, ``mbyn.consumers.contract``.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from mbyn.kafka.clients import client_config
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger("mbyn.consumer")

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "partition.assignment.strategy": "roundrobin",
    "auto.offset.reset": "earliest",
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.poll.interval.ms": 300_000,
}


def group_consumer(settings: Settings, group_id: str, client_id: str, *, instance_id: str | None = None,
                   error_cb: Callable[[Any], None] | None = None,
                   config: Mapping[str, Any] | None = None) -> Consumer:
    """A confluent-kafka Consumer that joins ``group_id`` (it does not subscribe yet).

    ``CONSUMER_DEFAULTS`` (auto-commit and offset store off, ``read_committed``, ``roundrobin``, earliest),
    the cluster's client config, the session timeout ``settings.consumer_session_timeout_s`` (heartbeats
    at a quarter of it, at least 500 ms), ``error_cb``, then ``config`` (merged last). ``instance_id``
    makes it a static member: a restarted copy gets its partitions back at once.
    """
    conf: dict[str, Any] = {
        **CONSUMER_DEFAULTS,
        **client_config(settings),
        "group.id": group_id,
        "client.id": client_id,
        "session.timeout.ms": int(settings.consumer_session_timeout_s * 1000),
        "heartbeat.interval.ms": max(500, int(settings.consumer_session_timeout_s * 1000 / 4)),
    }
    if error_cb is not None:
        conf["error_cb"] = error_cb
    conf.update(config or {})
    if instance_id:
        conf["group.instance.id"] = instance_id
    return Consumer(conf)


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


#: Commit metadata of a consumer that commits less than it processed: ``mbyn:next=<next offset processed>``.
HELD_METADATA = "mbyn:next="


def held_metadata(committed: int, processed: int | None) -> str:
    """The metadata to commit ``committed`` with when the consumer processed up to ``processed`` (the next
    offset): ``mbyn:next=<processed>`` when it holds records (``processed > committed``), else "" (none;
    ``TopicPartition`` refuses None)."""
    return f"{HELD_METADATA}{processed}" if processed is not None and processed > committed else ""


def held_from_metadata(metadata: str | None, committed: int | None) -> int:
    """Records held past ``committed`` according to a commit's metadata; 0 without (or with foreign or
    malformed) metadata — any client may commit any text there."""
    if committed is None or committed < 0 or not metadata or not metadata.startswith(HELD_METADATA):
        return 0
    text = metadata[len(HELD_METADATA):]
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return 0
    return max(0, int(text) - committed)
