"""What the pipeline view shows, as plain JSON-ready dicts: the M×N graph, group lag, topics, quarantine, reports.

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

* **Quarantine** — the quarantined records one by one (id, where from, why), for the re-send action.

The records of a topic (latest, from an offset, from a time) and their export are ``mbyn.pipeline_view.browse``.
"""

from __future__ import annotations

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
from mbyn.errors import BrokerUnavailableError
from mbyn.kafka import inspect as broker
from mbyn.pipeline_view.browse import catalog_topic, header_of, iso, logical_name
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
            group = header_of(msg, "dlq.consumer_group")
            source = logical_name(settings, group) + DLQ_SUFFIX if group else header_of(msg, "source")
            if source:
                per = found.setdefault(source, {})
                topic = logical_name(settings, msg.topic() or "")
                per[topic] = per.get(topic, 0) + 1

        broker.scan(consumer, ranges, on_record, timeout_s=10)
    finally:
        consumer.close()
    with sampler.lock:
        sampler.sources, sampler.sources_at = found, time.time()
    return found


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
        read = {logical_name(settings, p["topic"]) for p in info["partitions"]}
        for member in info["members"]:
            read |= {logical_name(settings, a.rsplit("[", 1)[0]) for a in member["assignment"]}
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
        "sampled_at": iso(time.time()),
        "producers": sorted(producers.values(), key=lambda n: n["name"]),
        "topics": topic_nodes,
        "groups": group_nodes,
        "edges": [{"from": a, "to": b} for a, b in sorted(edges)],
        "rate_window_s": RATE_WINDOW_S,
    }


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
                    "history": [{"at": iso(at), "lag": lag} for at, lag in history.get(group_id, [])]})
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


def topic_detail(settings: Settings, name: str) -> dict[str, Any]:
    """One topic: catalog entry (partitions, key, config, description) and its offsets per partition."""
    logical, physical = catalog_topic(settings, name)
    entry = load_catalog().get(logical)
    parts = broker.partition_offsets(broker.open_admin(settings), [physical])[physical]
    return {"name": logical, "physical": physical, "exists": parts is not None, "description": entry.description,
            "key": entry.key, "config": entry.config, "event_types": list(entry.event_types),
            "partitions": [{"partition": p, "start": s, "end": e} for p, s, e in parts or []],
            "end": sum(e for _, _, e in parts or []), "start": sum(s for _, s, _ in parts or [])}


# Quarantine -------------------------------------------------------------------------------------------


def quarantined(settings: Settings, limit: int = 100, topic: str | None = None,
                include_replayed: bool = False) -> dict[str, Any]:
    """The newest ``limit`` quarantined records (not yet re-sent unless ``include_replayed``), optionally of one
    catalog ``topic``; the value is shown as text up to 300 characters. Empty when the table does not exist."""
    q = schema.quarantine
    condition: Any = q.c.topic.is_not(None)
    if topic:
        condition &= q.c.topic == catalog_topic(settings, topic)[1]
    if not include_replayed:
        condition &= q.c.replayed_at.is_(None)
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.connect() as conn:
            if "quarantine" not in inspect(conn).get_table_names():
                return {"count": 0, "records": []}
            rows = conn.execute(select(q.c.id, q.c.topic, q.c.partition, q.c.offset, q.c.key, q.c.value_text,
                                       q.c.reason, q.c.error_message, q.c.consumer_group, q.c.quarantined_at,
                                       q.c.replayed_at)
                                .where(condition).order_by(q.c.id.desc()).limit(limit)).all()
    finally:
        engine.dispose()
    return {"count": len(rows), "records": [{
        "id": r.id, "topic": logical_name(settings, r.topic), "partition": r.partition, "offset": r.offset,
        "key": None if r.key is None else bytes(r.key).decode("utf-8", errors="replace"),
        "value": None if r.value_text is None else r.value_text[:300], "reason": r.reason,
        "error": (r.error_message or "")[:300], "group": logical_name(settings, r.consumer_group or ""),
        "quarantined_at": _stamp(r.quarantined_at), "replayed_at": _stamp(r.replayed_at)} for r in rows]}


def _stamp(at: datetime | None) -> str | None:
    if at is None:
        return None
    return iso((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


# Reports ----------------------------------------------------------------------------------------------


def reports(settings: Settings, limit: int = 50) -> dict[str, Any]:
    """The newest ``limit`` files under ``settings.reports_dir`` (path relative to it, size, modified time)."""
    root = settings.reports_dir
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return {"reports_dir": str(root), "count": len(files), "reports": [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "modified": iso(p.stat().st_mtime),
         "url": "reports/" + p.relative_to(root).as_posix()} for p in files[:limit]]}


def report_file(settings: Settings, relative: str) -> Path | None:
    """The report file at ``relative`` under reports_dir, or None (missing, or outside the folder)."""
    root = settings.reports_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
