"""Everything Airflow needs from mbyn that is not a producer or a consumer.

* ``connections`` — the Kafka connections DAGs use (one id per consumer group), built from the settings.
* ``triggers`` — the alert-stream trigger behind the incident DAG's asset watcher.
* ``incidents`` — turns fraud alerts into HTML incident reports (one file per alert, idempotent).
* ``shipments_load`` — the batch function the hourly shipments load applies to each Kafka batch.

The local ``airflow standalone`` (`mbyn airflow ...`) is started by ``mbyn.local.airflow``.

DAG files import from here inside their tasks, so parsing a DAG never pulls in pandas or SQLAlchemy.
"""
