"""The pipeline view's actions, each an Airflow DAG run: re-send quarantined records, test messages, rewind a group.

``router`` adds these routes to the view's app (relative to its mount point, ``/mbyn``):

* ``GET /api/features`` — what this server offers and what the caller may do: ``export`` (the
  ``MBYN_VIEW_EXPORT`` setting) and per action its DAG, whether Airflow has it loaded, paused, and
  ``may_trigger`` (Airflow's auth manager asked for this user; ``null`` when it cannot be asked);
* ``POST /api/actions/quarantine-resend`` ``{"ids": [...]}`` → DAG ``quarantine_resend``;
* ``POST /api/actions/test-message`` ``{"topic", "count"}`` → DAG ``topic_test_message``;
* ``POST /api/actions/rewind`` ``{"topic", "group", "from_ts", "dry_run"}`` → DAG ``replay_topic`` (the page
  triggers a dry run first and shows its preview, then the real rewind);
* ``GET /api/actions/runs/{dag_id}/{run_id}`` — a triggered run's state, its tasks' states and the values they
  returned (XCom ``return_value``: the dry run's preview, the re-send summary).

**Who may.** Airflow's auth manager decides, exactly as for the REST API's ``POST /api/v2/dags/{id}/dagRuns``:
each trigger route depends on Airflow's own ``requires_access_dag(method="POST", access_entity=RUN)`` for its
DAG (the run-state route on the ``GET`` one), with the user from the bearer token or the UI's ``_token``
session cookie (httponly, SameSite=lax: the page in the UI's iframe sends it; another site cannot). Anonymous →
401; a role that may not trigger runs (SimpleAuthManager's ``viewer``) → 403 "your role cannot trigger …".

**What happens.** The route checks the input (a bad field → 422 naming it and what is allowed; nothing is
triggered), then creates a queued manual run with ``airflow.api.common.trigger_dag`` — what the REST API does —
triggered by the UI and recorded with the user's name. The work itself (producing, rewinding) runs in the DAG's
task, never in the web process; the DAG checks its params again. A DAG that Airflow has not parsed yet → 503.
The answer carries the run id, its state and ``url``, the run's page in the Airflow UI relative to the UI's root.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from mbyn.catalog import load_catalog
from mbyn.errors import ActionError, ReplayError
from mbyn.orchestration.action_params import MAX_TEST_MESSAGES, parse_ids
from mbyn.orchestration.message_templates import refusal, templated_topics
from mbyn.replay import parse_timestamp
from mbyn.settings import Settings

log = logging.getLogger("mbyn.pipeline_view")

#: action name (route) → the DAG it triggers.
ACTION_DAGS = {"quarantine-resend": "quarantine_resend", "test-message": "topic_test_message", "rewind": "replay_topic"}
GROUP_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
FORBIDDEN = "your role cannot trigger this"
_bearer = HTTPBearer(auto_error=False)


class ResendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Any] = Field(description="quarantine ids (the `id` column), 1 to MAX_RESEND_IDS of them")


class TestMessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = Field(max_length=255)
    count: int = Field(1, ge=1, le=MAX_TEST_MESSAGES)


class RewindBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = Field(max_length=255)
    group: str = Field(pattern=GROUP_PATTERN, description="consumer name, e.g. warehouse-loader")
    from_ts: str = Field(max_length=64, description="ISO-8601 time, e.g. 2026-12-05T06:00:00Z")
    dry_run: bool = True


def may_trigger(dag_id: str) -> Callable[..., BaseUser]:
    """Airflow's ``requires_access_dag(POST, RUN)`` for ``dag_id``, its 403 worded for the page; the user."""
    check = requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN, param_dag_id=dag_id)

    def dependency(request: Request, user: Annotated[BaseUser, Depends(get_user)]) -> BaseUser:
        try:
            check(request, user)
        except HTTPException as exc:
            if exc.status_code == 403:
                raise HTTPException(403, f"{FORBIDDEN}: Airflow's auth manager does not let user "
                                         f"{user.get_name()!r} trigger DAG {dag_id}") from None
            raise
        return user

    return dependency


def unprocessable(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming ``field``."""
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def trigger(dag_id: str, conf: dict[str, Any], user: BaseUser) -> dict[str, Any]:
    """Create a queued manual run of ``dag_id`` with ``conf`` as ``user`` (what POST /api/v2/.../dagRuns does)."""
    from airflow.api.common.trigger_dag import trigger_dag  # noqa: PLC0415 - needs Airflow's ORM set up (API server)
    from airflow.exceptions import DagNotFound  # noqa: PLC0415 - same
    from airflow.utils.types import DagRunTriggeredByType  # noqa: PLC0415 - same

    try:
        run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=user.get_name(),
                          conf=conf)
    except DagNotFound:
        raise HTTPException(503, f"Airflow has not loaded DAG {dag_id} (yet): is dags/{dag_id}.py in its DAGs "
                                 "folder? New DAG files are parsed within a few minutes.") from None
    except ValueError as exc:  # includes ParamValidationError: the DAG's params refused the conf
        raise HTTPException(400, f"DAG {dag_id} refused the run: {exc}") from None
    if run is None:
        raise HTTPException(503, f"Airflow did not create a run of {dag_id}")
    log.info("user %s triggered %s run %s with %s", user.get_name(), dag_id, run.run_id, conf)
    return _run_doc(dag_id, run.run_id, str(run.state), conf)


def _run_doc(dag_id: str, run_id: str, state: str, conf: Any) -> dict[str, Any]:
    return {"dag_id": dag_id, "run_id": run_id, "state": state, "conf": conf,
            "url": f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"}


def run_state(dag_id: str, run_id: str) -> dict[str, Any]:
    """A run's state, its tasks' states and their XCom ``return_value``s; 404 when there is no such run."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415 - Airflow's ORM (API server only)
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - same
    from airflow.models.xcom import XComModel  # noqa: PLC0415 - same
    from airflow.utils.session import create_session  # noqa: PLC0415 - same
    from sqlalchemy import select  # noqa: PLC0415 - with the ORM above

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            raise HTTPException(404, f"no run {run_id!r} of DAG {dag_id}")
        tasks = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                                           TaskInstance.run_id == run_id)).all()
        rows: list[Any] = list(session.scalars(XComModel.get_many(run_id=run_id, key="return_value", dag_ids=dag_id)))
        results = {row.task_id: XComModel.deserialize_value(row) for row in rows}
        doc = _run_doc(dag_id, run_id, str(run.state), run.conf)
    return {**doc, "tasks": {ti.task_id: str(ti.state) if ti.state else None for ti in tasks}, "results": results}


def features(settings: Settings, user: BaseUser | None) -> dict[str, Any]:
    """``export`` on or off and, per action, its DAG, whether it is loaded / paused and whether ``user`` may
    trigger it (``None`` when no user or auth manager could be asked)."""
    from airflow.models.dag import DagModel  # noqa: PLC0415 - Airflow's ORM (API server only)

    out = []
    for action, dag_id in ACTION_DAGS.items():
        try:
            model = DagModel.get_current(dag_id)
        except Exception as exc:  # noqa: BLE001 - no metadata DB here: the page still draws, "unknown"
            log.warning("cannot read DAG %s from Airflow's database: %s", dag_id, str(exc).splitlines()[0])
            model = None
        allowed = None
        if user is not None:
            team = DagModel.get_team_name(dag_id) if model is not None else None
            allowed = get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                           user=user, details=DagDetails(id=dag_id, team_name=team))
        out.append({"action": action, "dag_id": dag_id, "loaded": model is not None,
                    "paused": bool(model.is_paused) if model is not None else None, "may_trigger": allowed})
    return {"export": settings.view_export, "actions": out, "forbidden_message": FORBIDDEN,
            "test_message_topics": templated_topics(), "group_pattern": GROUP_PATTERN}


async def maybe_user(request: Request, bearer: Annotated[Any, Depends(_bearer)]) -> BaseUser | None:
    """The logged-in user (bearer token or the UI's cookie), or None: anonymous, or no auth manager here."""
    try:
        return await get_user(request, None, bearer)
    except (HTTPException, RuntimeError):
        return None


def build_router(settings: Callable[[], Settings]) -> APIRouter:
    """The action routes, reading settings through ``settings`` (the app's factory)."""
    router = APIRouter()

    @router.get("/api/features")
    def get_features(user: Annotated[BaseUser | None, Depends(maybe_user)]) -> dict[str, Any]:
        return features(settings(), user)

    @router.post("/api/actions/quarantine-resend")
    def resend(body: ResendBody,
               user: Annotated[BaseUser, Depends(may_trigger(ACTION_DAGS["quarantine-resend"]))]) -> dict[str, Any]:
        try:
            ids = parse_ids(body.ids)
        except ActionError as exc:
            raise unprocessable("ids", str(exc)) from None
        return trigger(ACTION_DAGS["quarantine-resend"], {"ids": ids}, user)

    @router.post("/api/actions/test-message")
    def test_message(body: TestMessageBody,
                     user: Annotated[BaseUser, Depends(may_trigger(ACTION_DAGS["test-message"]))]) -> dict[str, Any]:
        catalog = load_catalog()
        if body.topic not in catalog.topics:
            raise unprocessable("topic", f"{body.topic[:80]!r} is not a catalog topic; choose one of "
                                         f"{', '.join(templated_topics())}")
        why = refusal(catalog, body.topic)
        if why:
            raise unprocessable("topic", f"{body.topic} has no test-message template: {why}; topics with one: "
                                         f"{', '.join(templated_topics())}")
        return trigger(ACTION_DAGS["test-message"], {"topic": body.topic, "count": body.count}, user)

    @router.post("/api/actions/rewind")
    def rewind(body: RewindBody,
               user: Annotated[BaseUser, Depends(may_trigger(ACTION_DAGS["rewind"]))]) -> dict[str, Any]:
        if body.topic not in load_catalog().topics:
            raise unprocessable("topic", f"{body.topic[:80]!r} is not a catalog topic; choose one of "
                                         f"{', '.join(sorted(load_catalog().topics))}")
        try:
            when = parse_timestamp(body.from_ts)
        except ReplayError as exc:
            raise unprocessable("from_ts", str(exc)) from None
        conf = {"topic": body.topic, "group": body.group, "from_ts": when.isoformat().replace("+00:00", "Z"),
                "dry_run": body.dry_run}
        return trigger(ACTION_DAGS["rewind"], conf, user)

    @router.get("/api/actions/runs/{dag_id}/{run_id}",
                dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))])
    def get_run(dag_id: str, run_id: str) -> dict[str, Any]:
        if dag_id not in ACTION_DAGS.values():
            raise HTTPException(404, f"{dag_id!r} is not a DAG of the view's actions "
                                     f"({', '.join(ACTION_DAGS.values())})")
        return run_state(dag_id, run_id)

    return router
