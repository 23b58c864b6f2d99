"""
### Lag incident report (event-driven)

Starts whenever the lag-monitor raises or clears a lag alert on the **ops-alerts** topic — no schedule, no
polling task. A lag alert is raised when a consumer group stays over its lag objective (declared per worker
in `mbyn.workers`, e.g. warehouse-loader 30 s) or has no live member while records wait, and cleared when
it is back under it — once per transition. The asset `ops-alerts` has an `AssetWatcher` whose
`LagAlertStreamTrigger` (the provider's `KafkaSharedStreamTrigger` with a filter) runs in the triggerer:
offsets committed only after the asset event is stored (at-least-once); a record the codec refuses never
starts a run.

Each run writes one HTML report per alert to `var/reports/lag-incidents/<alert_id>.html`: the group, how
far behind (records, seconds) against its objective, the lag trend chart (from `lag_samples`), the live
members, the last error line of each copy of the worker (from `mbyn run`'s logs) and what to do. A
cleared alert marks the same report cleared. Every alert of the run is handled, oldest first; a
redelivered alert rewrites the same file (idempotent).

Needs a running triggerer (`mbyn airflow up`); `dag.test()` cannot run the watcher.
Code: `mbyn.consumers.lag_objectives` (the rule), `mbyn.orchestration.triggers`, `mbyn.orchestration.lag_alerts`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetWatcher, dag, task

from mbyn.orchestration.connections import LAG_ALERTS_CONN_ID
from mbyn.orchestration.triggers import LagAlertStreamTrigger
from mbyn.settings import get_settings

_settings = get_settings()
OPS_ALERTS_TOPIC = _settings.topic_prefix + "ops-alerts"
OPS_ALERTS = Asset(
    name=OPS_ALERTS_TOPIC,
    uri=f"kafka://{_settings.bootstrap().split(',')[0]}/{OPS_ALERTS_TOPIC}",
    watchers=[
        AssetWatcher(
            name="lag_alerts_watcher",
            trigger=LagAlertStreamTrigger(topics=[OPS_ALERTS_TOPIC], kafka_config_id=LAG_ALERTS_CONN_ID,
                                          poll_timeout=1.0),
        )
    ],
)

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    schedule=[OPS_ALERTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "incident", "lag", "event-driven"],
    doc_md=__doc__,
)
def lag_incident_report() -> None:
    @task
    def write_lag_incident_reports(**context) -> list[str]:
        """One report per lag alert carried by this run's asset events (a cleared one updates its report)."""
        from mbyn.orchestration.lag_alerts import handle_lag_alert_events

        events = context["triggering_asset_events"][OPS_ALERTS]
        return handle_lag_alert_events(events, run_id=context["run_id"])

    write_lag_incident_reports()


lag_incident_report()
