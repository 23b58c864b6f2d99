"""The Airflow connections to Kafka, derived from the mbyn settings (one place, one name per idea).

Each consumer use gets its own connection id and therefore its own consumer group, so that an hourly
batch load joining its group never rebalances the always-on alert watcher:

* ``kafka_default`` — batch loads (``ConsumeFromTopicOperator``), group ``<prefix>mbyn-airflow-batch``.
* ``kafka_incidents`` — the incident DAG's asset watcher, group ``<prefix>mbyn-incident-watcher``.
* ``kafka_lag_alerts`` — the lag incident DAG's asset watcher, group ``<prefix>mbyn-lag-alert-watcher``.

Both disable auto-commit: the operator then commits exactly at ``commit_cadence`` and the shared-stream
trigger refuses to start otherwise. ``auto.offset.reset=earliest`` makes a brand-new group start at
the beginning of the topic, so an alert written before the watcher first subscribed is not skipped.
Group ids carry the topic prefix, so isolated environments (tests) never share offsets.
"""

from __future__ import annotations

import json
from typing import Any

from mbyn.errors import ConfigError
from mbyn.kafka.clients import client_config
from mbyn.kafka.security import AIRFLOW_BATCH_GROUP, AIRFLOW_INCIDENT_GROUP, AIRFLOW_LAG_ALERT_GROUP
from mbyn.settings import Settings

#: Connection id of batch consumers and of producers run by Airflow.
KAFKA_CONN_ID = "kafka_default"
#: Connection id of the incident DAG's asset watcher.
INCIDENTS_CONN_ID = "kafka_incidents"
#: Connection id of the lag incident DAG's asset watcher.
LAG_ALERTS_CONN_ID = "kafka_lag_alerts"

_GROUPS = {KAFKA_CONN_ID: AIRFLOW_BATCH_GROUP, INCIDENTS_CONN_ID: AIRFLOW_INCIDENT_GROUP,
           LAG_ALERTS_CONN_ID: AIRFLOW_LAG_ALERT_GROUP}


def kafka_extra(settings: Settings, conn_id: str = KAFKA_CONN_ID) -> dict[str, Any]:
    """The librdkafka configuration (the connection's ``extra``) for ``conn_id``."""
    try:
        group = _GROUPS[conn_id]
    except KeyError:
        raise ValueError(f"unknown Kafka connection id {conn_id!r}; known: {', '.join(_GROUPS)}") from None
    return {
        **client_config(settings),  # secured mode: SASL/SCRAM with the settings' user (Airflow's own principal)
        "group.id": settings.topic_prefix + group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }


def connection_env(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` environment variables defining every mbyn Kafka connection."""
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "kafka", "extra": kafka_extra(settings, conn_id)})
        for conn_id in _GROUPS
    }


def connection_group_id(conn_id: str = KAFKA_CONN_ID) -> str:
    """The ``group.id`` of the Airflow connection ``conn_id`` — the group a task consuming with it belongs to.

    Read from the connection Airflow actually uses (environment variable, secrets backend or metadata
    database), not derived from the settings, so it names the group that committed the offsets.
    """
    from airflow.sdk import BaseHook  # noqa: PLC0415 - in Airflow only (1 s); every CLI command imports this module

    group = BaseHook.get_connection(conn_id).extra_dejson.get("group.id")
    if not isinstance(group, str) or not group:
        raise ConfigError(f"the Airflow connection {conn_id!r} has no group.id in its extra; "
                          "define it with `mbyn airflow env` (mbyn.orchestration.connections.connection_env)")
    return group
