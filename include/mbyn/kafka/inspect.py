"""What the broker says, for every observer: offsets, groups, committed positions, lag, and reading ranges.

``mbyn status``, the pipeline view, the lag monitor, ``mbyn replay`` and the in-memory topic tables of the
consumers ask the broker here, never with clients of their own:

* **Offsets** — ``partitions_of`` (a topic's partitions), ``partition_offsets`` (start and end of every
  partition of some topics, retried while a new topic has no leader), ``list_offsets`` (one side of chosen
  partitions, skipping those that fail), ``offsets_for_time`` (the first offset at or after a time),
  ``tail_ranges`` (the last N offsets).
* **Groups** — ``groups`` (state, members and their assignment, committed offsets, for every group of a
  prefix), ``group_members`` (of one group), ``committed_offsets`` (of one group).
* **Lag** — ``committed_lag`` (end − committed, else end − start, the records the group holds and the live
  members: what the lag monitor samples), ``next_timestamps`` (the time of the next record a group has not
  read: seconds behind) and ``group_lag`` (end − the sink's stored offset, else committed, else start: what
  ``mbyn status`` and the view show; the stored offsets come from the caller, read from the warehouse).
* **Held records** — a consumer that commits less than it processed (a join keeping records in memory: the
  fraud-detector) says how far it really read in the commit's metadata (``mbyn.kafka.consumer.held_metadata``);
  ``groups`` reads it back: ``held = next − committed`` are records read but held by design, not waiting.
* **Reading** — ``reader`` is an assign-only consumer (never subscribes, never commits, so it creates no
  group); its group id is ``mbyn-probe-<who>-<random>`` (``PROBE_GROUP``), which ``groups`` leaves out.
  ``scan`` reads every record of some offset ranges with it.

Errors: the broker's KafkaException passes through unless a function says otherwise; callers turn it into
their own message (``mbyn status``: BrokerUnavailableError).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from mbyn.errors import MbynError
from mbyn.kafka.clients import admin_client, client_config
from mbyn.kafka.consumer import held_from_metadata
from mbyn.settings import Settings

log = logging.getLogger("mbyn.inspect")

PartitionKey = tuple[str, int]  # physical topic, partition

#: Group-id prefix of every assign-only reader (``reader``); such ids are never shown as consumer groups.
PROBE_GROUP = "mbyn-probe-"
#: How long one request to the broker may take.
TIMEOUT_S = 15.0
#: How long ``scan`` reads before it returns the partitions it could not finish.
SCAN_TIMEOUT_S = 120.0
#: Attempts of ``partition_offsets`` while partitions of a just-created topic have no leader.
OFFSET_ATTEMPTS = 8


# Clients ----------------------------------------------------------------------------------------------


def open_admin(settings: Settings, timeout_s: float = TIMEOUT_S) -> AdminClient:
    """The admin client observers use: one that answered within ``timeout_s`` (BrokerUnavailableError)."""
    return admin_client(settings, timeout_s=timeout_s)


def reader(settings: Settings, who: str, *, group_id: str | None = None,
           config: Mapping[str, Any] | None = None) -> Consumer:
    """A consumer for reading ranges by ``assign`` (never subscribes, never commits: no group is created).

    ``read_committed``, with partition-EOF events (``scan`` needs them); client id ``mbyn-<who>``. librdkafka
    wants a group id even so: ``mbyn-probe-<who>-<8 hex>`` unless ``group_id`` names one (a principal of the
    secured mode may use its own groups only: the topic tables' ``<prefix><service>-table-…``).
    ``config`` adds or overrides librdkafka settings.
    """
    return Consumer({**client_config(settings),
                     "group.id": group_id or f"{PROBE_GROUP}{who}-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "isolation.level": "read_committed", "enable.partition.eof": True,
                     "fetch.max.bytes": 16 * 1024 * 1024, "client.id": f"mbyn-{who}", **(config or {})})


# Offsets ----------------------------------------------------------------------------------------------


def partitions_of(client: Any, physical: str, timeout_s: float = TIMEOUT_S) -> list[int] | None:
    """The partition numbers of ``physical`` (sorted) from an admin client's or consumer's metadata; None when
    the topic does not exist (or has an error or no partitions)."""
    meta = client.list_topics(physical, timeout=timeout_s).topics.get(physical)
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return sorted(meta.partitions)


def partition_offsets(admin: AdminClient, physical_topics: Iterable[str], timeout_s: float = TIMEOUT_S,
                      ) -> dict[str, list[tuple[int, int, int]] | None]:
    """(partition, start, end) per partition of each topic; None for a topic that does not exist.

    ``end`` is the high watermark (read-uncommitted): it includes transaction markers and open transactions.
    """
    physical_topics = list(physical_topics)
    metadata = admin.list_topics(timeout=timeout_s).topics
    wanted = {t: sorted(metadata[t].partitions) for t in physical_topics if t in metadata and
              metadata[t].error is None}
    tps = [TopicPartition(t, p) for t, parts in wanted.items() for p in parts]
    result: dict[str, list[tuple[int, int, int]] | None] = {t: None for t in physical_topics}
    if not tps:
        return result
    for attempt in range(1, OFFSET_ATTEMPTS + 1):
        try:
            earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, request_timeout=timeout_s)
            latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout_s)
            for t, parts in wanted.items():
                rows = []
                for p in parts:
                    tp = TopicPartition(t, p)
                    start = earliest[tp].result(timeout=timeout_s).offset
                    end = latest[tp].result(timeout=timeout_s).offset
                    rows.append((p, int(start), int(end)))
                result[t] = rows
            return result
        except KafkaException as exc:
            # Right after a topic is created its partitions have no leader for a moment: retry those errors.
            error = exc.args[0]
            transient = error.retriable() or error.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                                               KafkaError.LEADER_NOT_AVAILABLE,
                                                               KafkaError.UNKNOWN_TOPIC_OR_PART)
            if attempt == OFFSET_ATTEMPTS or not transient:
                raise
            time.sleep(0.25 * attempt)
    raise AssertionError("unreachable")


def list_offsets(admin: AdminClient, keys: Iterable[PartitionKey], which: Literal["earliest", "latest"],
                 who: str, timeout_s: float = TIMEOUT_S) -> dict[PartitionKey, int]:
    """The start (``earliest``) or end (``latest``) offset of each partition; a partition the broker has no
    answer for (e.g. its topic was deleted meanwhile) is logged as ``<who>: no offset for …`` and left out."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    spec = OffsetSpec.earliest() if which == "earliest" else OffsetSpec.latest()
    futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in keys}, request_timeout=timeout_s)
    out = {}
    for tp, future in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(future.result().offset)
        except KafkaException as exc:
            log.warning("%s: no offset for %s[%d]: %s", who, tp.topic, tp.partition, exc)
    return out


def offsets_for_time(settings: Settings, physical: str, partitions: Iterable[int], when: datetime,
                     timeout_s: float = TIMEOUT_S) -> dict[int, int]:
    """Per partition the offset of the first record at or after ``when``; the end offset if there is none.

    The end is the high watermark (read-uncommitted). MbynError when the broker reports an error for a
    partition.
    """
    consumer = reader(settings, "replay", config={"isolation.level": "read_uncommitted"})
    try:
        ms = int(when.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(physical, p, ms) for p in partitions], timeout=timeout_s)
        out = {}
        for tp in found:
            if tp.error is not None:
                raise MbynError(f"offsets_for_times failed for {physical}[{tp.partition}]: {tp.error}")
            if tp.offset < 0:  # no record that recent: the end of the partition
                tp.offset = consumer.get_watermark_offsets(TopicPartition(physical, tp.partition),
                                                           timeout=timeout_s)[1]
            out[tp.partition] = int(tp.offset)
        return out
    finally:
        consumer.close()


def tail_ranges(consumer: Consumer, partitions: Iterable[PartitionKey], back: int,
                timeout_s: float = TIMEOUT_S) -> dict[PartitionKey, tuple[int, int]]:
    """The last ``back`` offsets of each partition as ``scan`` ranges: ``(max(start, end - back), end)``."""
    ranges = {}
    for t, p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s)
        ranges[(t, p)] = (max(low, high - back), high)
    return ranges


# Groups -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assignment: tuple[PartitionKey, ...]


@dataclass(frozen=True)
class Group:
    group_id: str
    state: str  # the broker's group state, lower case ("stable", "empty", …)
    members: tuple[Member, ...]
    committed: dict[PartitionKey, int | None]  # None: the partition is listed without a committed offset
    held: dict[PartitionKey, int] = field(default_factory=dict)  # records read but held (commit metadata), > 0


def _members(description: Any) -> tuple[Member, ...]:
    return tuple(Member(m.member_id, m.client_id, m.host,
                        tuple((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment
                                                                  else [])))
                 for m in description.members or [])


def groups(admin: AdminClient, prefix: str, timeout_s: float = TIMEOUT_S) -> dict[str, Group]:
    """Consumer groups whose id starts with ``prefix`` (probe readers left out): state, members, committed."""
    listed = admin.list_consumer_groups(request_timeout=timeout_s).result()
    ids = sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix)
                 and not g.group_id.startswith(PROBE_GROUP))
    found: dict[str, Group] = {}
    if not ids:
        return found
    described = admin.describe_consumer_groups(ids, request_timeout=timeout_s)
    for group_id in ids:
        desc = described[group_id].result()
        listed = _committed(admin, group_id, None, timeout_s)
        held = {(tp.topic, tp.partition): held_from_metadata(_metadata(tp), int(tp.offset)) for tp in listed}
        found[group_id] = Group(group_id, str(getattr(desc.state, "name", desc.state)).lower(), _members(desc),
                                _offsets(listed), {k: n for k, n in held.items() if n > 0})
    return found


def _metadata(tp: TopicPartition) -> str | None:
    """A committed offset's metadata, None when it is not UTF-8 text: any client may commit any bytes there, and
    confluent-kafka raises UnicodeDecodeError reading them."""
    try:
        return tp.metadata
    except UnicodeDecodeError:
        return None


def group_members(admin: AdminClient, group_id: str, timeout_s: float = TIMEOUT_S) -> tuple[Member, ...]:
    """The live members of ``group_id`` (none for a group the broker does not know); KafkaException else."""
    future = admin.describe_consumer_groups([group_id], request_timeout=timeout_s)[group_id]
    try:
        return _members(future.result())
    except KafkaException as exc:
        if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.GROUP_ID_NOT_FOUND:
            return ()
        raise


def committed_offsets(admin: AdminClient, group_id: str, partitions: Iterable[PartitionKey] | None = None,
                      timeout_s: float = TIMEOUT_S) -> dict[PartitionKey, int | None]:
    """The group's committed offsets (of ``partitions``, else of every partition it committed); None for a
    partition listed without one. Partitions the broker reports an error for are left out."""
    return _offsets(_committed(admin, group_id, partitions, timeout_s))


def _committed(admin: AdminClient, group_id: str, partitions: Iterable[PartitionKey] | None,
               timeout_s: float) -> list[TopicPartition]:
    """The group's committed offsets with their metadata, partitions with an error left out."""
    wanted = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
    request = ConsumerGroupTopicPartitions(group_id, wanted)
    result = admin.list_consumer_group_offsets([request], request_timeout=timeout_s)[group_id].result()
    return [tp for tp in result.topic_partitions or [] if tp.error is None]


def _offsets(listed: list[TopicPartition]) -> dict[PartitionKey, int | None]:
    return {(tp.topic, tp.partition): int(tp.offset) if tp.offset >= 0 else None for tp in listed}


# Lag --------------------------------------------------------------------------------------------------


def committed_lag(admin: AdminClient, prefix: str, who: str, timeout_s: float = TIMEOUT_S,
                  timestamps: Consumer | None = None) -> list[dict[str, Any]]:
    """One row per (group, topic, partition) of the groups of ``prefix``: committed partitions plus those
    assigned to live members (a member that never committed still shows up).

    Rows: ``consumer_group, topic, partition, end_offset, committed_offset`` (None if never committed),
    ``lag`` = end − committed, else end − start (with a ``timestamps`` reader: held only, when no record is left
    to read past what the group read — a transaction's commit marker, offsets retention deleted: nothing waits
    there, ever); ``held`` = records of that lag read but held (commit metadata);
    ``members`` = live members; ``lag_seconds`` = the wait of the next unread record (at committed + held;
    ``next_timestamps`` through the ``timestamps`` reader; 0.0 when nothing waits, None when unknown or no
    reader is given) — sorted by group, topic, partition.
    """
    found = groups(admin, prefix, timeout_s)
    partitions: dict[str, dict[PartitionKey, int | None]] = {}
    for group_id, group in found.items():
        per = partitions[group_id] = dict(group.committed)
        for member in group.members:
            for key in member.assignment:
                per.setdefault(key, None)
    wanted = {key for per in partitions.values() for key in per}
    if not wanted:
        return []
    ends = list_offsets(admin, wanted, "latest", who, timeout_s)
    starts = list_offsets(admin, {k for per in partitions.values() for k, v in per.items() if v is None},
                          "earliest", who, timeout_s)
    rows: list[dict[str, Any]] = []
    for group_id in sorted(partitions):
        group = found[group_id]
        for (topic, partition), committed in sorted(partitions[group_id].items()):
            end = ends.get((topic, partition))
            if end is None:  # the topic was deleted meanwhile
                continue
            base = committed if committed is not None else starts.get((topic, partition), 0)
            lag = max(0, end - base)
            held = min(lag, group.held.get((topic, partition), 0))
            rows.append({"consumer_group": group_id, "topic": topic, "partition": partition, "end_offset": end,
                         "committed_offset": committed, "lag": lag, "held": held, "members": len(group.members),
                         "lag_seconds": 0.0 if lag == held else None})
    if timestamps is not None:
        waiting: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for r in rows:
            if r["lag_seconds"] is None:
                waiting.setdefault((r["topic"], r["partition"], r["end_offset"] - r["lag"] + r["held"]), []).append(r)
        found_ms = next_timestamps(timestamps, list(waiting), timeout_s=min(timeout_s, 5.0))
        now_ms = time.time() * 1000
        for at, ms in found_ms.items():
            for r in waiting[at]:
                if ms is None:  # no record left to read (a commit marker, offsets retention deleted): none waits
                    r["lag"] = r["held"]
                r["lag_seconds"] = 0.0 if ms is None else round(max(0.0, now_ms - ms) / 1000, 3)
    return rows


def next_timestamps(consumer: Consumer, wanted: Iterable[tuple[str, int, int]],
                    timeout_s: float = 5.0) -> dict[tuple[str, int, int], int | None]:
    """Per (topic, partition, offset) the timestamp (ms) of the record there (the next one a group will read),
    else of the first readable record after it (markers are never delivered; a deleted offset reads the oldest);
    None when the log ends first (only transaction markers left: nothing waits).

    ``consumer``: a ``lag_reader``. One record per offset is fetched, not the backlog; several offsets of one
    partition take one pass each. Left out: no record within ``timeout_s``, no timestamp, an error (no READ).
    """
    todo: dict[PartitionKey, list[int]] = {}
    for t, p, o in sorted(set(wanted), reverse=True):
        if o >= 0:
            todo.setdefault((t, p), []).append(o)
    found: dict[tuple[str, int, int], int | None] = {}
    deadline = time.monotonic() + timeout_s
    while todo and time.monotonic() < deadline:
        one_pass = {key: offsets.pop() for key, offsets in todo.items()}
        todo = {key: offsets for key, offsets in todo.items() if offsets}
        for key, ms in _first_timestamps(consumer, dict(one_pass), deadline).items():
            found[(*key, one_pass[key])] = ms
    return found


def _first_timestamps(consumer: Consumer, positions: dict[PartitionKey, int],
                      deadline: float) -> dict[PartitionKey, int | None]:
    """``next_timestamps`` for one offset per partition, until ``deadline`` (monotonic)."""
    found: dict[PartitionKey, int | None] = {}
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())])
    try:
        while positions and time.monotonic() < deadline:
            for msg in consumer.consume(len(positions), 0.2):
                key = (msg.topic() or "", int(msg.partition() or 0))
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and positions.pop(key, None) is not None:
                        found[key] = None  # only transaction markers up to the end: nothing readable waits
                    elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED or err.fatal():
                        log.warning("timestamps of %s unreadable: %s", key[0], err.str())
                        positions = {k: o for k, o in positions.items() if k[0] != key[0]}
                    continue
                if key not in positions:
                    continue
                ts_type, ts = msg.timestamp()
                if ts_type != 0 and ts is not None and ts >= 0:  # 0 = TIMESTAMP_NOT_AVAILABLE
                    found[key] = int(ts)
                positions.pop(key)
    finally:
        consumer.unassign()
    return found


def lag_reader(settings: Settings, who: str) -> Consumer:
    """The ``reader`` of ``next_timestamps``: read-uncommitted (an open transaction must not hide the next
    record), resets to the earliest record, fetches one record per partition, not more."""
    return reader(settings, who, config={"isolation.level": "read_uncommitted", "auto.offset.reset": "earliest",
                                         "max.partition.fetch.bytes": 1, "queued.max.messages.kbytes": 64,
                                         "fetch.wait.max.ms": 50})


def group_lag(prefix: str, found: Mapping[str, Group], stored: Mapping[str, Mapping[PartitionKey, int]],
              registered: Mapping[str, Iterable[str]], physical: Mapping[str, str],
              starts: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]) -> dict[str, Any]:
    """Per group: members, committed and stored offsets, lag (``mbyn status``'s ``groups`` section).

    ``found``: ``groups``; ``stored``: group id → the next offsets a sink stored with its rows;
    ``registered``: consumer name (group id without ``prefix``) → the logical topics it reads, shown even
    before the group exists; ``physical``: logical → physical topic. Lag = end − (stored, else committed,
    else start).
    """
    ids = set(found) | {g for g in stored if g.startswith(prefix)} | {prefix + n for n in registered}
    out: dict[str, Any] = {}
    for group_id in sorted(ids):
        name = group_id[len(prefix):]
        group = found.get(group_id, Group(group_id, "absent", (), {}))
        committed = {k: v for k, v in group.committed.items() if v is not None}
        positions = stored.get(group_id, {})
        keys = set(committed) | set(positions)
        for topic in registered.get(name, ()):  # a registered consumer's topics count even before it ran
            keys |= {k for k in ends if k[0] == physical.get(topic)}
        partitions = []
        for key in sorted(keys):
            position = positions.get(key, committed.get(key, starts.get(key, 0)))
            end = ends.get(key)
            partitions.append({"topic": key[0], "partition": key[1], "committed": committed.get(key),
                               "stored": positions.get(key), "end": end,
                               "lag": max(0, end - position) if end is not None else None})
        members = [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                    "assignment": sorted(f"{t}[{p}]" for t, p in m.assignment)} for m in group.members]
        out[group_id] = {
            "consumer": name, "registered": name in registered, "state": group.state,
            "member_count": len(members), "client_ids": sorted({m.client_id for m in group.members}),
            "members": members, "partitions": partitions,
            "lag": sum(p["lag"] or 0 for p in partitions),
        }
    return out


# Reading ----------------------------------------------------------------------------------------------


def scan(consumer: Consumer, ranges: Mapping[PartitionKey, tuple[int, int]], on_record: Callable[[Message], None],
         timeout_s: float = SCAN_TIMEOUT_S) -> list[PartitionKey]:
    """Read every committed record with ``start <= offset < end`` per partition; returns unfinished partitions.

    A partition is finished at its last offset, at a record past ``end`` (data kept flowing), or at the end
    of the readable log (transaction markers and aborted records are never delivered, so a range may end
    without a record at ``end - 1``). Partitions still open after ``timeout_s`` are returned, not raised.
    """
    todo = {k: r for k, r in ranges.items() if r[0] < r[1]}
    if not todo:
        return []
    consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
    open_parts = set(todo)
    deadline = time.monotonic() + timeout_s
    try:
        while open_parts and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                key = (msg.topic() or "", int(msg.partition() or 0))
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(key)
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                if key not in open_parts:
                    continue
                offset = int(msg.offset() or 0)
                end = todo[key][1]
                if offset < end:
                    on_record(msg)
                if offset >= end - 1:
                    open_parts.discard(key)
    finally:
        consumer.unassign()
    return sorted(open_parts)
