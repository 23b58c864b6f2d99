"""The view's topic browser: records of a topic, newest first or forward from an offset or a time, and export.

Three ways to choose where to read (one per request):

* **latest** (no ``partition`` / ``offset`` / ``since``) — the newest ``limit`` records, newest first;
* **from an offset** (``partition`` + ``offset``) — forward from ``offset`` in that partition, oldest first;
  an offset older than the partition's start (deleted by retention) reads from the start, one past the end
  reads nothing; ``partition`` alone reads the newest records of that partition;
* **from a time** (``since``, optionally one ``partition``) — per partition forward from the first record at
  or after ``since`` (``offsets_for_times``), the first ``limit`` records by timestamp, oldest first.

``key`` / ``header`` (``name:value``, or ``name`` for any record carrying it) filter what is read; with a
filter up to ``depth`` records per partition are read for ``limit`` matches. Every answer says what was read
(``ranges``: per partition the offsets ``from`` … ``to`` exclusive) so the page can page on (``next``).
Read ``read_committed``: aborted records never show. Values go through the codec's JSON parser, so a value it
refuses (not JSON, NaN, lone surrogates, too deep) is shown as text or base64, never raised.

A bad parameter (a partition the topic does not have, a negative offset, an unreadable time, an offset
without a partition) raises BrowseQueryError naming the parameter and what is allowed.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from mbyn.catalog import load_catalog
from mbyn.contracts.codec import decode_json
from mbyn.errors import BrokerUnavailableError, CatalogError, MbynError, PoisonRecordError
from mbyn.kafka import inspect as broker
from mbyn.kafka.consumer import message_headers
from mbyn.settings import Settings

MAX_LIMIT = 10_000
DEFAULT_SEARCH_DEPTH = 5_000
MAX_OFFSET = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Broker errors that pass (a partition's leader moving or not yet known): read again after a moment.
TRANSIENT = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TIMED_OUT)


class BrowseQueryError(MbynError):
    """A browse parameter the topic cannot answer; ``param`` names it (the API answers 422)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def logical_name(settings: Settings, physical: str) -> str:
    prefix = settings.topic_prefix
    return physical[len(prefix):] if prefix and physical.startswith(prefix) else physical


def catalog_topic(settings: Settings, name: str) -> tuple[str, str]:
    """(logical, physical) for a logical or physical catalog name; CatalogError when it is neither."""
    logical = logical_name(settings, name)
    load_catalog().get(logical)  # raises CatalogError naming the known topics
    return logical, settings.topic_prefix + logical


def parse_since(text: str) -> datetime:
    """An ISO-8601 time (``Z``, an offset, or naive = UTC) as an aware UTC datetime; BrowseQueryError if not."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BrowseQueryError("since", f"{text[:80]!r} is not an ISO-8601 time "
                                        "(e.g. 2026-12-05T06:00:00Z)") from None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BrowseQueryError("since", f"{text[:80]!r} is out of range") from None
    return max(value, EPOCH)  # Kafka timestamps start at 1970; negative ones mean "latest"/"earliest" to it


def text_of(value: str | bytes | None) -> str | None:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def header_of(msg: Message, name: str) -> str | None:
    """The last header ``name`` of ``msg`` as text (None when absent)."""
    for k, v in reversed(message_headers(msg)):
        if k == name:
            return text_of(v)
    return None


def shown(msg: Message) -> dict[str, Any]:
    """One record as the page shows it: coordinates, time, key, headers and the value as JSON, text or base64."""
    ts_type, ts = msg.timestamp()
    value = msg.value()
    out: Any
    if value is None:
        out, encoding = None, "null"
    else:
        try:
            out, encoding = decode_json(value), "json"
        except PoisonRecordError:
            try:
                out, encoding = value.decode("utf-8"), "text"
            except UnicodeDecodeError:
                out, encoding = base64.b64encode(value).decode(), "base64"
    key = msg.key()
    return {
        "partition": msg.partition(), "offset": msg.offset(),
        "timestamp": iso(ts / 1000) if ts_type != 0 and ts is not None else None,
        "timestamp_ms": ts if ts_type != 0 else None,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "headers": {k: text_of(v) for k, v in message_headers(msg)},
        "value": out, "value_encoding": encoding,
    }


def messages(settings: Settings, name: str, limit: int = 50, key: str | None = None, header: str | None = None,
             depth: int = DEFAULT_SEARCH_DEPTH, partition: int | None = None, offset: int | None = None,
             since: str | None = None) -> dict[str, Any]:
    """Records of topic ``name`` (see the module docstring for latest / from an offset / from a time)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    if offset is not None and partition is None:
        raise BrowseQueryError("offset", "needs a partition (offsets are per partition)")
    if offset is not None and since is not None:
        raise BrowseQueryError("since", "give either an offset or a time to start from, not both")
    if offset is not None and not 0 <= offset <= MAX_OFFSET:
        raise BrowseQueryError("offset", f"must be between 0 and {MAX_OFFSET}, got {offset}")
    when = parse_since(since) if since is not None else None
    logical, physical = catalog_topic(settings, name)
    header_name, _, header_value = (header or "").partition(":")
    filtered = bool(key) or bool(header_name)
    back = max(limit, depth) if filtered else limit
    found: list[dict[str, Any]] = []
    scanned = 0

    def on_record(msg: Message) -> None:
        nonlocal scanned
        scanned += 1
        if key and text_of(msg.key()) != key:
            return
        if header_name:
            value = header_of(msg, header_name)
            if value is None and not any(k == header_name for k, _ in message_headers(msg)):
                return
            if header_value and value != header_value:
                return
        found.append(shown(msg))

    consumer = broker.reader(settings, "view")
    try:
        partitions = broker.partitions_of(consumer, physical, timeout_s=10)
        if partitions is None:
            raise CatalogError(f"topic {physical!r} does not exist on {settings.bootstrap()}; "
                               "create it with `mbyn topics apply`")
        if partition is not None:
            if partition not in partitions:
                raise BrowseQueryError("partition", f"{logical} has partitions 0..{max(partitions)}, got {partition}")
            partitions = [partition]
        if when is not None:
            try:
                starts = broker.offsets_for_time(settings, physical, partitions, when)
            except MbynError as exc:  # the broker's error for a partition: try again later, not a bad request
                raise BrokerUnavailableError(str(exc)) from None
            mode = "since"
        elif offset is not None:
            starts = {partitions[0]: offset}
            mode = "offset"
        else:
            starts, mode = {}, "latest"
        ranges = {}
        for p in partitions:
            low, high = _watermarks(consumer, physical, p)
            if mode == "latest":
                ranges[(physical, p)] = (max(low, high - back), high)
            else:
                first = min(max(starts[p], low), high)
                ranges[(physical, p)] = (first, min(high, first + back))
        broker.scan(consumer, ranges, on_record, timeout_s=30)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read {physical} from {settings.bootstrap()}: {exc}") from None
    finally:
        consumer.close()
    newest_first = mode == "latest"
    found.sort(key=lambda m: (m["timestamp_ms"] or 0, m["offset"], m["partition"]), reverse=newest_first)
    shown_now = found[:limit]
    return {"topic": logical, "physical": physical, "limit": limit, "key": key, "header": header, "mode": mode,
            "order": "newest first" if newest_first else "oldest first", "partition": partition, "offset": offset,
            "since": iso(when.timestamp()) if when is not None else None, "scanned": scanned,
            "count": len(shown_now), "messages": shown_now,
            "next": {} if newest_first else _next(ranges, found, shown_now),
            "ranges": [{"partition": p, "from": a, "to": b} for (_, p), (a, b) in sorted(ranges.items())]}


def _watermarks(consumer: Any, physical: str, partition: int, attempts: int = 5) -> tuple[int, int]:
    """(low, high) offsets of a partition, retried while the broker answers with a transient error (a partition
    whose leader moved or is not known yet, as right after the topic was created)."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(physical, partition), timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if attempt == attempts - 1 or error is None or not (error.retriable() or error.code() in TRANSIENT):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _next(ranges: dict[tuple[str, int], tuple[int, int]], matched: list[dict[str, Any]],
          shown_now: list[dict[str, Any]]) -> dict[str, int]:
    """Per partition the offset a forward read continues from: past the last record shown there; where none
    was shown, the first match left out by ``limit``, else past everything read (nothing there matched)."""
    out = {p: b for (_, p), (_, b) in ranges.items()}
    for m in sorted(matched, key=lambda m: m["offset"], reverse=True):  # lowest offset wins
        out[m["partition"]] = m["offset"]
    for m in sorted(shown_now, key=lambda m: m["offset"]):  # highest offset wins
        out[m["partition"]] = m["offset"] + 1
    return {str(p): o for p, o in sorted(out.items())}


def export(settings: Settings, name: str, fmt: str, limit: int = 1000, key: str | None = None,
           header: str | None = None, **where: Any) -> tuple[str, str]:
    """(body, media type) of ``messages(...)`` as JSON (a list) or CSV (value as compact JSON text)."""
    found = messages(settings, name, limit=limit, key=key, header=header, **where)["messages"]
    if fmt == "json":
        return json.dumps(found, indent=1), "application/json"
    if fmt != "csv":
        raise ValueError(f"format must be json or csv, got {fmt!r}")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["partition", "offset", "timestamp", "key", "headers", "value"])
    for m in found:
        value = m["value"] if isinstance(m["value"], str) or m["value"] is None else json.dumps(m["value"])
        writer.writerow([m["partition"], m["offset"], m["timestamp"], m["key"], json.dumps(m["headers"]), value])
    return buf.getvalue(), "text/csv"
