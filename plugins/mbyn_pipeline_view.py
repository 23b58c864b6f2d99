"""The mbyn pipeline view in the Airflow UI: the app of ``mbyn.pipeline_view`` at ``/mbyn``, a "Pipeline" nav entry.

The page is served by the plugin's FastAPI app (login required) and shown by the UI in an iframe at
``/plugin/mbyn-pipeline``. All logic lives in ``mbyn.pipeline_view``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from mbyn.pipeline_view.app import app


class MbynPipelineViewPlugin(AirflowPlugin):
    """Mounts the pipeline view (``/mbyn/``) and links it from the UI's Browse menu."""

    name = "mbyn_pipeline_view"
    # Plain (not ClassVar) attributes: that is how AirflowPlugin declares them.
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012
        {"app": app, "url_prefix": "/mbyn", "name": "mbyn pipeline"}]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {"name": "Pipeline", "href": "/mbyn/", "url_route": "mbyn-pipeline", "category": "browse",
         "destination": "nav"}]
