"""
### FX rates, hourly

Polls the ECB reference rates and publishes one `fx_rate` event per currency to the compacted
**fx-rates** topic (key: currency). The producer keeps its own watermark, so an hour with no new
ECB publication sends nothing; a retry re-sends the same deterministic event ids (a no-op downstream).

Code: `mbyn.sources.fx_rates.publish_fx_rates`. Run by hand: `mbyn produce fx-rates`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(minutes=2)}


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "producer", "fx-rates"],
    doc_md=__doc__,
)
def fx_rates_hourly() -> None:
    @task
    def publish_fx_rates() -> dict:
        """Fetch the ECB rates and publish the new ones."""
        from mbyn.sources.fx_rates import publish_fx_rates

        return publish_fx_rates()

    publish_fx_rates()


fx_rates_hourly()
