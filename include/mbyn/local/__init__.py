"""Start the pipeline on this laptop: Kafka from Maven, PostgreSQL, Airflow, ``mbyn run`` and its supervisor."""
