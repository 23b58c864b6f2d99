"""The pipeline view's FastAPI app, mounted by ``plugins/mbyn_pipeline_view.py`` at ``/mbyn`` in Airflow's API server.

Every route — the page, its assets, the JSON API and the report files — requires an Airflow login: the app
declares ``requires_access_view(AccessView.PLUGINS)`` as an app-wide dependency (a plugin app gets no
authentication otherwise). A bearer token or the UI's session cookie is accepted, so the page works inside
the Airflow UI's iframe. Without either, every route answers 401.

Routes (relative to the mount point):

* ``/`` — the page (static HTML + JS + CSS from ``static/``, no build step, nothing from a CDN);
* ``/api/graph``, ``/api/groups?minutes=``, ``/api/status?scan_limit=`` (``mbyn.status.collect_status``,
  cached ``STATUS_TTL_S``; ``verdict`` is balanced | lagging | not balanced | not checked), ``/api/workers``
  (``mbyn run``'s copies, restarts, crash-looping), ``/api/topics/{name}``,
  ``/api/topics/{name}/messages?limit=&key=&header=k:v``, ``/api/topics/{name}/export?format=json|csv``,
  ``/api/reports``;
* ``/reports/{path}`` — a file under ``settings.reports_dir``.

Handlers are plain functions: FastAPI runs them in its thread pool, so broker and database reads do not
block the API server's event loop. A missing broker answers 503, an unknown topic 404.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response

from mbyn.errors import BrokerUnavailableError, CatalogError
from mbyn.pipeline_view import data
from mbyn.settings import Settings, get_settings
from mbyn.status import collect_status

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
STATUS_TTL_S = 10.0
STATUS_SCAN_LIMIT = 50_000


def login_required() -> Callable[..., None]:
    """Airflow's dependency: the caller must be logged in and allowed to see plugin views."""
    return requires_access_view(AccessView.PLUGINS)


def create_app(settings_factory: Callable[[], Settings] = get_settings) -> FastAPI:
    """A new app; ``app.state.login_required`` is the auth dependency (tests may override it)."""
    require = login_required()
    app = FastAPI(title="mbyn pipeline view", dependencies=[Depends(require)], docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.login_required = require
    sampler = data.Sampler()
    status_cache: dict[str, Any] = {}
    status_lock = threading.Lock()

    def settings() -> Settings:
        return settings_factory()

    def broker(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except BrokerUnavailableError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        except CatalogError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = STATIC_DIR / name
        if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no asset {name!r}")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix])

    @app.get("/api/graph")
    def graph() -> dict[str, Any]:
        return broker(lambda: data.graph(settings(), sampler))  # type: ignore[no-any-return]

    @app.get("/api/groups")
    def groups(minutes: float = Query(10.0, gt=0, le=24 * 60)) -> dict[str, Any]:
        return broker(lambda: data.groups_view(settings(), sampler, minutes))  # type: ignore[no-any-return]

    @app.get("/api/workers")
    def workers() -> dict[str, Any]:
        return data.workers(settings())

    @app.get("/api/status")
    def status(scan_limit: int = Query(STATUS_SCAN_LIMIT, ge=0)) -> dict[str, Any]:
        with status_lock:  # one reconciliation at a time; concurrent callers share its result
            cached = status_cache.get(str(scan_limit))
            if cached is not None and time.monotonic() - cached[0] < STATUS_TTL_S:
                return cached[1]  # type: ignore[no-any-return]
            result = broker(lambda: collect_status(settings(), scan_limit=scan_limit, timeout_s=30))
            status_cache[str(scan_limit)] = (time.monotonic(), result)
            return result  # type: ignore[no-any-return]

    @app.get("/api/topics/{name}")
    def topic(name: str) -> dict[str, Any]:
        return broker(lambda: data.topic_detail(settings(), name))  # type: ignore[no-any-return]

    @app.get("/api/topics/{name}/messages")
    def topic_messages(name: str, limit: int = Query(50, ge=1, le=data.MAX_LIMIT), key: str | None = None,
                       header: str | None = None) -> dict[str, Any]:
        return broker(lambda: data.messages(settings(), name, limit=limit, key=key or None,  # type: ignore[no-any-return]
                                            header=header or None))

    @app.get("/api/topics/{name}/export")
    def topic_export(name: str, format: str = Query("json", pattern="^(json|csv)$"),
                     limit: int = Query(1000, ge=1, le=data.MAX_LIMIT), key: str | None = None,
                     header: str | None = None) -> Response:
        body, media = broker(lambda: data.export(settings(), name, format, limit=limit, key=key or None,
                                                 header=header or None))
        filename = f"{name}.{format}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/api/reports")
    def reports() -> dict[str, Any]:
        return data.reports(settings())

    @app.get("/reports/{path:path}", include_in_schema=False)
    def report(path: str) -> FileResponse:
        found = data.report_file(settings(), path)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no report {path!r}")
        return FileResponse(found)

    return app


#: The app the Airflow plugin mounts.
app = create_app()
