"""
### Shipments, hourly batch load

Reads what arrived on the **shipments** topic since the previous run with the Kafka provider's
`ConsumeFromTopicOperator` and upserts it into the warehouse table `shipments` (key: `event_id`).

How the operator is used, and why:

* connection `kafka_default` has `enable.auto.commit: false` — otherwise librdkafka commits every
  5 s whatever `commit_cadence` says;
* `commit_cadence="end_of_batch"`: offsets are committed after each batch has been written, so a
  failed run resumes from the last written batch (replays are no-ops thanks to the `event_id` key);
* `max_batch_size` (1 000) ≤ `max_messages` (200 000) — the operator would silently raise
  `max_messages` otherwise; a run stops at `max_messages` and the next run continues;
* a short `poll_timeout` (5 s): every run ends with one empty poll of that length.

No record can fail the task: one the codec refuses (not JSON, schema violation, null key …) or whose row the
warehouse refuses goes to **dead-letters** with the same `dlq.*` headers as every streaming consumer (reason,
error, original topic / partition / offset, this connection's group), so it is quarantined and
`mbyn dlq replay` can return it. An outage (warehouse or broker down) fails the task before the commit:
the retry re-reads the batch.
Code: `mbyn.orchestration.shipments_load.load_shipment_batch`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.apache.kafka.operators.consume import ConsumeFromTopicOperator
from airflow.sdk import dag

from mbyn.orchestration.connections import KAFKA_CONN_ID
from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 2, "retry_delay": timedelta(minutes=5)}


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "consumer", "shipments", "warehouse"],
    doc_md=__doc__,
)
def shipments_hourly_load() -> None:
    ConsumeFromTopicOperator(
        task_id="load_shipments",
        kafka_config_id=KAFKA_CONN_ID,
        topics=[get_settings().topic_prefix + "shipments"],
        apply_function_batch="mbyn.orchestration.shipments_load.load_shipment_batch",
        apply_function_kwargs={"kafka_config_id": KAFKA_CONN_ID},  # its group.id goes into the dead letters
        commit_cadence="end_of_batch",
        max_messages=200_000,
        max_batch_size=1_000,
        poll_timeout=5,
    )


shipments_hourly_load()
