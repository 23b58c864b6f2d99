"""The pipeline view's FastAPI app, mounted by ``plugins/mbyn_pipeline_view.py`` at ``/mbyn`` in Airflow's API server.

Every route — the page, its assets, the JSON API and the report files — requires an Airflow login: the app
declares ``requires_access_view(AccessView.PLUGINS)`` as an app-wide dependency (a plugin app gets no
authentication otherwise). A bearer token or the UI's session cookie is accepted, so the page works inside
the Airflow UI's iframe. Without either, every route answers 401.

Routes (relative to the mount point):

* ``/`` — the page (static HTML + JS + CSS from ``static/``, no build step, nothing from a CDN);
* ``/api/graph``, ``/api/groups?minutes=``, ``/api/lag?minutes=`` (``mbyn.pipeline_view.lag``: per group ok |
  lagging | held | stuck, records and seconds behind and their trend),
  ``/api/status?scan_limit=`` (``mbyn.status.collect_status``,
  cached ``STATUS_TTL_S``; ``verdict`` is balanced | lagging | not balanced | not checked), ``/api/workers``
  (``mbyn run``'s copies, restarts, crash-looping), ``/api/topics/{name}``,
  ``/api/topics/{name}/messages?limit=&key=&header=k:v&partition=&offset=&since=`` (``mbyn.pipeline_view.browse``:
  latest, from an offset, from a time), ``/api/topics/{name}/export?format=json|csv&…`` (the same choice; 403
  when the setting ``MBYN_VIEW_EXPORT=false`` switches export off), ``/api/quarantine?limit=&topic=``,
  ``/api/reports``;
* the actions (``mbyn.pipeline_view.actions``): ``/api/features`` and ``POST /api/actions/…``, each an Airflow
  DAG run, guarded by Airflow's own ``requires_access_dag`` for that DAG (not by the app-wide check alone);
* ``/reports/{path}`` — a file under ``settings.reports_dir``.

Handlers are plain functions: FastAPI runs them in its thread pool, so broker and database reads do not
block the API server's event loop. A missing broker answers 503, an unknown topic 404, a query parameter the
topic cannot answer (a partition it does not have, an unreadable time) 422 naming the parameter.
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
from sqlalchemy.exc import SQLAlchemyError

from mbyn.errors import BrokerUnavailableError, CatalogError, ConfigError
from mbyn.kafka.security import viewer_settings
from mbyn.pipeline_view import browse, data, lag
from mbyn.pipeline_view.actions import build_router
from mbyn.pipeline_view.browse import BrowseQueryError
from mbyn.settings import Settings
from mbyn.status import collect_status

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
STATUS_TTL_S = 10.0
STATUS_SCAN_LIMIT = 50_000


def login_required() -> Callable[..., None]:
    """Airflow's dependency: the caller must be logged in and allowed to see plugin views."""
    return requires_access_view(AccessView.PLUGINS)


def create_app(settings_factory: Callable[[], Settings] = viewer_settings) -> FastAPI:
    """A new app; ``app.state.login_required`` is the auth dependency (tests may override it)."""
    require = login_required()
    app = FastAPI(title="mbyn pipeline view", dependencies=[Depends(require)], docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.login_required = require
    sampler = data.Sampler()
    status_cache: dict[str, Any] = {}
    status_lock = threading.Lock()

    def settings() -> Settings:
        try:
            return settings_factory()
        except ConfigError as exc:  # e.g. the secured mode without the viewer's password: say which setting
            raise HTTPException(status_code=503, detail=str(exc)) from None

    def broker(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except BrokerUnavailableError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        except CatalogError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except BrowseQueryError as exc:
            raise HTTPException(status_code=422, detail=[{"loc": ["query", exc.param], "msg": str(exc),
                                                         "type": "value_error"}]) from None

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

    @app.get("/api/lag")
    def lag_trend(minutes: float = Query(10.0, gt=0, le=lag.MAX_MINUTES)) -> dict[str, Any]:
        """Per group: ok | lagging | held | stuck, records and seconds behind, the trend (``lag.lag_view``)."""
        return broker(lambda: lag.lag_view(settings(), minutes))  # type: ignore[no-any-return]

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

    def where(partition: int | None = Query(None, ge=0, le=1_000_000),
              offset: int | None = Query(None, ge=0, le=browse.MAX_OFFSET),
              since: str | None = Query(None, max_length=64)) -> dict[str, Any]:
        """Where to start reading: ``partition`` (+ ``offset``) or ``since``; empty values mean "not given"."""
        return {"partition": partition, "offset": offset, "since": since or None}

    start_from = Depends(where)  # FastAPI's dependency marker, shared by the two browsing routes

    @app.get("/api/topics/{name}/messages")
    def topic_messages(name: str, limit: int = Query(50, ge=1, le=browse.MAX_LIMIT), key: str | None = None,
                       header: str | None = None, start: dict[str, Any] = start_from) -> dict[str, Any]:
        return broker(lambda: browse.messages(settings(), name, limit=limit,  # type: ignore[no-any-return]
                                              key=key or None, header=header or None, **start))

    @app.get("/api/topics/{name}/export")
    def topic_export(name: str, format: str = Query("json", pattern="^(json|csv)$"),
                     limit: int = Query(1000, ge=1, le=browse.MAX_LIMIT), key: str | None = None,
                     header: str | None = None, start: dict[str, Any] = start_from) -> Response:
        if not settings().view_export:
            raise HTTPException(status_code=403, detail="export is switched off on this server "
                                                        "(setting MBYN_VIEW_EXPORT=false)")
        body, media = broker(lambda: browse.export(settings(), name, format, limit=limit, key=key or None,
                                                   header=header or None, **start))
        filename = f"{browse.logical_name(settings(), name)}.{format}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/api/quarantine")
    def quarantine(limit: int = Query(100, ge=1, le=1000), topic: str | None = Query(None, max_length=255),
                   include_replayed: bool = False) -> dict[str, Any]:
        try:
            return broker(lambda: data.quarantined(settings(), limit=limit,  # type: ignore[no-any-return]
                                                   topic=topic or None, include_replayed=include_replayed))
        except SQLAlchemyError as exc:
            raise HTTPException(status_code=503, detail=f"warehouse unreadable: {str(exc).splitlines()[0]}") from None

    @app.get("/api/reports")
    def reports() -> dict[str, Any]:
        return data.reports(settings())

    @app.get("/reports/{path:path}", include_in_schema=False)
    def report(path: str) -> FileResponse:
        found = data.report_file(settings(), path)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no report {path!r}")
        return FileResponse(found)

    app.include_router(build_router(settings))
    return app


#: The app the Airflow plugin mounts.
app = create_app()
