"""lake-archiver: every raw topic → Parquet files in the lake, one file per partition run, idempotent.

Layout under ``settings.lake_dir``::

    <topic>/date=YYYY-MM-DD/hour=HH/part-<partition>-<firstoffset>-<lastoffset>.parquet

``<topic>`` is the logical catalog name; date and hour are the record's Kafka timestamp in UTC (always
present, also for tombstones). Columns: ``topic, partition, offset, kafka_timestamp_ms, key, headers``
(JSON, values base64) and the envelope ``event_id, event_type, schema_version, event_time, source,
trace_id, payload`` (payload as JSON text); a tombstone has null envelope columns. Poison records go to
dead-letters through the runtime, not to the lake.

**Exactly once on disk.** Each batch is split per partition into runs of consecutive records of the same
hour; runs are written in offset order, each to a temporary name and then renamed (atomic), and the
Kafka offsets are committed only after every rename (``"kafka"`` mode). A crash between rename and
commit re-reads the batch, possibly cut differently; on assignment the archiver scans the lake for the
highest offset already archived per partition and skips records up to it, so nothing is written twice
(writing in offset order keeps "everything up to the highest archived offset is on disk" true).

``reload_from_lake(topic)`` yields the archived records back as runtime ``Record`` objects (decoded
envelope in ``data``), in partition and offset order, so any topic can be replayed without Kafka.

Run: ``mbyn consume lake-archiver`` (copies share the partitions; each file belongs to one partition).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from mbyn.catalog import load_catalog
from mbyn.consumers.contract import Batch, ConsumerRuntime, PartitionKey, Record, StreamConsumer
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.contracts.headers import decode_headers, encode_headers
from mbyn.errors import SinkUnavailableError
from mbyn.files import replacing
from mbyn.options import CONSUMER_OPTIONS, Args, Option
from mbyn.settings import Settings, get_settings
from mbyn.workers import RAW_TOPICS

log = logging.getLogger("mbyn.consumer")

NAME = "lake-archiver"
PART_FILE = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
COLUMNS = ("topic", "partition", "offset", "kafka_timestamp_ms", "key", "headers", "event_id", "event_type",
           "schema_version", "event_time", "source", "trace_id", "payload")


def _schema() -> Any:
    return pa.schema([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
                      ("kafka_timestamp_ms", pa.int64()), ("key", pa.string()), ("headers", pa.string()),
                      ("event_id", pa.string()), ("event_type", pa.string()), ("schema_version", pa.int32()),
                      ("event_time", pa.string()), ("source", pa.string()), ("trace_id", pa.string()),
                      ("payload", pa.string())])


def _row(record: Record) -> dict[str, Any]:
    env = record.data or {}
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "kafka_timestamp_ms": record.timestamp_ms, "key": record.key_str,
            "headers": encode_headers(record.headers), "event_id": env.get("event_id"),
            "event_type": env.get("event_type"), "schema_version": env.get("schema_version"),
            "event_time": env.get("event_time"), "source": env.get("source"), "trace_id": env.get("trace_id"),
            "payload": json.dumps(env["payload"], separators=(",", ":")) if record.data is not None else None}


def _hour(record: Record) -> datetime:
    ms = record.timestamp_ms if record.timestamp_ms is not None else 0
    return datetime.fromtimestamp(ms / 1000, UTC).replace(minute=0, second=0, microsecond=0)


def runs(records: list[Record]) -> list[list[Record]]:
    """Split one partition's records (offset order) into runs of consecutive records of the same hour."""
    out: list[list[Record]] = []
    for record in records:
        if out and _hour(out[-1][-1]) == _hour(record):
            out[-1].append(record)
        else:
            out.append([record])
    return out


def part_path(lake: Path, topic: str, hour: datetime, partition: int, first: int, last: int) -> Path:
    return (lake / topic / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
            / f"part-{partition}-{first}-{last}.parquet")


def archived_up_to(lake: Path, topic: str, partition: int) -> int:
    """The highest offset of ``topic``/``partition`` already in the lake (-1: none)."""
    highest = -1
    folder = lake / topic
    if not folder.exists():
        return highest
    for path in folder.glob(f"date=*/hour=*/part-{partition}-*.parquet"):
        match = PART_FILE.match(path.name)
        if match and int(match.group(1)) == partition:
            highest = max(highest, int(match.group(3)))
    return highest


def write_run(lake: Path, run: list[Record]) -> Path:
    """Write one run to a temporary file in its final folder, fsync it, then rename it into place.

    Readers see the whole file or none (``mbyn.files.replacing``).
    """
    first = run[0]
    final = part_path(lake, first.topic, _hour(first), first.partition, first.offset, run[-1].offset)
    final.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([_row(r) for r in run], schema=_schema())
    try:
        with replacing(final) as temporary:
            pq.write_table(table, temporary, compression="zstd")
    except OSError as exc:
        raise SinkUnavailableError(f"{NAME}: cannot write {final}: {exc}") from exc
    return final


class LakeArchiver(StreamConsumer):
    """Raw topics → Parquet; commits after the renames, skips what the lake already holds."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = RAW_TOPICS
    batch_size: int = 5000
    batch_timeout: float = 2.0

    def __init__(self, settings: Settings) -> None:
        self.lake = settings.lake_dir
        self.archived: dict[PartitionKey, int] = {}
        self.files = 0
        self.rows = 0
        self.skipped = 0
        self._logical: dict[str, str] = {}

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        for physical, partition in partitions:
            logical = runtime.catalog.by_physical(physical).name
            self.archived[(physical, partition)] = archived_up_to(self.lake, logical, partition)
        return None

    def on_revoke(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        for key in partitions:
            self.archived.pop(key, None)

    def process_batch(self, batch: Batch) -> None:
        for key, records in batch.by_partition().items():
            done = self.archived.get(key, -1)
            fresh = [r for r in records if r.offset > done]
            self.skipped += len(records) - len(fresh)
            for run in runs(fresh):
                write_run(self.lake, run)
                self.archived[key] = run[-1].offset
                self.files += 1
                self.rows += len(run)

    def summary(self) -> dict[str, Any]:
        return {"files": self.files, "rows": self.rows, "skipped_already_archived": self.skipped,
                "lake_dir": str(self.lake)}


def reload_from_lake(topic: str, settings: Settings | None = None, *, partitions: set[int] | None = None,
                     ) -> Iterator[Record]:
    """Yield the archived records of logical ``topic`` as runtime Records, per partition in offset order.

    ``data`` holds the envelope (None for a tombstone) and ``value`` its JSON bytes, so the records can be
    fed to any consumer's ``process_batch`` (e.g. to rebuild a warehouse table without Kafka). Files are
    read one at a time; overlapping files (not produced by the archiver) are de-duplicated by offset.
    """
    settings = settings or get_settings()
    entry = load_catalog().get(topic)
    folder = settings.lake_dir / topic
    files: list[tuple[int, int, Path]] = []
    for path in folder.glob("date=*/hour=*/part-*.parquet"):
        match = PART_FILE.match(path.name)
        if match and (partitions is None or int(match.group(1)) in partitions):
            files.append((int(match.group(1)), int(match.group(2)), path))
    last: dict[int, int] = {}
    for partition, _, path in sorted(files):
        for row in pq.read_table(path).to_pylist():
            if row["offset"] <= last.get(partition, -1):
                continue
            last[partition] = row["offset"]
            data = None
            if row["event_id"] is not None:
                data = {"event_id": row["event_id"], "event_type": row["event_type"],
                        "schema_version": row["schema_version"], "event_time": row["event_time"],
                        "source": row["source"], "payload": json.loads(row["payload"])}
                if row["trace_id"] is not None:
                    data["trace_id"] = row["trace_id"]
            yield Record(topic=topic, physical_topic=entry.physical, partition=partition, offset=row["offset"],
                         key=row["key"].encode() if row["key"] is not None else None,
                         value=json.dumps(data).encode() if data is not None else None,
                         headers=[(k, v if v is not None else b"") for k, v in decode_headers(row["headers"])],
                         timestamp_ms=row["kafka_timestamp_ms"], data=data)


OPTIONS: tuple[Option, ...] = CONSUMER_OPTIONS


def run(settings: Settings, args: Args) -> int:
    return run_consumer_cli(lambda: LakeArchiver(settings), settings, args)
