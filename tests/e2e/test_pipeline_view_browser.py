"""The pipeline view for real: ONE ``airflow standalone`` for the module (the repository's plugins, the action
DAGs), data flowing, headless Chromium (``tests.helpers.browser``).

Airflow takes about a minute to start here, so every test that needs it shares one instance (``view_airflow``:
free ports, its own var/ and topic prefix, a DAGs folder holding only the DAGs the view's actions trigger), and
the workers run once for the module (``flow``). The tests, in order:

* the error banner — the view's app alone under uvicorn, its ``/api/graph`` failing at first (no Airflow);
* roles over HTTP, through the routes the page calls, nothing overridden: anonymous → 401 on the view and on
  every action; ``viewer`` → the view 200, every action 403 and no run; ``admin`` → a test-message run that
  succeeds and leaves its record on the topic;
* the live page: log into the UI, open "Pipeline" (the iframe at ``/plugin/mbyn-pipeline``), poll until every
  producer, topic and group is drawn with rates, browse a topic;
* lag: with orders stopped, the fraud-detector *held* (and why), a group with records waiting and no member
  *stuck*, the trend charts drawn from the lag-monitor's history;
* a re-send: the viewer's button is off with "your role cannot trigger this" and its request from the page
  gets 403; the admin re-sends a quarantined order from the page, follows the run to success, and the order
  reaches the warehouse.

Artifacts go to ``var/artifacts/`` (or the folder of ``$MBYN_SCREENSHOT``): ``pipeline-view.png``,
``pipeline-view-lag.png``, ``pipeline-view-resend.png``, and on failure a screenshot, the iframe's HTML and the
browser log (console, page errors, failed requests, every API response with its time), which is also printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mbyn.settings import PROJECT_ROOT, Settings, get_settings
from tests.helpers.browser import (
    BrowserLog,
    chromium,
    lag_rows,
    pipeline_frame,
    save_failure,
    view_page,
    what_is_missing,
)
from tests.helpers.processes import stop_all, wait_for
from tests.plugins.airflow import standalone_settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

MBYN = str(Path(sys.executable).parent / "mbyn")
FLOW_S = 900  # the background workers outlive the module's tests; the fixture stops them
DRAW_TIMEOUT_S = 150  # from opening the view until everything is drawn, rates included
RUN_TIMEOUT_S = 180  # a triggered DAG run from queued to success on a busy machine
HTTP_TIMEOUT_S = 120  # one request to the API server (the view's routes read the broker and the warehouse)
GRAPH_FAILURES = 4  # the error-banner test: /api/graph answers 503 this often (one call per 3 s refresh)
#: The DAGs the view's actions trigger; the module's Airflow parses only these.
ACTION_DAGS = ("quarantine_resend", "topic_test_message", "replay_topic")
#: Routes of the view's app that need a login (relative to Airflow's base URL).
VIEW_ROUTES = ("/mbyn/", "/mbyn/api/graph", "/mbyn/api/groups", "/mbyn/api/lag", "/mbyn/api/quarantine",
               "/mbyn/api/topics/orders/messages", "/mbyn/static/app.js")


def artifacts_folder() -> Path:
    shot = Path(os.environ.get("MBYN_SCREENSHOT") or PROJECT_ROOT / "var" / "artifacts" / "pipeline-view.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    return shot.parent


# The error banner (no Airflow) --------------------------------------------------------------------------------


@pytest.fixture
def view_server(topics: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The view's real app under uvicorn (no Airflow: login dependency overridden) whose ``/api/graph`` fails
    with 503 for its first ``GRAPH_FAILURES`` calls, as with a broker still starting; yields (URL, calls seen)."""
    import threading

    import uvicorn

    from mbyn.errors import BrokerUnavailableError
    from mbyn.pipeline_view import data
    from mbyn.pipeline_view.app import create_app
    from tests.conftest import free_port_block

    calls: list[str] = []
    real_graph = data.graph

    def flaky_graph(settings: Settings, sampler: Any) -> dict[str, Any]:
        calls.append("graph")
        if len(calls) <= GRAPH_FAILURES:
            raise BrokerUnavailableError("test: the broker is not answering yet")
        return real_graph(settings, sampler)

    monkeypatch.setattr(data, "graph", flaky_graph)
    app = create_app(get_settings)
    app.dependency_overrides[app.state.login_required] = lambda: None
    port = free_port_block(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/", calls
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_pipeline_view_shows_an_error_banner_and_recovers_when_the_api_fails(
        view_server: tuple[str, list[str]], tmp_path: Path) -> None:
    """A failing ``/api/graph`` shows the error banner (the other parts still draw), the page keeps retrying,
    and the graph appears and the banner goes once the API answers."""
    url, calls = view_server
    blog = BrowserLog()
    with chromium() as browser:
        page = browser.new_page()
        blog.attach(page)
        try:
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#error", state="visible", timeout=30_000)
            assert "graph" in page.inner_text("#error") and "503" in page.inner_text("#error")
            assert page.locator("svg#graph g.node").count() == 0
            page.wait_for_selector("#groups tbody tr", timeout=30_000)
            assert page.locator("svg#graph g.node").count() == 0, "the groups table waits for nothing else"
            page.wait_for_selector("svg#graph g.node", timeout=60_000)
            page.wait_for_selector("#error", state="hidden", timeout=30_000)
            assert len(calls) > GRAPH_FAILURES
            assert any("graph failed" in line for line in blog.lines), "the failure is logged to the console"
        except BaseException:
            save_failure(page, blog, tmp_path, "error-banner")
            raise


# One Airflow for the module -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def view_airflow(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real ``airflow standalone`` for the whole module (plugins = the repository's ``plugins/``; DAGs = only
    ``ACTION_DAGS``), on the session broker with a topic prefix and a var/ of its own (SQLite warehouse), the
    settings exported as ``MBYN_*`` so the workers started by the tests see the same world. Stopped afterwards."""
    from mbyn.local import airflow as local

    root = tmp_path_factory.mktemp("view")
    dags = root / "dags"
    dags.mkdir()
    for dag_id in ACTION_DAGS:
        shutil.copy(local.DAGS_FOLDER / f"{dag_id}.py", dags)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBYN_BOOTSTRAP_SERVERS", kafka_bootstrap)
        mp.setenv("MBYN_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}-")
        mp.setenv("MBYN_VAR_DIR", str(root / "var"))
        mp.delenv("MBYN_WAREHOUSE_URL", raising=False)
        settings = standalone_settings(mp)  # free ports, a random admin password; topics created by up()
        local.up(settings, dags_folder=dags)
        try:
            yield settings
        finally:
            local.down(settings)
            get_settings.cache_clear()


@dataclass
class Flow:
    """The module's background workers (``mbyn produce`` / ``mbyn consume``) on ``settings``, by name."""

    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]]

    def stop(self, name: str) -> None:
        """Stop one worker now (SIGTERM: it finishes its batch and commits) and wait for its exit."""
        stop_all([self.procs[name]], signal.SIGTERM, timeout=60)


@pytest.fixture(scope="module")
def flow(view_airflow: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """The generator (5% poison), the warehouse-loader, the dead-letters consumer, the fraud-detector (it holds
    orders in its join window: no payments service runs) and the lag-monitor (every 2 s) in the background for the
    rest of the module."""
    logs = tmp_path_factory.mktemp("workers")
    commands = {
        "clickstream": ["produce", "clickstream", "--rate", "40", "--duration", str(FLOW_S), "--invalid-ratio", "0.05"],
        "warehouse-loader": ["consume", "warehouse-loader", "--duration", str(FLOW_S)],
        "dead-letters": ["consume", "dead-letters", "--duration", str(FLOW_S)],
        "fraud-detector": ["consume", "fraud-detector", "--duration", str(FLOW_S)],
        "lag-monitor": ["consume", "lag-monitor", "--interval", "2", "--duration", str(FLOW_S)],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as files:
        for name, args in commands.items():
            log = files.enter_context((logs / f"{name}.log").open("wb"))
            procs[name] = subprocess.Popen([MBYN, *args], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            yield Flow(view_airflow, procs)
        finally:
            stop_all(procs.values(), signal.SIGTERM, timeout=60)


def _airflow_url(settings: Settings) -> str:
    from mbyn.local import airflow as local

    return local.base_url(local.current_port(settings))


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, settings: Settings) -> Any:
    from mbyn.local import airflow as local

    return wait_for(what, check, timeout_s, local.log_file(settings))


# Roles against the real API server ------------------------------------------------------------------------------

#: Each action of the page: its route under the view's app and a valid body.
ACTIONS = {"quarantine_resend": ("/mbyn/api/actions/quarantine-resend", {"ids": [1]}),
           "topic_test_message": ("/mbyn/api/actions/test-message", {"topic": "orders", "count": 1}),
           "replay_topic": ("/mbyn/api/actions/rewind", {"topic": "orders", "group": "warehouse-loader",
                                                         "from_ts": "2026-01-01T00:00:00Z", "dry_run": True})}


def _finished(client: httpx.Client, dag_id: str, run_id: str) -> str | None:
    """The run's final state (success | failed) through the view's run route, None while queued or running."""
    state = client.get(f"/mbyn/api/actions/runs/{dag_id}/{run_id}").json()["state"]
    return state if state in ("success", "failed") else None


def test_viewing_needs_a_login_and_triggering_an_action_needs_a_role_allowed_to(view_airflow: Settings) -> None:
    """Through the routes the page calls, Airflow's auth manager deciding (nothing overridden): anonymous 401,
    viewer sees but cannot trigger (403, the page's message, no run created), admin triggers and the run works."""
    from mbyn.local import airflow as local
    from tests.helpers.kafka import read_all

    settings = view_airflow
    # Status codes are the point, not speed: a generous timeout for a machine running the whole suite.
    with local.api_client(settings, timeout_s=HTTP_TIMEOUT_S) as admin, \
            local.api_client(settings, user=local.VIEWER_USER, timeout_s=HTTP_TIMEOUT_S) as viewer, \
            httpx.Client(base_url=_airflow_url(settings), timeout=HTTP_TIMEOUT_S) as anonymous:
        _wait_for("the action DAGs to be parsed",
                  lambda: all(admin.get(f"/api/v2/dags/{d}").status_code == 200 for d in ACTION_DAGS), 120, settings)

        for dag_id, (route, body) in ACTIONS.items():
            assert anonymous.post(route, json=body).status_code == 401, f"{route} without credentials"
            denied = viewer.post(route, json=body)
            assert denied.status_code == 403, f"{route} as viewer: HTTP {denied.status_code} {denied.text[:300]}"
            assert "your role cannot trigger this" in denied.json()["detail"]
            assert viewer.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None}).status_code == 403
            assert admin.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["total_entries"] == 0, f"{dag_id}: a run exists"

        route, body = ACTIONS["topic_test_message"]
        created = admin.post(route, json=body)  # the run goes on while the reads below are checked
        assert created.status_code == 200, created.text
        run = created.json()
        assert run["dag_id"] == "topic_test_message" and run["url"].startswith("dags/topic_test_message/runs/")

        for path in (*VIEW_ROUTES, "/mbyn/api/features"):
            assert anonymous.get(path).status_code == 401, f"{path} without credentials"
            forged = anonymous.get(path, headers={"Authorization": "Bearer forged"})  # Airflow answers 403
            assert forged.status_code in (401, 403), f"{path} with a forged token: {forged.status_code}"
            assert viewer.get(path).status_code == 200, f"{path} as viewer"
        may = {a["dag_id"]: a["may_trigger"] for a in viewer.get("/mbyn/api/features").json()["actions"]}
        assert may == dict.fromkeys(ACTION_DAGS, False), f"the viewer's buttons: {may}"
        may = {a["dag_id"]: a["may_trigger"] for a in admin.get("/mbyn/api/features").json()["actions"]}
        assert may == dict.fromkeys(ACTION_DAGS, True), f"the admin's buttons: {may}"
        plugins = viewer.get("/api/v2/plugins").json()["plugins"]
        mine = [p for p in plugins if p["name"] == "mbyn_pipeline_view"]
        assert mine and mine[0]["external_views"][0]["url_route"] == "mbyn-pipeline"

        state = _wait_for("the admin's run to finish", lambda: _finished(admin, "topic_test_message", run["run_id"]),
                          RUN_TIMEOUT_S, settings)
        assert state == "success", f"topic_test_message run {run['run_id']} is {state}"
        assert viewer.get(f"/mbyn/api/actions/runs/topic_test_message/{run['run_id']}").status_code == 200
    records = read_all(settings.bootstrap(), settings.topic_prefix + "orders", timeout=30)
    assert len(records) == 1, f"the test message run produced {len(records)} records to orders"


# The live page --------------------------------------------------------------------------------------------------


def test_pipeline_view_draws_the_live_pipeline_inside_the_airflow_ui(flow: Flow) -> None:
    from mbyn.local import airflow as local

    settings = flow.settings
    url = _airflow_url(settings)
    folder = artifacts_folder()
    blog = BrowserLog()
    user, password = local.ADMIN_USER, local.password(settings)
    with chromium() as browser, view_page(browser, url, user, password, blog, folder, "pipeline-view") as page:
        # Rates need two samples with data in flight: poll until the page shows everything.
        deadline = time.monotonic() + DRAW_TIMEOUT_S
        missing = what_is_missing(page, settings.topic_prefix)
        while missing and time.monotonic() < deadline:
            page.wait_for_timeout(2000)
            missing = what_is_missing(page, settings.topic_prefix)
        assert not missing, f"after {DRAW_TIMEOUT_S} s the view still lacks: " + "; ".join(missing)

        frame = pipeline_frame(page)
        frame.select_option("#topic", "orders")
        frame.click("#browse button[type=submit]")
        frame.wait_for_selector("#messages tbody tr", timeout=30_000)
        assert "orders" in frame.get_attribute("#export-csv", "href")
        page.screenshot(path=str(folder / "pipeline-view.png"), full_page=True)
    assert (folder / "pipeline-view.png").stat().st_size > 10_000


def test_the_view_tells_held_from_stuck_and_draws_the_lag_trend(flow: Flow) -> None:
    """Orders stop: the fraud-detector has read every one and keeps the unmatched ones in its join window
    (held, and why); a group whose committed offsets stay at 0 with no member while orders wait is stuck; every
    group's trend is drawn from the lag-monitor's history."""
    from confluent_kafka import TopicPartition

    from mbyn.local import airflow as local
    from tests.helpers.kafka import commit_offsets, end_offsets

    settings = flow.settings
    prefix = settings.topic_prefix
    flow.stop("clickstream")
    orders = [TopicPartition(prefix + "orders", p, 0) for (_, p), end in end_offsets(settings, ["orders"]).items()]
    assert orders, "the generator wrote no orders"
    commit_offsets(settings.bootstrap(), prefix + "order-enricher", orders)  # no member will ever move them
    url = _airflow_url(settings)
    folder = artifacts_folder()
    blog = BrowserLog()
    held, stuck, loader = prefix + "fraud-detector", prefix + "order-enricher", prefix + "warehouse-loader"
    user, password = local.ADMIN_USER, local.password(settings)
    with chromium() as browser, view_page(browser, url, user, password, blog, folder, "pipeline-view-lag",
                                          height=2400) as page:
        deadline = time.monotonic() + DRAW_TIMEOUT_S
        while True:
            rows = lag_rows(page)
            seen = {g: (rows.get(g) or {}).get("state") for g in (held, stuck, loader)}
            if seen == {held: "held", stuck: "stuck", loader: "ok"} and rows[loader]["points"] >= 3:
                break
            assert time.monotonic() < deadline, f"after {DRAW_TIMEOUT_S} s the lag table shows {rows}"
            page.wait_for_timeout(2000)
        assert "by design" in rows[held]["why"] and "join window" in rows[held]["why"], rows[held]
        assert "no live member" in rows[stuck]["why"], rows[stuck]
        assert {"seconds", "records"} <= set(rows[loader]["lines"]), rows[loader]
        assert "held" in rows[held]["lines"], f"no held band in the fraud-detector's trend: {rows[held]}"
        page.screenshot(path=str(folder / "pipeline-view-lag.png"), full_page=True)


def _quarantine_an_order(settings: Settings, order_id: str) -> tuple[int, dict[str, Any]]:
    """A valid order the warehouse once refused, on the dead-letters topic; the running dead-letters consumer
    quarantines it. (Its quarantine id, the order.)"""
    from sqlalchemy import text

    from mbyn.warehouse.engine import warehouse_engine
    from tests.helpers.dead_letters import dead_letter_an_order

    order = dead_letter_an_order(settings, order_id)
    engine = warehouse_engine(settings)
    try:
        def quarantined() -> int | None:
            with engine.connect() as conn:
                return conn.execute(text("SELECT id FROM quarantine WHERE key = :k"), {"k": order_id.encode()}).scalar()
        qid = _wait_for("the dead letter in the quarantine", quarantined, 60, settings)
    finally:
        engine.dispose()
    return int(qid), order


def test_a_resend_from_the_page_reaches_the_warehouse_and_a_viewer_cannot_trigger_it(flow: Flow) -> None:
    """A viewer sees the quarantined order with the button off and "your role cannot trigger this", and the
    server refuses the viewer's request from the page (403, no run); the admin ticks it and re-sends: the page
    shows the quarantine_resend run, linked, until success, and the order is loaded into the warehouse."""
    from sqlalchemy import text

    from mbyn.local import airflow as local
    from mbyn.warehouse.engine import warehouse_engine

    settings = flow.settings
    qid, order = _quarantine_an_order(settings, f"O-BROWSER-{uuid.uuid4().hex[:8]}")
    url = _airflow_url(settings)
    folder = artifacts_folder()
    blog = BrowserLog()
    row = f"#q-records tr[data-id='{qid}']"
    with chromium() as browser:
        with view_page(browser, url, local.VIEWER_USER, local.password(settings, local.VIEWER_USER), blog, folder,
                       "pipeline-view-viewer") as viewer:
            frame = pipeline_frame(viewer)
            frame.wait_for_selector(row, timeout=60_000)
            frame.wait_for_function("() => document.getElementById('resend-msg').textContent"
                                    ".includes('your role cannot trigger this')", timeout=30_000)
            assert frame.is_disabled("#resend")
            refused = frame.evaluate("ids => postJSON('api/actions/quarantine-resend', {ids})", [qid])
            assert refused["status"] == 403 and "your role cannot trigger this" in refused["doc"]["detail"], refused
        with local.api_client(settings, timeout_s=HTTP_TIMEOUT_S) as admin:
            assert admin.get("/api/v2/dags/quarantine_resend/dagRuns").json()["total_entries"] == 0

        with view_page(browser, url, local.ADMIN_USER, local.password(settings), blog, folder, "pipeline-view-resend",
                       height=2400) as page:
            frame = pipeline_frame(page)
            frame.wait_for_selector(row, timeout=60_000)
            frame.check(f"{row} input.q-pick")
            frame.click("#resend")
            run = "#runs tr[data-dag='quarantine_resend']"
            frame.wait_for_selector(run, timeout=30_000)
            assert "/dags/quarantine_resend/runs/" in frame.get_attribute(f"{run} a", "href")
            frame.wait_for_selector(f"{run}[data-state='success']", timeout=RUN_TIMEOUT_S * 1000)
            page.screenshot(path=str(folder / "pipeline-view-resend.png"), full_page=True)

    engine = warehouse_engine(settings)
    try:
        def loaded() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(text("SELECT count(*) FROM orders WHERE event_id = :e"),
                                         {"e": order["event_id"]}).scalar())
        _wait_for(f"order {order['payload']['order_id']} in the warehouse", loaded, 60, settings)
        with engine.connect() as conn:
            replayed = conn.execute(text("SELECT replayed_at FROM quarantine WHERE id = :i"), {"i": qid}).scalar()
    finally:
        engine.dispose()
    assert replayed is not None, "the re-sent record is not marked replayed"
