"""
### Daily sales report

Builds the sales report of one UTC day from the warehouse: revenue in EUR by hour, country and
category, top products, the funnel sessions → orders → authorized payments → delivered shipments,
fraud alerts, and pipeline health (consumer lag, dead letters, the `mbyn status` reconciliation).

Output: `var/reports/sales/<date>/index.html` with PNG charts and CSV extracts beside it, and
`var/reports/latest.html` pointing at the newest day. A day without data gets a "No data" page.

Schedule: once a day, after the day is over. The schedule has data intervals (midnight to midnight,
UTC), so a run's **logical date is the day it reports on** — the run for 2026-11-25 starts at
2026-11-26 00:00 UTC. A manual run reports its logical date, or the `day` param when given.
Rebuilding a day replaces its folder atomically, so retries and re-runs are safe.

Code: `mbyn.reports.sales.build_sales_report`. By hand: `mbyn report --date 2026-11-25`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(minutes=5)}


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "report", "warehouse", "daily"],
    doc_md=__doc__,
    params={
        "day": Param(None, type=["null", "string"], format="date",
                     description="UTC day YYYY-MM-DD to report on; empty = the run's logical date"),
    },
)
def sales_report_daily() -> None:
    @task
    def build_report(params: dict | None = None, **context) -> dict:
        """Build the report of the day and check that its files are there."""
        from mbyn.reports.sales import build_sales_report, report_files, reporting_day

        day = reporting_day((params or {}).get("day"), context.get("logical_date"), context["dag_run"].run_after)
        index = build_sales_report(get_settings(), day)
        return report_files(index)

    build_report()


sales_report_daily()
