"""The M×N pipeline view shown inside the Airflow UI: producers → topics → consumer groups, live.

* ``data`` — what the view shows (graph, rates, lag history, topic browser, reports) as JSON-ready dicts;
* ``app`` — the FastAPI app (login required) serving that data and the static page in ``static/``;
* ``plugins/mbyn_pipeline_view.py`` — only the AirflowPlugin that mounts ``app`` at ``/mbyn`` and adds
  the "Pipeline" entry to the UI's navigation.

Importing this package imports nothing heavy; ``mbyn.pipeline_view.app`` imports FastAPI and Airflow.
"""
