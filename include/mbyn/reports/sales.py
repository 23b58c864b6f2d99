"""The daily sales report: one UTC day of the warehouse as an HTML page with PNG charts and CSV extracts.

``build_sales_report(settings, day=None)`` (``mbyn report``, DAG ``sales_report_daily``) writes

    <reports_dir>/sales/<YYYY-MM-DD>/index.html      the page (inline CSS, relative links only)
                                    /*.png           charts: revenue by hour / country / category, funnel, lag
                                    /*.csv           the numbers behind every table and chart
    <reports_dir>/latest.html                        redirects to the newest day's report

and returns the path of ``index.html``. Sections: revenue in EUR by hour, country and category (see
``mbyn.reports.data`` for the FX rule), top products, the funnel sessions → orders → authorized payments
→ delivered shipments, fraud alerts, and pipeline health — consumer lag over the day (``lag_samples``),
dead letters (``quarantine``) and a reconciliation verdict. A day without data still gets a page, which
says "No data for <date>". Building the same day again replaces its folder atomically (``render``);
``latest.html`` points at the newest date present, so rebuilding an old day does not move it back.

The warehouse is read in read-only transactions. The reconciliation verdict is ``mbyn status``'s
(``collect_status``: every record on the raw topics is a warehouse row or a quarantined dead letter),
one line per topic. Two checks about the day are added: its
payments whose order is not in the warehouse, and its dead letters. The broker is optional: when it
does not answer, the verdict says "unknown" and the report is built anyway.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select

from mbyn.errors import BrokerUnavailableError, ReportError
from mbyn.files import atomic_write
from mbyn.reconciliation import BALANCED, LAGGING, NOT_BALANCED, NOT_CHECKED
from mbyn.reports import data as d
from mbyn.reports.render import (
    bar_chart,
    esc,
    line_chart,
    page,
    publish_dir,
    staging_dir,
    table,
)
from mbyn.settings import Settings
from mbyn.status import collect_status
from mbyn.warehouse import sink_errors, warehouse_engine
from mbyn.warehouse.schema import orders

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

log = logging.getLogger("mbyn.reports")

SALES_DIR = "sales"
LATEST = "latest.html"
#: The report's tables, each written as ``<name>.csv``, in page order.
TABLES = {
    "revenue_by_hour": d.revenue_by_hour,
    "revenue_by_country": d.revenue_by_country,
    "revenue_by_category": d.revenue_by_category,
    "top_products": d.top_products,
    "funnel": d.funnel,
    "fraud_alerts": d.fraud_alerts,
    "consumer_lag": d.lag_over_time,
    "dead_letters": d.dead_letters,
}


@dataclass
class Health:
    """The reconciliation verdict and the checks behind it."""

    verdict: str
    level: str  # ok | warn | bad | unknown
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (check, result, level)
    source: str = "mbyn.reports.sales"


def report_dir(reports_root: Path, day: date) -> Path:
    """Where the report of ``day`` lives under ``reports_root`` (normally ``settings.reports_dir``)."""
    return reports_root / SALES_DIR / day.isoformat()


def build_sales_report(settings: Settings, day: date | None = None, out: Path | None = None) -> Path:
    """Build (or rebuild) the report of ``day`` (default: today, UTC); returns the path of its index.html.

    ``out`` replaces ``settings.reports_dir`` as the root of ``sales/<date>/`` and ``latest.html``.
    """
    day = day or datetime.now(UTC).date()
    root = (out or settings.reports_dir).resolve()
    target = report_dir(root, day)
    engine = warehouse_engine(settings, read_only=True)
    try:
        with sink_errors(f"sales report: warehouse {engine.url.render_as_string(hide_password=True)}"):
            day_data = d.load_day(engine, day)
            health = reconcile(settings, engine, day_data)
    finally:
        engine.dispose()
    staging = staging_dir(target)
    try:
        write_report(staging, day_data, health)
        publish_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    point_latest(root)
    log.info("sales report for %s: %s (%d orders)", day, target / "index.html", len(day_data.orders))
    return target / "index.html"


def reporting_day(day: str | date | None, logical_date: datetime | None, run_after: datetime | None) -> date:
    """The day a DAG run reports on: ``day`` when given, else the logical date, else when the run was due.

    Manual runs in Airflow 3 may have no logical date; both datetimes are taken in UTC.
    """
    if isinstance(day, date):
        return day
    if day:
        try:
            return date.fromisoformat(str(day))
        except ValueError:
            raise ReportError(f"day: expected YYYY-MM-DD, got {day!r}") from None
    moment = logical_date or run_after
    if moment is None:
        raise ReportError("no day given and the run has neither a logical date nor a run-after time")
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


def report_files(index: Path) -> dict[str, Any]:
    """Check that a built report has its page and every CSV extract; a summary of what is there.

    Raises ReportError naming what is missing. Charts are listed, not required: a day without
    orders has none.
    """
    folder = index.parent
    missing = [name for name in ("index.html", *(f"{t}.csv" for t in TABLES)) if not (folder / name).is_file()]
    if missing:
        raise ReportError(f"report {folder} is incomplete: {', '.join(missing)} missing")
    return {"index": str(index), "day": folder.name, "csv": sorted(p.name for p in folder.glob("*.csv")),
            "charts": sorted(p.name for p in folder.glob("*.png")),
            "bytes": sum(p.stat().st_size for p in folder.iterdir())}


def point_latest(reports_root: Path) -> Path:
    """(Re)write ``<reports_root>/latest.html`` to redirect to the newest dated report folder."""
    folders = sorted(p.name for p in (reports_root / SALES_DIR).iterdir()
                     if p.is_dir() and not p.name.startswith(".") and _is_date(p.name))
    newest = folders[-1]
    href = f"{SALES_DIR}/{newest}/index.html"
    body = (f"<p>The newest sales report is <a href='{href}'>{newest}</a>.</p>")
    html = page(f"mbyn sales report {newest}", body).replace(
        "<title>", f"<meta http-equiv='refresh' content='0; url={href}'><title>", 1)
    atomic_write(reports_root / LATEST, html)
    return reports_root / LATEST


def _is_date(name: str) -> bool:
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return True


# Reconciliation --------------------------------------------------------------------------------------

def reconcile(settings: Settings, engine: Engine, day_data: d.DayData) -> Health:
    """The pipeline-health verdict (see the module docstring) plus two checks about the day itself."""
    try:
        health = _from_status(collect_status(settings))
    except BrokerUnavailableError as exc:
        log.warning("sales report: %s; reconciliation limited to the warehouse", exc)
        health = Health("unknown: the broker did not answer", "unknown",
                        [("reconciliation (mbyn status)", str(exc), "unknown")])
    orphans = _orphan_payments(engine, day_data)
    health.checks.append(("payments of the day whose order is not in the warehouse", f"{orphans:,}",
                          "ok" if orphans == 0 else "warn"))
    dead = len(day_data.dead_letters)
    health.checks.append(("dead letters quarantined this day", f"{dead:,}", "ok" if dead == 0 else "warn"))
    return health


def _from_status(status: dict[str, Any]) -> Health:
    """``mbyn.status.collect_status`` output → verdict plus one check per reconciled topic.

    ``lagging`` (records not loaded yet) is a warning, ``not checked`` (rows not compared) unknown — only
    ``not balanced`` is bad.
    """
    levels = {BALANCED: "ok", LAGGING: "warn", NOT_CHECKED: "warn", NOT_BALANCED: "bad"}
    checks: list[tuple[str, str, str]] = []
    for name, rec in sorted(status["reconciliation"]["topics"].items()):
        rows = "?" if rec.get("rows") is None else f"{rec['rows']:,}"
        expected = "?" if rec.get("expected_rows") is None else f"{rec['expected_rows']:,}"
        checks.append((f"{name}: rows / expected rows, pending, quarantined",
                       f"{rows} / {expected}, {rec.get('pending', 0):,}, {rec.get('quarantined') or 0:,}",
                       levels.get(str(rec.get("verdict")), "ok" if rec.get("balanced") else "warn")))
    verdict = str(status["verdict"])
    level = levels.get(verdict, "bad")
    checks += [("problem", p, level) for p in status.get("problems", [])]
    return Health(verdict, level, checks, source="mbyn status (collect_status)")


def _orphan_payments(engine: Engine, day_data: d.DayData) -> int:
    if day_data.payments.empty:
        return 0
    wanted = set(day_data.payments["order_id"])
    if not inspect(engine).has_table("orders"):
        return len(day_data.payments)
    known: set[str] = set()
    ids = sorted(wanted)
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):  # bounded IN lists
            known.update(conn.execute(select(orders.c.order_id).where(orders.c.order_id.in_(ids[i:i + 500])))
                         .scalars())
    return int((~day_data.payments["order_id"].isin(known)).sum())


# Writing ---------------------------------------------------------------------------------------------

def write_report(folder: Path, day_data: d.DayData, health: Health) -> list[Path]:
    """Write index.html, the CSV extracts and the charts of ``day_data`` into ``folder``; returns the files."""
    tables = {name: summarize(day_data) for name, summarize in TABLES.items()}
    files = [_csv(folder / f"{name}.csv", frame) for name, frame in tables.items()]
    charts = _charts(folder, day_data, tables)
    files += charts.values()
    files.append(folder / "index.html")
    (folder / "index.html").write_text(_html(day_data, health, tables, charts), encoding="utf-8")
    return files


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    out = frame.copy()
    for column in out.columns:
        if column.endswith("_eur"):
            out[column] = out[column].astype(float).round(2)
        if column == "sampled_at" and not out.empty:
            out[column] = out[column].map(lambda t: t.isoformat())
    out.to_csv(path, index=False)
    return path


def _charts(folder: Path, day_data: d.DayData, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    charts: dict[str, Path] = {}
    if not day_data.orders.empty:
        hours = tables["revenue_by_hour"]
        charts["revenue_by_hour"] = bar_chart(folder / "revenue_by_hour.png", [f"{h:02d}" for h in hours["hour"]],
                                              hours["revenue_eur"], "Revenue by hour (UTC)", "EUR")
        countries = tables["revenue_by_country"]
        charts["revenue_by_country"] = bar_chart(folder / "revenue_by_country.png", countries["country"],
                                                 countries["revenue_eur"], "Revenue by country", "EUR")
    if not day_data.items.empty:
        cats = tables["revenue_by_category"]
        charts["revenue_by_category"] = bar_chart(folder / "revenue_by_category.png", cats["category"],
                                                  cats["revenue_eur"], "Revenue by category", "EUR",
                                                  horizontal=True)
    if not day_data.is_empty:
        steps = tables["funnel"]
        charts["funnel"] = bar_chart(folder / "funnel.png", steps["stage"], steps["events"], "Funnel", "count",
                                     horizontal=True)
    lag = tables["consumer_lag"]
    if not lag.empty:
        series = {str(g): (part["sampled_at"].dt.tz_localize(None), part["lag"].astype(float))
                  for g, part in lag.groupby("consumer_group")}
        charts["consumer_lag"] = line_chart(folder / "consumer_lag.png", series, "Consumer lag (records, UTC)",
                                            "records behind")
    return charts


def _img(charts: dict[str, Path], name: str, alt: str) -> str:
    return f"<p><img src='{charts[name].name}' alt='{esc(alt)}'></p>" if name in charts else ""


def _csv_link(name: str) -> str:
    return f"<p class='meta'>CSV: <a href='{name}.csv'>{name}.csv</a></p>"


def _html(day_data: d.DayData, health: Health, tables: dict[str, pd.DataFrame], charts: dict[str, Path]) -> str:
    day = day_data.day.isoformat()
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [f"<h1>Sales report {esc(day)}</h1>",
             f"<p class='meta'>UTC day {esc(day)} · generated {generated} · all money in EUR</p>"]
    if day_data.is_empty:
        parts.append(f"<p class='empty'>No data for {esc(day)}: the warehouse has no orders, clicks, payments, "
                     "shipments or alerts with an event time on this day.</p>")
        if day_data.missing_tables:
            parts.append(f"<p class='meta'>Tables not created yet: {esc(', '.join(day_data.missing_tables))}.</p>")
    else:
        parts += _sales_sections(day_data, tables, charts)
    parts += _health_section(health, tables, charts)
    return page(f"Sales report {day}", "\n".join(parts))


def _sales_sections(day_data: d.DayData, tables: dict[str, pd.DataFrame], charts: dict[str, Path]) -> list[str]:
    orders = day_data.orders
    revenue = float(orders["amount_eur"].sum()) if not orders.empty else 0.0
    kpis = [("revenue", f"€{revenue:,.2f}"), ("orders", f"{len(orders):,}"),
            ("average basket", f"€{revenue / len(orders):,.2f}" if len(orders) else "–"),
            ("sessions", f"{day_data.clicks['session_id'].nunique() if not day_data.clicks.empty else 0:,}"),
            ("fraud alerts", f"{len(day_data.alerts):,}")]
    parts = ["<div class='kpis'>" + "".join(f"<div class='kpi'>{esc(k)}<b>{esc(v)}</b></div>" for k, v in kpis)
             + "</div>"]
    reference = orders[orders["fx_source"] == "reference"] if not orders.empty else orders
    if len(reference):
        currencies = ", ".join(sorted(reference["currency"].unique()))
        parts.append(f"<p class='note'>{len(reference):,} order(s) in {esc(currencies)} were converted with the "
                     "shop's reference rates: no ECB rate for that currency is in the warehouse (fx-rates).</p>")
    hours = tables["revenue_by_hour"]
    parts += ["<h2>Revenue by hour</h2>", _img(charts, "revenue_by_hour", "revenue by hour"),
              table(hours[hours["orders"] > 0], money=["revenue_eur"]), _csv_link("revenue_by_hour"),
              "<h2>Revenue by country</h2>", _img(charts, "revenue_by_country", "revenue by country"),
              table(tables["revenue_by_country"], money=["revenue_eur", "avg_basket_eur"]),
              _csv_link("revenue_by_country"),
              "<h2>Revenue by category</h2>", _img(charts, "revenue_by_category", "revenue by category"),
              table(tables["revenue_by_category"], money=["revenue_eur"]), _csv_link("revenue_by_category"),
              "<h2>Top products</h2>", table(tables["top_products"], money=["revenue_eur"]),
              _csv_link("top_products"),
              "<h2>Funnel</h2>",
              "<p class='meta'>Each stage counts the day's own events: sessions with a click, orders placed, "
              "payments authorized, shipments delivered.</p>",
              _img(charts, "funnel", "funnel"), table(tables["funnel"], ratio=["of_previous"]), _csv_link("funnel"),
              "<h2>Fraud alerts</h2>", table(tables["fraud_alerts"]), _csv_link("fraud_alerts")]
    if not day_data.alerts.empty:
        latest = day_data.alerts.tail(20)[["event_time", "kind", "severity", "customer_id", "order_id", "details"]]
        parts += ["<p class='meta'>Latest alerts:</p>", table(latest)]
    return parts


def _health_section(health: Health, tables: dict[str, pd.DataFrame], charts: dict[str, Path]) -> list[str]:
    lag = tables["consumer_lag"]
    parts = ["<h2>Pipeline health</h2>",
             f"<p>Reconciliation: <span class='{esc(health.level)}'>{esc(health.verdict)}</span> "
             f"<span class='meta'>({esc(health.source)})</span></p>",
             "<table><tr><th>check</th><th>result</th></tr>"
             + "".join(f"<tr><td>{esc(c)}</td><td class='{esc(lv)}'>{esc(r)}</td></tr>" for c, r, lv in health.checks)
             + "</table>",
             "<h3>Consumer lag</h3>"]
    if lag.empty:
        parts.append("<p class='meta'>No lag samples on this day.</p>")
    else:
        summary = (lag.groupby("consumer_group")["lag"].agg(samples="count", max_lag="max", last_lag="last")
                   .reset_index())
        parts += [_img(charts, "consumer_lag", "consumer lag"), table(summary)]
    parts += [_csv_link("consumer_lag"), "<h3>Dead letters</h3>", table(tables["dead_letters"]),
              _csv_link("dead_letters")]
    return parts
