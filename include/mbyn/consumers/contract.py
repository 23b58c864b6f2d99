"""The consumer contract: what a consumer implements (``StreamConsumer``) and what it is handed (``Batch``).

A consumer is a subclass of ``StreamConsumer`` that names its catalog topics and implements
``process_batch(batch)``; ``mbyn.consumers.runtime`` runs it (poll, decode, dead-letter, process, commit —
its module docstring is the full description of the guarantees). Its hooks see the runtime through
``ConsumerRuntime``: the stop flag, the group, the Kafka consumer, the assignment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from confluent_kafka import TopicPartition

from mbyn.catalog import Catalog
from mbyn.contracts.codec import decode_record
from mbyn.errors import ConfigError, SinkUnavailableError, StateError
from mbyn.kafka.consumer import message_headers
from mbyn.process import StopFlag
from mbyn.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

CommitMode = Literal["kafka", "sink", "transaction"]
#: (physical topic, partition) — the unit of ordering and of offsets.
PartitionKey = tuple[str, int]


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


class PolledRecord(Record):
    """A Record straight from ``consume()``: its headers are read from the message on first use.

    Converting a message's headers costs more than decoding its JSON, and most consumers never look at
    them (dead-lettering and the lake archiver do).
    """

    _headers: list[tuple[str, bytes | None]] | None

    def __init__(self, message: Message, topic: str, physical_topic: str, partition: int, offset: int,
                 key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> None:
        # Plain assignments, not the dataclass __init__ with keywords: this runs once per consumed record.
        self._message: Message | None = message
        self._headers = None
        self.topic = topic
        self.physical_topic = physical_topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
        self.data = None

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


def decode_envelope(record: Record, catalog: Catalog | None = None) -> dict[str, Any] | None:
    """The record's envelope (``mbyn.contracts.codec.decode_record``); ``None`` for a tombstone.

    Raises PoisonRecordError (``reason`` = the code) and nothing else.
    """
    return decode_record(record.topic, record.key, record.value, catalog)


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


class ConsumerRuntime(Protocol):
    """What a consumer's hooks may use of the runtime that runs it (``mbyn.consumers.runtime.ConsumerLoop``)."""

    settings: Settings
    stop: StopFlag
    catalog: Catalog
    #: ``settings.topic_prefix + consumer.name``.
    group_id: str
    #: The static group membership id (``--instance-id``), if any.
    instance_id: str | None
    #: The partitions this copy owns now.
    assignment: set[PartitionKey]
    counters: ConsumerCounters

    @property
    def kafka(self) -> Consumer:
        """The underlying confluent_kafka.Consumer (positions, watermarks, group metadata)."""

    def group_metadata(self) -> Any:
        """For ``producer.send_offsets_to_transaction(batch.offsets(), runtime.group_metadata())``."""


class StreamConsumer:
    """Base class of a consumer: name, topics, policy attributes and hooks; override ``process_batch``.

    Class attributes (override per consumer):

    * ``name`` — the consumer (and group) name, e.g. ``warehouse-loader``.
    * ``topics`` — logical catalog topics to subscribe to.
    * ``commit_mode`` — ``"kafka"`` (default), ``"sink"`` or ``"transaction"``; see ``mbyn.consumers.runtime``.
    * ``batch_size`` / ``batch_timeout`` — adaptive hand-over: the runtime waits up to ``batch_timeout``
      seconds for a first record, then takes what is already waiting, up to ``batch_size`` records, and hands
      the batch over as soon as nothing more is waiting (``--batch-size`` / ``--max-wait-ms``). A record
      never waits for a batch to fill: at a low rate batches are small, under load (records pile up while
      the previous batch is written) they grow to ``batch_size`` by themselves. ``batch_timeout`` is how
      long one poll blocks when nothing arrives (how often ``on_idle`` runs and stop/idle are checked).
    * ``overlap`` — fetch and decode the next batch while this one is written (one writer thread;
      ``process_batch`` runs there). The runtime still commits a batch only after it was written, waits
      for the write in flight before a rebalance, stop, idle or the end of the run, and hands nothing
      over after a write that failed. Only for a consumer whose hooks hold no state ``process_batch``
      also changes (the default, False, keeps everything in one thread).
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
    overlap: ClassVar[bool] = False
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
