"""
### Fraud incident report (event-driven)

Starts whenever a fraud alert lands on the **alerts** topic — no schedule, no polling task. The asset
`alerts` has an `AssetWatcher` whose `AlertStreamTrigger` (the provider's `KafkaSharedStreamTrigger`
with a filter) runs in the triggerer: one shared consumer, offsets committed only after the asset
event is stored (at-least-once). A record the codec refuses never starts a run: the filter skips and
logs it (the warehouse-loader, which reads `alerts` too, quarantines it with its reason).

Each run writes one HTML report per alert to `var/reports/incidents/<alert_id>.html`: what happened,
the order and payment involved, recent orders of the customer (from the warehouse when it has them).
All alerts that arrived since the previous run land in one run, and every one of them is handled;
a redelivered alert rewrites the same file (idempotent).

Needs a running triggerer (`mbyn airflow up`); `dag.test()` cannot run the watcher.
Code: `mbyn.orchestration.triggers`, `mbyn.orchestration.incidents`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetWatcher, dag, task

from mbyn.orchestration.connections import INCIDENTS_CONN_ID
from mbyn.orchestration.triggers import AlertStreamTrigger
from mbyn.settings import get_settings

_settings = get_settings()
ALERTS_TOPIC = _settings.topic_prefix + "alerts"
ALERTS = Asset(
    name=ALERTS_TOPIC,
    uri=f"kafka://{_settings.bootstrap().split(',')[0]}/{ALERTS_TOPIC}",
    watchers=[
        AssetWatcher(
            name="fraud_alerts_watcher",
            # No dlq_topic: its copies would lack the dlq.* headers (see mbyn.orchestration.triggers).
            trigger=AlertStreamTrigger(topics=[ALERTS_TOPIC], kafka_config_id=INCIDENTS_CONN_ID, poll_timeout=1.0),
        )
    ],
)

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    schedule=[ALERTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "incident", "alerts", "event-driven"],
    doc_md=__doc__,
)
def fraud_incident_report() -> None:
    @task
    def write_incident_reports(**context) -> list[str]:
        """One report per alert carried by this run's asset events."""
        from mbyn.orchestration.incidents import handle_alert_events

        events = context["triggering_asset_events"][ALERTS]
        return handle_alert_events(events, run_id=context["run_id"])

    write_incident_reports()


fraud_incident_report()
