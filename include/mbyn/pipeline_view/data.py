"""What the pipeline view shows, as plain JSON-ready dicts: the M×N graph, group lag, topics, messages, reports.

Everything is read live from the broker and the warehouse of ``settings``; nothing here writes anywhere.

* **Graph** — producers → topics → consumer groups. Producers come from the registry
  (``mbyn.workers``: each producer's ``source`` and, when it writes only one, its topic) plus the ``source`` header
  of the most recent records of every topic, so a producer the registry does not know (a test, a replay)
  still shows up. A ``source`` that names a consumer group (``order-enricher``) is drawn as an edge from
  that group, not as a producer; so is a dead letter (its ``dlq.consumer_group`` header names the writer).
  Replica counts are the groups' live members.
* **Rates** — a ``Sampler`` keeps the end offsets and group positions of recent calls (in memory, per
  process); a rate is the difference between the newest sample and the oldest one within ``RATE_WINDOW_S``,
  divided by the time between them. The first call has no rate yet (``null``). A producer's rate is the
  sum of the rates of the topics it writes to: exact when it is the topic's only producer, an upper bound
  otherwise.
* **Lag history** — from ``lag_samples`` (written by the lag monitor) when it has rows for the window,
  else from the sampler's memory.
* **Workers** — the copies of a running ``mbyn run`` with restarts and the ``crash-looping`` state
  (``mbyn.run_state.worker_status``); graph nodes list their crash-looping copies (``crash_looping``).

Records are shown whatever they hold: values go through the codec's JSON parser
(``mbyn.contracts.codec.decode_json``), so a value it refuses (not JSON, NaN, lone surrogates, nesting
deeper than its limit) is shown as text or base64, never raised; unreadable header names read as no headers.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Message
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from mbyn import reconciliation
from mbyn.catalog import load_catalog
from mbyn.contracts.codec import decode_json
from mbyn.errors import BrokerUnavailableError, CatalogError, PoisonRecordError
from mbyn.kafka import inspect as broker
from mbyn.kafka.consumer import message_headers
from mbyn.run_state import worker_status
from mbyn.settings import Settings
from mbyn.status import consumer_topics
from mbyn.warehouse import schema, warehouse_engine
from mbyn.workers import producers

log = logging.getLogger("mbyn.pipeline_view")

RATE_WINDOW_S = 30.0
HISTORY_S = 15 * 60.0
SOURCES_TTL_S = 15.0
TAIL_PER_PARTITION = 20
MAX_LIMIT = 10_000
DEFAULT_SEARCH_DEPTH = 5_000
DLQ_SUFFIX = "-dlq"


# Registry ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownProducer:
    name: str  # registry name (`mbyn produce <name>`)
    source: str | None  # the `source` header it writes
    topic: str | None  # its topic when it writes only one
    help: str


def known_producers() -> list[KnownProducer]:
    """The registered producers (``mbyn.workers``) with their ``source`` header and their only topic."""
    return [KnownProducer(w.name, w.source, w.writes[0] if len(w.writes) == 1 else None, w.help)
            for w in producers()]


# Sampling ---------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float  # time.time()
    ends: dict[str, int]  # logical topic → sum of end offsets
    positions: dict[str, int]  # group id → sum of its positions (stored, else committed)
    lags: dict[str, int]  # group id → lag


@dataclass
class Sampler:
    """Recent snapshots (for rates and lag history) and a short cache of the ``source`` headers seen."""

    history: deque[Snapshot] = field(default_factory=lambda: deque(maxlen=2000))
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # source → topic → records seen
    sources_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, snap: Snapshot) -> None:
        with self.lock:
            self.history.append(snap)
            while self.history and snap.at - self.history[0].at > HISTORY_S:
                self.history.popleft()

    def rates(self) -> tuple[dict[str, float], dict[str, float]]:
        """(topic → records/s produced, group → records/s consumed) over the last RATE_WINDOW_S."""
        with self.lock:
            if len(self.history) < 2:
                return {}, {}
            new = self.history[-1]
            old = next((s for s in self.history if new.at - s.at <= RATE_WINDOW_S and s is not new),
                       self.history[-2])
        dt = max(new.at - old.at, 1e-6)
        topics = {t: max(0.0, (e - old.ends.get(t, e)) / dt) for t, e in new.ends.items()}
        groups = {g: max(0.0, (p - old.positions.get(g, p)) / dt) for g, p in new.positions.items()}
        return topics, groups

    def lag_series(self, since: float) -> dict[str, list[tuple[float, int]]]:
        with self.lock:
            snaps = [s for s in self.history if s.at >= since]
        series: dict[str, list[tuple[float, int]]] = {}
        for snap in snaps:
            for group, lag in snap.lags.items():
                series.setdefault(group, []).append((snap.at, lag))
        return series


def _logical(settings: Settings, physical: str) -> str:
    prefix = settings.topic_prefix
    return physical[len(prefix):] if prefix and physical.startswith(prefix) else physical


def snapshot(settings: Settings, sampler: Sampler) -> tuple[dict[str, Any], Snapshot]:
    """Offsets and groups now (``mbyn.status`` without the reconciliation); recorded in ``sampler``."""
    prefix = settings.topic_prefix
    physical = {name: prefix + name for name in load_catalog().topics}
    registered = consumer_topics()
    try:
        admin = broker.open_admin(settings)
        offsets = broker.partition_offsets(admin, physical.values())
        kafka_groups = broker.groups(admin, prefix)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read offsets and groups from {settings.bootstrap()}: {exc}") from None
    wh = reconciliation.read_warehouse(settings)
    starts, ends = {}, {}
    topics: dict[str, Any] = {}
    for name, phys in physical.items():
        parts = offsets.get(phys) or []
        for p, s, e in parts:
            starts[(phys, p)], ends[(phys, p)] = s, e
        topics[name] = {"name": name, "physical": phys, "exists": offsets.get(phys) is not None,
                        "partitions": len(parts), "start": sum(s for _, s, _ in parts),
                        "end": sum(e for _, _, e in parts)}
    by_group = broker.group_lag(prefix, kafka_groups, wh.stored, registered, physical, starts, ends)
    positions = {g: sum(p["stored"] if p["stored"] is not None else (p["committed"] or 0)
                        for p in info["partitions"]) for g, info in by_group.items()}
    snap = Snapshot(time.time(), {t: v["end"] for t, v in topics.items()}, positions,
                    {g: info["lag"] for g, info in by_group.items()})
    sampler.add(snap)
    return {"topics": topics, "groups": by_group, "warehouse": wh, "registered": registered}, snap


def recent_sources(settings: Settings, sampler: Sampler, topics: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``source`` header → logical topic → how many of the last records per partition carried it (cached)."""
    with sampler.lock:
        if time.time() - sampler.sources_at < SOURCES_TTL_S:
            return sampler.sources
    consumer = broker.reader(settings, "view")
    found: dict[str, dict[str, int]] = {}
    try:
        partitions = [(t["physical"], p) for t in topics.values() if t["exists"] for p in range(t["partitions"])]
        ranges = broker.tail_ranges(consumer, partitions, TAIL_PER_PARTITION, timeout_s=5)

        def on_record(msg: Message) -> None:
            # A dead letter keeps its original headers (``source`` of the first producer); the consumer
            # that wrote it is in ``dlq.consumer_group``.
            group = _header(msg, "dlq.consumer_group")
            source = _logical(settings, group) + DLQ_SUFFIX if group else _header(msg, "source")
            if source:
                per = found.setdefault(source, {})
                topic = _logical(settings, msg.topic() or "")
                per[topic] = per.get(topic, 0) + 1

        broker.scan(consumer, ranges, on_record, timeout_s=10)
    finally:
        consumer.close()
    with sampler.lock:
        sampler.sources, sampler.sources_at = found, time.time()
    return found


def _text(value: str | bytes | None) -> str | None:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _header(msg: Message, name: str) -> str | None:
    for k, v in reversed(message_headers(msg)):
        if k == name:
            return _text(v)
    return None


# Graph ------------------------------------------------------------------------------------------------


def graph(settings: Settings, sampler: Sampler) -> dict[str, Any]:
    """The M×N graph: producer, topic and group nodes with rates and replica counts, and the edges."""
    live, _ = snapshot(settings, sampler)
    topic_rates, group_rates = sampler.rates()
    topics, groups, registered = live["topics"], live["groups"], live["registered"]
    prefix = settings.topic_prefix
    sources = recent_sources(settings, sampler, topics)
    consumer_names = {info["consumer"] for info in groups.values()}
    looping: dict[str, list[str]] = {}  # "produce:clickstream" → crash-looping copies
    for copy in worker_status(settings)["copies"]:
        if copy["state"] == "crash-looping":
            looping.setdefault(str(copy["worker"]), []).append(copy["label"])

    edges: set[tuple[str, str]] = set()
    producers: dict[str, dict[str, Any]] = {}
    by_source: dict[str, str] = {}
    for known in known_producers():
        node: dict[str, Any] = {"id": f"producer:{known.name}", "name": known.name, "source": known.source,
                                "registered": True, "help": known.help, "topics": [], "active": False,
                                "crash_looping": looping.get(f"produce:{known.name}", [])}
        producers[known.name] = node
        if known.source:
            by_source[known.source] = known.name
        if known.topic:
            node["topics"].append(known.topic)
    for source, per_topic in sources.items():
        owner = source[: -len(DLQ_SUFFIX)] if source.endswith(DLQ_SUFFIX) else source
        if owner in consumer_names:  # a consumer writing (its output or dead letters): edge from its group
            for topic in per_topic:
                edges.add((f"group:{prefix}{owner}", f"topic:{topic}"))
            continue
        name = by_source.get(source, source)
        node = producers.setdefault(name, {"id": f"producer:{name}", "name": name, "source": source,
                                           "registered": False, "help": "seen in the source header of recent "
                                           "records", "topics": [], "active": False})
        node["active"] = True
        node["topics"] = sorted(set(node["topics"]) | set(per_topic))
    for node in producers.values():
        for topic in node["topics"]:
            edges.add((node["id"], f"topic:{topic}"))
        rates = [topic_rates.get(t) for t in node["topics"]]
        node["rate"] = sum(r for r in rates if r is not None) if any(r is not None for r in rates) else None

    group_nodes = []
    for group_id, info in groups.items():
        read = {_logical(settings, p["topic"]) for p in info["partitions"]}
        for member in info["members"]:
            read |= {_logical(settings, a.rsplit("[", 1)[0]) for a in member["assignment"]}
        read |= set(registered.get(info["consumer"], ()))
        for topic in read:
            if topic in topics:
                edges.add((f"topic:{topic}", f"group:{group_id}"))
        group_nodes.append({"id": f"group:{group_id}", "name": info["consumer"], "group": group_id,
                            "registered": info["registered"], "state": info["state"],
                            "members": info["member_count"], "client_ids": info["client_ids"],
                            "lag": info["lag"], "rate": group_rates.get(group_id), "topics": sorted(read),
                            "crash_looping": looping.get(f"consume:{info['consumer']}", [])})
    topic_nodes = [{"id": f"topic:{name}", **t, "rate": topic_rates.get(name)} for name, t in topics.items()]
    return {
        "sampled_at": _iso(time.time()),
        "producers": sorted(producers.values(), key=lambda n: n["name"]),
        "topics": topic_nodes,
        "groups": group_nodes,
        "edges": [{"from": a, "to": b} for a, b in sorted(edges)],
        "rate_window_s": RATE_WINDOW_S,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def workers(settings: Settings) -> dict[str, Any]:
    """The supervised worker copies of ``mbyn run`` (empty without a run); see ``worker_status``."""
    return worker_status(settings)


# Groups -----------------------------------------------------------------------------------------------


def groups_view(settings: Settings, sampler: Sampler, minutes: float = 10.0) -> dict[str, Any]:
    """Per group: lag now, lag over the last ``minutes`` (lag_samples, else in-memory), members, offsets."""
    live, _ = snapshot(settings, sampler)
    since = time.time() - minutes * 60
    history = _lag_samples(settings, since)
    origin = "lag_samples"
    if not history:
        history, origin = sampler.lag_series(since), "memory"
    _, group_rates = sampler.rates()
    out = []
    for group_id, info in live["groups"].items():
        out.append({**info, "group": group_id, "rate": group_rates.get(group_id),
                    "history": [{"at": _iso(at), "lag": lag} for at, lag in history.get(group_id, [])]})
    return {"groups": out, "history_from": origin, "minutes": minutes}


def _lag_samples(settings: Settings, since: float) -> dict[str, list[tuple[float, int]]]:
    """Total lag per group and sample time from the ``lag_samples`` table (empty when it has none)."""
    ls = schema.lag_samples
    engine = warehouse_engine(settings, read_only=True)
    series: dict[str, list[tuple[float, int]]] = {}
    try:
        with engine.connect() as conn:
            if "lag_samples" not in inspect(conn).get_table_names():
                return series
            rows = conn.execute(select(ls.c.consumer_group, ls.c.sampled_at, func.sum(ls.c.lag))
                                .where(ls.c.sampled_at >= datetime.fromtimestamp(since, UTC),
                                       ls.c.consumer_group.startswith(settings.topic_prefix))
                                .group_by(ls.c.consumer_group, ls.c.sampled_at)
                                .order_by(ls.c.sampled_at)).all()
    except SQLAlchemyError as exc:
        log.warning("lag_samples unreadable: %s", str(exc).splitlines()[0])
        return series
    finally:
        engine.dispose()
    for group, at, lag in rows:
        stamp = at if at.tzinfo else at.replace(tzinfo=UTC)
        series.setdefault(str(group), []).append((stamp.timestamp(), int(lag or 0)))
    return series


# Topics and messages ----------------------------------------------------------------------------------


def _catalog_topic(settings: Settings, name: str) -> tuple[str, str]:
    """(logical, physical) for a logical or physical catalog name; CatalogError when it is neither."""
    catalog = load_catalog()
    logical = _logical(settings, name)
    catalog.get(logical)  # raises CatalogError naming the known topics
    return logical, settings.topic_prefix + logical


def topic_detail(settings: Settings, name: str) -> dict[str, Any]:
    """One topic: catalog entry (partitions, key, config, description) and its offsets per partition."""
    logical, physical = _catalog_topic(settings, name)
    entry = load_catalog().get(logical)
    parts = broker.partition_offsets(broker.open_admin(settings), [physical])[physical]
    return {"name": logical, "physical": physical, "exists": parts is not None, "description": entry.description,
            "key": entry.key, "config": entry.config, "event_types": list(entry.event_types),
            "partitions": [{"partition": p, "start": s, "end": e} for p, s, e in parts or []],
            "end": sum(e for _, _, e in parts or []), "start": sum(s for _, s, _ in parts or [])}


def _message(msg: Message) -> dict[str, Any]:
    ts_type, ts = msg.timestamp()
    value = msg.value()
    shown: Any
    if value is None:
        shown, encoding = None, "null"
    else:
        try:
            shown, encoding = decode_json(value), "json"
        except PoisonRecordError:
            try:
                shown, encoding = value.decode("utf-8"), "text"
            except UnicodeDecodeError:
                shown, encoding = base64.b64encode(value).decode(), "base64"
    key = msg.key()
    return {
        "partition": msg.partition(), "offset": msg.offset(),
        "timestamp": _iso(ts / 1000) if ts_type != 0 and ts is not None else None,
        "timestamp_ms": ts if ts_type != 0 else None,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "headers": {k: _text(v) for k, v in message_headers(msg)},
        "value": shown, "value_encoding": encoding,
    }


def messages(settings: Settings, name: str, limit: int = 50, key: str | None = None, header: str | None = None,
             depth: int = DEFAULT_SEARCH_DEPTH) -> dict[str, Any]:
    """The newest ``limit`` records of a topic, newest first; with ``key`` / ``header`` (``name:value``) the
    newest matching ones among the last ``depth`` records per partition.

    A header filter ``name:value`` matches a header ``name`` equal to ``value``; ``name`` alone (no colon)
    matches any record carrying that header. Read ``read_committed``: aborted records never show.
    """
    limit = max(1, min(int(limit), MAX_LIMIT))
    logical, physical = _catalog_topic(settings, name)
    header_name, _, header_value = (header or "").partition(":")
    filtered = bool(key) or bool(header_name)
    back = max(limit, depth) if filtered else limit
    matches: list[dict[str, Any]] = []
    scanned = 0

    def on_record(msg: Message) -> None:
        nonlocal scanned
        scanned += 1
        if key and _text(msg.key()) != key:
            return
        if header_name:
            value = _header(msg, header_name)
            if value is None and not any(k == header_name for k, _ in message_headers(msg)):
                return
            if header_value and value != header_value:
                return
        matches.append(_message(msg))

    consumer = broker.reader(settings, "view")
    try:
        partitions = broker.partitions_of(consumer, physical, timeout_s=10)
        if partitions is None:
            raise CatalogError(f"topic {physical!r} does not exist on {settings.bootstrap()}; "
                               "create it with `mbyn topics apply`")
        ranges = broker.tail_ranges(consumer, [(physical, p) for p in partitions], back, timeout_s=10)
        broker.scan(consumer, ranges, on_record, timeout_s=30)
    finally:
        consumer.close()
    matches.sort(key=lambda m: (m["timestamp_ms"] or 0, m["offset"]), reverse=True)
    return {"topic": logical, "physical": physical, "limit": limit, "key": key, "header": header,
            "scanned": scanned, "count": min(len(matches), limit), "messages": matches[:limit]}


def export(settings: Settings, name: str, fmt: str, limit: int = 1000, key: str | None = None,
           header: str | None = None) -> tuple[str, str]:
    """(body, media type) of the newest records as JSON (a list) or CSV (value as compact JSON text)."""
    found = messages(settings, name, limit=limit, key=key, header=header)["messages"]
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


# Reports ----------------------------------------------------------------------------------------------


def reports(settings: Settings, limit: int = 50) -> dict[str, Any]:
    """The newest ``limit`` files under ``settings.reports_dir`` (path relative to it, size, modified time)."""
    root = settings.reports_dir
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return {"reports_dir": str(root), "count": len(files), "reports": [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "modified": _iso(p.stat().st_mtime),
         "url": "reports/" + p.relative_to(root).as_posix()} for p in files[:limit]]}


def report_file(settings: Settings, relative: str) -> Path | None:
    """The report file at ``relative`` under reports_dir, or None (missing, or outside the folder)."""
    root = settings.reports_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
