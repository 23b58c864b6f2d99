"""
### Customers snapshot, every 5 minutes

Reads customers changed since the last watermark from the shop's database and publishes them to the
compacted **customers** topic (key: customer_id): the topic converges to the current customer table.
The watermark only advances after the broker acknowledged the batch, so a failed run re-sends rather
than loses.

Code: `mbyn.sources.customers_db.publish_customer_changes`. Run by hand: `mbyn produce customers`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(minutes=1)}


@dag(
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "producer", "customers"],
    doc_md=__doc__,
)
def customers_snapshot() -> None:
    @task
    def publish_customer_changes() -> dict:
        """Publish customers changed since the previous run."""
        from mbyn.sources.customers_db import publish_customer_changes

        return publish_customer_changes()

    publish_customer_changes()


customers_snapshot()
