"""Lag alerts → one HTML incident report per alert, under ``<reports_dir>/lag-incidents/<alert_id>.html``.

The lag-monitor raises an alert when a consumer group stays over its lag objective (or has no live member
while records wait) and clears it when the group is back (``mbyn.consumers.lag_objectives``); the lag incident
DAG (``dags/lag_incident_report.py``) hands over the asset events of its run and every one is handled, in the
order they were raised.

A **raised** alert writes the report: what is wrong (the group, records and seconds behind, its objective, the
reason), the lag trend as an inline SVG chart drawn from ``lag_samples`` (records behind and, when the
lag-monitor knew them, seconds behind against the objective; from 10 minutes before the raise, at least the last
30 minutes, at most the last 24 hours), the group's live members, the last error line of
each copy of the worker behind the group (from ``mbyn run``'s logs ``var/logs/workers/<worker>-<copy>.log``;
"no log" when there is none) and what to do. A **cleared** alert rewrites the same file marked cleared — with
the trend up to the recovery and the members at that time — and keeps the section written when it was raised.

Idempotent: the file name is the alert id, files are replaced atomically, and a raised alert redelivered after
its clearance (the watcher is at-least-once) does not reopen a cleared report.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mbyn.files import atomic_write
from mbyn.orchestration.incidents import decode_event
from mbyn.run_state import last_error_line
from mbyn.settings import Settings, get_settings
from mbyn.warehouse.engine import parse_time, warehouse_engine
from mbyn.workers import WORKERS, Worker

log = logging.getLogger("mbyn.incidents")

#: The logical catalog topic lag alerts arrive on, and their event type (``mbyn.consumers.lag_objectives``).
LAG_ALERTS_TOPIC = "ops-alerts"
LAG_ALERT_EVENT_TYPE = "lag_alert"
#: The trend shows at least this much history, and this much before the alert was raised.
TREND_MINUTES = 30
BEFORE_RAISE = timedelta(minutes=10)
#: ... and never more than this (an incident that lasted days shows its last day).
MAX_TREND = timedelta(hours=24)
MAX_POINTS = 400
_STATE_MARK = '<meta name="mbyn-lag-alert-state" content="{state}">'
_RAISED = re.compile(r"<!--raised-->.*?<!--/raised-->", re.S)


def _time(text: Any) -> datetime | None:
    """``text`` as an aware UTC datetime; None when it is not an ISO-8601 time."""
    try:
        return parse_time(text) if isinstance(text, str) else None
    except ValueError:
        return None


def decode_lag_alert(value: Any) -> dict[str, Any] | None:
    """The envelope of a valid lag alert (raised or cleared), or None with the reason logged. Never raises."""
    return decode_event(LAG_ALERTS_TOPIC, LAG_ALERT_EVENT_TYPE, value)


def lag_alerts_from_events(events: Iterable[Any]) -> list[dict[str, Any]]:
    """The lag alert envelopes carried by asset events, oldest first; invalid ones skipped with a warning."""
    found = []
    for event in events:
        extra = getattr(event, "extra", event)
        envelope = decode_lag_alert(extra.get("payload") if isinstance(extra, Mapping) else None)
        if envelope is not None:
            found.append(envelope)
    return sorted(found, key=lambda e: _time(e["event_time"]) or datetime.min.replace(tzinfo=UTC))


def report_path(settings: Settings, alert_id: str) -> Path:
    """Where the report of ``alert_id`` lives (unsafe characters of the id replaced by ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", alert_id).lstrip(".") or "_"
    return settings.reports_dir / "lag-incidents" / f"{safe}.html"


def worker_of(settings: Settings, group: str) -> Worker | None:
    """The registered worker whose consumer group ``group`` is (with the settings' prefix), if any."""
    name = group.removeprefix(settings.topic_prefix)
    return next((w for w in WORKERS.values() if name in w.groups), None)


def copies_last_errors(settings: Settings, worker: Worker | None) -> list[tuple[str, str]]:
    """(copy, last error line) per copy of ``worker``: its declared copies and any other log it left."""
    if worker is None:
        return []
    folder = settings.logs_dir / "workers"
    numbers = set(range(max(worker.copies, 1)))
    if folder.is_dir():
        pattern = re.compile(re.escape(worker.name) + r"-(\d{1,4})\.log")
        numbers |= {int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))}
    return [(f"{worker.name}-{i}", last_error_line(folder / f"{worker.name}-{i}.log") or "no log")
            for i in sorted(numbers)]


Point = tuple[datetime, int, float | None]


def lag_history(settings: Settings, group: str, since: datetime) -> tuple[list[Point], str]:
    """(sampled_at, records behind, seconds behind) per lag-monitor round since ``since``, and a note when there
    are none (no warehouse, no ``lag_samples`` table, a query that failed)."""
    url = make_url(settings.warehouse())
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return [], f"no warehouse yet ({url.database} does not exist): no lag history"
    engine = warehouse_engine(settings, read_only=True)
    try:
        with engine.connect() as conn:
            meta = MetaData()
            meta.reflect(conn, only=lambda name, _meta: name == "lag_samples")
            table = meta.tables.get("lag_samples")
            if table is None:
                return [], "the warehouse has no lag_samples table yet (is the lag-monitor running?)"
            seconds = func.max(table.c.lag_seconds) if "lag_seconds" in table.c else None
            columns = [table.c.sampled_at, func.sum(table.c.lag)] + ([seconds] if seconds is not None else [])
            query = (select(*columns).where(table.c.consumer_group == group, table.c.sampled_at >= since)
                     .group_by(table.c.sampled_at).order_by(table.c.sampled_at))
            rows = conn.execute(query).all()
    except SQLAlchemyError as exc:
        log.warning("lag incident: lag history query failed: %s", exc)
        return [], f"lag history query failed: {exc.__class__.__name__}: {exc}"
    finally:
        engine.dispose()
    points = []
    for row in rows:
        at = row[0] if isinstance(row[0], datetime) else _time(row[0])
        if at is None:
            continue
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        points.append((at, int(row[1] or 0), float(row[2]) if len(row) > 2 and row[2] is not None else None))
    step = max(1, len(points) // MAX_POINTS)
    thinned = points[::step] + ([points[-1]] if points and (len(points) - 1) % step else [])
    return thinned, "" if points else "no lag samples for this group in that time"


def trend_svg(points: Sequence[tuple[datetime, float]], title: str, unit: str, limit: float | None = None,
              marks: Sequence[tuple[datetime, str]] = ()) -> str:
    """A line chart of ``points`` (time, value) as inline SVG, with ``limit`` as a dashed line and ``marks``
    (time, label) as vertical lines where they fall in the chart's time span; "" for no points."""
    if not points:
        return ""
    width, height, left, bottom, top = 640, 180, 56, 24, 20
    t0, t1 = points[0][0], points[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    high = max([v for _, v in points] + ([limit] if limit is not None else []) + [1.0]) * 1.1

    def x(at: datetime) -> float:
        return left + (width - left - 8) * (at - t0).total_seconds() / span

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - value / high)

    line = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in points)
    parts = [f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 8}" y2="{y(0):.1f}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0):.1f}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{high:.0f} {unit}</text>',
             f'<text x="{left - 4}" y="{y(0):.1f}" font-size="10" text-anchor="end">0</text>',
             f'<text x="{left}" y="{height - 6}" font-size="10">{t0:%H:%M:%S}</text>',
             f'<text x="{width - 8}" y="{height - 6}" font-size="10" text-anchor="end">{t1:%H:%M:%S} UTC</text>']
    if limit is not None:
        parts.append(f'<line class="objective" x1="{left}" y1="{y(limit):.1f}" x2="{width - 8}" y2="{y(limit):.1f}" '
                     f'stroke="#b00020" stroke-dasharray="6 4"/><text x="{width - 10}" y="{y(limit) - 4:.1f}" '
                     f'font-size="10" text-anchor="end" fill="#b00020">objective {limit:g} {unit}</text>')
    for at, label in marks:
        if t0 <= at <= t1:
            parts.append(f'<line class="mark" x1="{x(at):.1f}" y1="{top}" x2="{x(at):.1f}" y2="{y(0):.1f}" '
                         f'stroke="#555" stroke-dasharray="2 3"/><text x="{x(at) + 3:.1f}" y="{top + 10}" '
                         f'font-size="10" fill="#555">{html.escape(label)}</text>')
    parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{line}"/></svg>')
    return "".join(parts)


def what_to_do(alert: Mapping[str, Any], worker: Worker | None) -> list[str]:
    """Advice for this alert, most likely first."""
    name = worker.name if worker is not None else None
    start = (f"Start its copies: <code>mbyn run</code> starts every worker, <code>mbyn consume {name}</code> one "
             "copy by hand." if name else "Start the application that reads with this group.")
    steps = []
    if not alert["members"]:
        steps.append(f"Nobody reads this group. {start} If a copy keeps exiting, its last error line below says why.")
    else:
        steps.append("Its copies run but fall behind: read the last error lines below (a sink that fails or "
                     "retries slows every batch).")
        if worker is not None:
            steps.append(f"Scale out: <code>mbyn run --scale {html.escape(worker.key)}=N</code> (no more copies "
                         "than the topic has partitions).")
    holds = getattr(worker, "holds", "") if worker is not None else ""
    if holds:
        steps.append(f"This worker holds records by design ({html.escape(holds)}): lag up to that is expected; "
                     "its objective allows for it.")
    steps.append("Check the broker and the warehouse: <code>mbyn status</code>. The lag trend is also in the "
                 "pipeline view.")
    return steps


def _facts(alert: Mapping[str, Any], envelope: Mapping[str, Any]) -> str:
    seconds = alert.get("seconds")
    rows = [("Group", alert["group"]), ("State", alert["state"]), ("Reason", alert["reason"]),
            ("Records behind", alert["lag"]),
            ("Seconds behind", "unknown" if seconds is None else f"{seconds:.0f}"),
            ("Objective", f"{alert['objective_s']:g} s"), ("Raised at", alert["raised_at"]),
            ("This event at", envelope.get("event_time", "")), ("Alert", alert["alert_id"])]
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def render_report(envelope: Mapping[str, Any], settings: Settings, previous: str = "", run_id: str | None = None,
                  now: datetime | None = None) -> str:
    """The HTML report of one lag alert (self-contained: inline SVG, no external assets).

    ``previous``: the report written so far; a cleared alert keeps its "when raised" section.
    """
    alert = envelope["payload"]
    esc = html.escape
    now = now or datetime.now(UTC)
    raised = _time(alert["raised_at"]) or now
    since = max(min(raised - BEFORE_RAISE, now - timedelta(minutes=TREND_MINUTES)), now - MAX_TREND)
    points, note = lag_history(settings, alert["group"], since)
    worker = worker_of(settings, alert["group"])
    marks = [(raised, "raised")] + ([(at, "cleared")] if alert["state"] == "cleared" and
                                    (at := _time(envelope.get("event_time"))) else [])
    charts = trend_svg([(t, float(n)) for t, n, _ in points], "records behind", "rec", marks=marks)
    timed = [(t, s) for t, _, s in points if s is not None]
    charts += trend_svg(timed, "seconds behind", "s", limit=float(alert["objective_s"]), marks=marks)
    members = "".join(f"<li><code>{esc(m)}</code></li>" for m in alert["members"]) or \
        "<li class=muted>no live member</li>"
    copies = "".join(f"<tr><th>{esc(c)}</th><td><code>{esc(line)}</code></td></tr>"
                     for c, line in copies_last_errors(settings, worker)) or \
        "<tr><td class=muted>the group belongs to no registered worker: no logs to show</td></tr>"
    steps = "".join(f"<li>{s}</li>" for s in what_to_do(alert, worker))
    cleared = alert["state"] == "cleared"
    kept = _RAISED.search(previous) if cleared else None
    raised_section = kept.group(0) if kept else \
        f"<!--raised--><h2>When raised</h2>{_facts(alert, envelope)}<!--/raised-->"
    banner = (f'<p class="state cleared">Cleared at {esc(envelope.get("event_time", ""))}: {esc(alert["reason"])}</p>'
              if cleared else f'<p class="state raised">Raised: {esc(alert["reason"])}</p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{_STATE_MARK.format(state=esc(alert["state"]))}
<title>Lag incident {esc(alert['group'])}: {esc(alert['state'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; font-size: .9rem; }}
.state {{ padding: .4rem .8rem; border-radius: .3rem; color: #fff; display: inline-block; }}
.raised {{ background: #b00020; }} .cleared {{ background: #2e7d32; }} .muted {{ color: #777; }}
</style></head><body>
<h1>Lag incident: group {esc(alert['group'])}</h1>
{banner}
{raised_section}
{f"<h2>Now</h2>{_facts(alert, envelope)}" if cleared else ""}
<h2>Lag trend</h2>
{charts or f'<p class=muted>{esc(note)}</p>'}
<h2>Members</h2>
<ul>{members}</ul>
<h2>Last error line of each copy</h2>
<table>{copies}</table>
<h2>What to do</h2>
<ol>{steps}</ol>
<p class=muted>Generated {now.isoformat(timespec="seconds")}{' by DAG run ' + esc(run_id) if run_id else ''}.
A cleared alert rewrites this file.</p>
</body></html>
"""


def write_lag_report(envelope: Mapping[str, Any], settings: Settings | None = None, run_id: str | None = None) -> Path:
    """Write (or rewrite) the report of one lag alert atomically; return its path.

    A raised alert arriving after its report was marked cleared (a redelivery) leaves the report as it is.
    """
    settings = settings or get_settings()
    alert = envelope["payload"]
    path = report_path(settings, str(alert["alert_id"]))
    try:
        previous = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        previous = ""
    if alert["state"] == "raised" and _STATE_MARK.format(state="cleared") in previous:
        log.info("lag incident %s: already cleared, redelivered raise ignored", alert["alert_id"])
        return path
    atomic_write(path, render_report(envelope, settings, previous, run_id))
    log.info("lag incident %s (%s, %s): %s", alert["alert_id"], alert["group"], alert["state"], path)
    return path


def handle_lag_alert_events(events: Iterable[Any], settings: Settings | None = None,
                            run_id: str | None = None) -> list[str]:
    """Write or update one report per lag alert carried by ``events``, oldest first; return the report paths."""
    settings = settings or get_settings()
    paths = [str(write_lag_report(alert, settings, run_id)) for alert in lag_alerts_from_events(events)]
    return list(dict.fromkeys(paths))
