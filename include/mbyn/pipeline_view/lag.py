"""The view's lag page part: per group, records and seconds behind, the trend, and ok | lagging | held | stuck.

Read from ``lag_samples`` (written by the lag monitor every few seconds): per group and sample time the sums
over its partitions (``mbyn.consumers.lag_state.summarise``'s shape, added up in SQL), the newest sample's
partitions, and the history of the last ``minutes`` for the trend (at most ``MAX_POINTS`` points per group:
longer windows keep each bucket's highest lag). When the newest sample is older than ``STALE_S`` (no
lag monitor running) one live sample (``mbyn.consumers.lag_monitor.sample_lag``, not written) is added as
the newest point, so the state is never older than a request.

The state and its reason come from ``mbyn.consumers.lag_state.group_state`` with the group's lag objective
(``Worker.lag_objective_s``) and why it holds records (``Worker.holds``) from the worker registry.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from mbyn.consumers.lag_monitor import sample_lag
from mbyn.consumers.lag_state import STATES, GroupLag, group_state, stalled_for, summarise
from mbyn.errors import BrokerUnavailableError
from mbyn.settings import Settings
from mbyn.warehouse import schema, warehouse_engine
from mbyn.workers import WORKERS, Worker

log = logging.getLogger("mbyn.pipeline_view")

#: The widest window ``/api/lag?minutes=`` accepts (a day).
MAX_MINUTES = 24 * 60
#: A newest sample older than this (seconds) is stale: a live sample is taken.
STALE_S = 30.0
#: Trend points per group at most.
MAX_POINTS = 240

Series = dict[str, list[tuple[float, GroupLag]]]


def lag_view(settings: Settings, minutes: float = 10.0) -> dict[str, Any]:
    """Per group: state and why, records and seconds behind, held records and why, members, the newest
    sample's partitions and the trend of the last ``minutes`` (0 < minutes ≤ MAX_MINUTES; ValueError else).
    BrokerUnavailableError when a live sample is needed and the broker does not answer."""
    if not 0 < minutes <= MAX_MINUTES:  # also refuses NaN
        raise ValueError(f"minutes must be more than 0 and at most {MAX_MINUTES}, got {minutes!r}")
    now = time.time()
    series, partitions = read_samples(settings, now - minutes * 60)
    origin = "lag_samples"
    newest = max((points[-1][0] for points in series.values() if points), default=None)
    if newest is None or now - newest > STALE_S:
        try:
            rows = sample_lag(settings)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"cannot sample lag from {settings.bootstrap()}: {exc}") from None
        partitions = _by_group(rows)
        for group, lag in summarise(rows).items():
            series.setdefault(group, []).append((now, lag))
        origin = "live" if newest is None else "lag_samples + live"
    owners = _owners(settings.topic_prefix)
    groups = [_group(settings, group, points, partitions.get(group, []), owners.get(group))
              for group, points in sorted(series.items()) if points]
    return {"minutes": minutes, "from": origin, "sampled_at": _iso(now),
            "states": {s: sum(1 for g in groups if g["state"] == s) for s in STATES}, "groups": groups}


def _group(settings: Settings, group: str, points: list[tuple[float, GroupLag]], partitions: list[dict[str, Any]],
           worker: Worker | None) -> dict[str, Any]:
    at, now = points[-1]
    objective = worker.lag_objective_s if worker is not None else None
    stalled = stalled_for(points)
    state, why = group_state(now, stalled, objective)
    return {
        "group": group, "consumer": group.removeprefix(settings.topic_prefix),
        "worker": worker.name if worker is not None else None, "state": state, "why": why,
        "holds": (worker.holds or None) if worker is not None else None, "objective_s": objective,
        "lag": now.lag, "held": now.held, "waiting": now.waiting, "lag_seconds": now.lag_seconds,
        "members": now.members, "stalled_s": stalled, "sampled_at": _iso(at),
        "partitions": [{k: p.get(k) for k in ("topic", "partition", "end_offset", "committed_offset", "lag", "held",
                                               "lag_seconds")} for p in partitions],
        "history": [{"at": _iso(t), "lag": g.lag, "held": g.held, "waiting": g.waiting, "lag_seconds": g.lag_seconds}
                    for t, g in _thin(points)],
    }


def read_samples(settings: Settings, since: float) -> tuple[Series, dict[str, list[dict[str, Any]]]]:
    """(per group the (time, GroupLag) of every sample since ``since``, oldest first; per group the rows of
    its newest sample) from ``lag_samples``; both empty when the table is missing or unreadable."""
    ls = schema.lag_samples
    prefix = settings.topic_prefix
    series: Series = {}
    partitions: dict[str, list[dict[str, Any]]] = {}
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.connect() as conn:
            if "lag_samples" not in inspect(conn).get_table_names():
                return series, partitions
            columns = {c["name"] for c in inspect(conn).get_columns("lag_samples")}
            if not {"lag_seconds", "held", "members"} <= columns:  # an older warehouse the monitor has not updated
                return series, partitions
            mine = ls.c.consumer_group.startswith(prefix, autoescape=True)
            sums = conn.execute(
                select(ls.c.consumer_group, ls.c.sampled_at, func.sum(ls.c.lag), func.sum(func.coalesce(ls.c.held, 0)),
                       func.max(ls.c.lag_seconds), func.max(ls.c.members), func.sum(ls.c.end_offset), func.count(),
                       func.count().filter(ls.c.lag_seconds.is_(None)))
                .where(ls.c.sampled_at >= datetime.fromtimestamp(since, UTC), mine)
                .group_by(ls.c.consumer_group, ls.c.sampled_at).order_by(ls.c.sampled_at)).all()
            newest = {}
            for group, at, lag, held, seconds, members, ends, count, unknown in sums:
                stamp = _aware(at).timestamp()
                lag, held = int(lag or 0), int(held or 0)
                # NULL lag_seconds: a waiting record of unknown time (``summarise``: the largest known, else None)
                known = float(seconds) if seconds is not None else (None if unknown else 0.0)
                series.setdefault(str(group), []).append(
                    (stamp, GroupLag(str(group), lag, held, known, int(members or 0), int(ends or 0) - lag + held,
                                     int(count))))
                newest[str(group)] = at
            for group, at in newest.items():
                rows = conn.execute(select(ls).where(ls.c.consumer_group == group, ls.c.sampled_at == at)
                                    .order_by(ls.c.topic, ls.c.partition)).mappings().all()
                partitions[group] = [dict(r) for r in rows]
    except SQLAlchemyError as exc:
        log.warning("lag_samples unreadable: %s", str(exc).splitlines()[0])
        return {}, {}
    finally:
        engine.dispose()
    return series, partitions


def _by_group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["consumer_group"]), []).append(row)
    return out


def _owners(prefix: str) -> dict[str, Worker]:
    """Group id → the registered worker whose group it is."""
    return {prefix + g: w for w in WORKERS.values() for g in w.groups}


def _thin(points: list[tuple[float, GroupLag]]) -> list[tuple[float, GroupLag]]:
    """At most MAX_POINTS points: equal-time buckets, each its sample with the highest lag; the newest kept."""
    if len(points) <= MAX_POINTS:
        return points
    first, last = points[0][0], points[-1][0]
    width = max((last - first) / (MAX_POINTS - 1), 1e-9)
    buckets: dict[int, tuple[float, GroupLag]] = {}
    for t, g in points[:-1]:
        key = int((t - first) / width)
        kept = buckets.get(key)
        if kept is None or (g.lag, g.lag_seconds or 0.0) > (kept[1].lag, kept[1].lag_seconds or 0.0):
            buckets[key] = (t, g)
    return [*sorted(buckets.values(), key=lambda p: p[0]), points[-1]][-MAX_POINTS:]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
