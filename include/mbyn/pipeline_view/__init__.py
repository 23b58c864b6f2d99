"""The M×N pipeline view shown inside the Airflow UI: producers → topics → consumer groups, live.

* ``data`` — what the view shows (graph, rates, lag history, quarantine, reports) as JSON-ready dicts;
* ``browse`` — the topic browser: latest records, from an offset or from a time; export;
* ``actions`` — the action routes (re-send, test message, rewind), each an Airflow DAG run allowed by Airflow's
  auth manager;
* ``app`` — the FastAPI app (login required) serving all of it and the static page in ``static/``;
* ``plugins/mbyn_pipeline_view.py`` — only the AirflowPlugin that mounts ``app`` at ``/mbyn`` and adds
  the "Pipeline" entry to the UI's navigation.

Importing this package imports nothing heavy; ``mbyn.pipeline_view.app`` imports FastAPI and Airflow.
"""
