"""The pipeline view for real: ``airflow standalone`` with the repository's plugins, data flowing, headless Chromium.

One test (Airflow takes about a minute to start here): start the local Airflow (``mbyn.local.airflow.up``,
free ports, temporary var/, no DAGs), check that the plugin app answers 401 without credentials and 200 with a
token, run the generator and the warehouse-loader and dead-letters consumers in the background, log into the
UI through the SimpleAuthManager form, open the "Pipeline" view (the UI's iframe at ``/plugin/mbyn-pipeline``)
and poll the live page (it redraws every 3 s) until every producer, topic and consumer group is drawn with
non-zero rates where data flows, then use the topic browser.

The view's frame is found as the main frame's child at ``/mbyn/``, never by URL alone: once the iframe has
loaded, the UI rewrites its own address to ``/plugin/mbyn-pipeline/mbyn/``, so "the frame whose URL ends in
/mbyn" is the UI itself half of the time on a busy machine (the cause of this test's old flakiness).

Artifacts go to ``var/artifacts/`` (or the folder of ``$MBYN_SCREENSHOT``): ``pipeline-view.png``, and on
failure ``pipeline-view-failed.png``, the iframe's HTML (``pipeline-view.html``) and the browser log
(``pipeline-view-browser.log``: console, page errors, failed requests, every API response with its time),
which is also printed.

Chromium is the Debian package (``/usr/bin/chromium``), driven by Playwright; no browser is downloaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mbyn.settings import PROJECT_ROOT, Settings
from tests.helpers.processes import stop_all
from tests.plugins.airflow import standalone_settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
MBYN = str(Path(sys.executable).parent / "mbyn")
FLOW_S = 240
VIEW_PATH = "/mbyn/"
DRAW_TIMEOUT_S = 150  # from opening the view until everything is drawn, rates included
GRAPH_FAILURES = 4  # the error-banner test: /api/graph answers 503 this often (one call per 3 s refresh)


@pytest.fixture
def airflow_with_plugin(topics: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """A real ``airflow standalone`` (plugins folder = the repository's ``plugins/``), stopped afterwards."""
    from mbyn.local import airflow as local

    settings = standalone_settings(monkeypatch)
    dags = tmp_path / "no-dags"
    dags.mkdir()
    local.up(settings, dags_folder=dags)
    try:
        yield settings
    finally:
        local.down(settings)


@pytest.fixture
def data_flowing(airflow_with_plugin: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The generator (5% poison) and two consumers running in the background for the test's duration."""
    commands = [
        ["produce", "clickstream", "--rate", "40", "--duration", str(FLOW_S), "--invalid-ratio", "0.05"],
        ["consume", "warehouse-loader", "--duration", str(FLOW_S)],
        ["consume", "dead-letters", "--duration", str(FLOW_S)],
    ]
    procs = []
    for i, args in enumerate(commands):
        log = (tmp_path / f"bg-{i}.log").open("wb")
        procs.append((subprocess.Popen([MBYN, *args], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)),
                      log))
    try:
        yield airflow_with_plugin
    finally:
        stop_all((proc for proc, _ in procs), signal.SIGTERM, timeout=60)
        for _, log in procs:
            log.close()


def _check_login_required(settings: Settings) -> None:
    """The plugin app answers 401 without credentials and 200 with a token; the UI lists the view."""
    import httpx

    from mbyn.local import airflow as local

    url = local.base_url(local.current_port(settings))
    for path in ("/mbyn/", "/mbyn/api/graph", "/mbyn/api/topics/orders/messages", "/mbyn/static/app.js"):
        response = httpx.get(url + path, timeout=30)
        assert response.status_code == 401, f"{path} answered {response.status_code} without credentials"
    with local.api_client(settings) as client:
        graph = client.get("/mbyn/api/graph")
        assert graph.status_code == 200, graph.text
        assert "orders" in {t["name"] for t in graph.json()["topics"]}
        plugins = client.get("/api/v2/plugins").json()["plugins"]
    mine = [p for p in plugins if p["name"] == "mbyn_pipeline_view"]
    assert mine and mine[0]["external_views"][0]["url_route"] == "mbyn-pipeline"


class BrowserLog:
    """What the browser reported while the test ran, with seconds since the start: the page's console, page
    errors, failed requests and every response of the view's app (status and time to first byte)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(f"{time.monotonic() - self.started:7.1f}s {text}")

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.add(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.add(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.add(f"request failed: {r.url} ({r.failure})"))
        page.on("response", self._response)
        page.on("framenavigated",
                lambda f: self.add(f"{'main frame' if f.parent_frame is None else 'iframe'} at {f.url}"))

    def _response(self, response: Any) -> None:
        if urlparse(response.url).path.startswith(VIEW_PATH):
            waited = response.request.timing.get("responseStart", -1)
            self.add(f"HTTP {response.status} {response.url} ({waited:.0f} ms)")


def _pipeline_frame(page: Any, timeout_s: float = 60) -> Any:
    """The iframe that shows the view: the main frame's child at ``/mbyn/`` (see the module docstring)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.main_frame.child_frames:
            if not frame.is_detached() and urlparse(frame.url).path == VIEW_PATH:
                return frame
        page.wait_for_timeout(250)
    raise AssertionError(f"no {VIEW_PATH} iframe; frames: {[f.url for f in page.frames]}")


def _save_failure(page: Any, blog: BrowserLog, folder: Path) -> None:
    """Failure artifacts (screenshot, the view's HTML, the browser log); the log is printed too."""
    (folder / "pipeline-view-browser.log").write_text("\n".join(blog.lines) + "\n")
    print("---- browser log ----", *blog.lines[-150:], sep="\n")
    page.screenshot(path=str(folder / "pipeline-view-failed.png"), full_page=True)
    frames = [f for f in page.main_frame.child_frames if urlparse(f.url).path == VIEW_PATH]
    html = frames[0].content() if frames else page.content()
    (folder / "pipeline-view.html").write_text(html)
    print(f"---- failure artifacts in {folder} ----")


def _what_is_missing(page: Any, prefix: str) -> list[str]:
    """What the live view does not show yet (empty when everything is there), with the error banner's text."""
    from mbyn.catalog import load_catalog
    from mbyn.workers import consumers, producers

    frame = _pipeline_frame(page)  # looked up each time: the UI may recreate its iframe
    found: list[str] = []
    nodes: list[dict[str, Any]] = frame.eval_on_selector_all("svg#graph g.node",
                                                             "els => els.map(e => ({...e.dataset}))")
    if not nodes:
        found.append("no graph drawn yet")
    expected = ({("producer", p.name) for p in producers()} | {("topic", t) for t in load_catalog().topics}
                | {("group", c.name) for c in consumers()})
    drawn = {(n["kind"], n["name"]) for n in nodes}
    if expected - drawn:
        found.append(f"not drawn: {sorted(expected - drawn)}")
    rates = {(n["kind"], n["name"]): float(n["rate"] or 0) for n in nodes}
    for node in (("producer", "clickstream"), ("topic", "clickstream"), ("topic", "orders"),
                 ("group", "warehouse-loader")):
        if rates.get(node, 0) <= 0:
            found.append(f"{node} shows no rate")
    members = {n["name"]: n["members"] for n in nodes if n["kind"] == "group"}
    if members.get("warehouse-loader") != "1" or members.get("dead-letters") != "1":
        found.append(f"members: {members}")
    edges = frame.eval_on_selector_all("svg#graph path.edge", "els => els.map(e => [e.dataset.from, e.dataset.to])")
    if ["producer:clickstream", "topic:clickstream"] not in edges:
        found.append("no edge producer:clickstream → topic:clickstream")
    if [f"group:{prefix}warehouse-loader", "topic:dead-letters"] not in edges:
        found.append("no dead letters edge")
    if frame.get_attribute("#verdict", "data-balanced") in (None, ""):
        found.append("no reconciliation verdict")
    if frame.locator("#quarantine tbody tr").count() == 0:
        found.append("no quarantined records listed")
    if frame.locator("#tables tr[data-table=clicks]").count() != 1:
        found.append("no clicks row in the warehouse table")
    banner = frame.locator("#error")
    if found and banner.is_visible():  # a failed request is retried: only worth telling when something lacks
        found.append(f"error banner: {banner.inner_text()}")
    return found


@pytest.mark.skipif(not CHROMIUM.exists() and "CI" not in os.environ,
                    reason="Debian package chromium is not installed (make system-deps installs it; CI fails)")
def test_pipeline_view_requires_login_and_draws_the_pipeline(data_flowing: Settings) -> None:
    from playwright.sync_api import sync_playwright

    from mbyn.local import airflow as local

    settings = data_flowing
    _check_login_required(settings)  # one Airflow start for both checks: it takes a minute on a busy machine
    url = local.base_url(local.current_port(settings))
    shot = Path(os.environ.get("MBYN_SCREENSHOT") or PROJECT_ROOT / "var" / "artifacts" / "pipeline-view.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    blog = BrowserLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1500, "height": 1900})
        blog.attach(page)
        try:
            page.goto(url + "/", wait_until="domcontentloaded")
            page.wait_for_selector("input[name=username]", timeout=60_000)
            page.fill("input[name=username]", local.ADMIN_USER)
            page.fill("input[name=password]", settings.airflow_password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)

            page.goto(url + "/plugin/mbyn-pipeline", wait_until="domcontentloaded")
            # Rates need two samples with data in flight: poll until the page shows everything.
            deadline = time.monotonic() + DRAW_TIMEOUT_S
            missing = _what_is_missing(page, settings.topic_prefix)
            while missing and time.monotonic() < deadline:
                page.wait_for_timeout(2000)
                missing = _what_is_missing(page, settings.topic_prefix)
            assert not missing, f"after {DRAW_TIMEOUT_S} s the view still lacks: " + "; ".join(missing)

            frame = _pipeline_frame(page)
            frame.select_option("#topic", "orders")
            frame.click("#browse button[type=submit]")
            frame.wait_for_selector("#messages tbody tr", timeout=30_000)
            assert "orders" in frame.get_attribute("#export-csv", "href")
            page.screenshot(path=str(shot), full_page=True)
        except BaseException:
            _save_failure(page, blog, shot.parent)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


@pytest.fixture
def view_server(topics: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The view's real app under uvicorn (no Airflow: login dependency overridden) whose ``/api/graph`` fails
    with 503 for its first ``GRAPH_FAILURES`` calls, as with a broker still starting; yields (URL, calls seen)."""
    import threading

    import uvicorn

    from mbyn.errors import BrokerUnavailableError
    from mbyn.pipeline_view import data
    from mbyn.pipeline_view.app import create_app
    from mbyn.settings import get_settings
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


@pytest.mark.skipif(not CHROMIUM.exists() and "CI" not in os.environ,
                    reason="Debian package chromium is not installed (make system-deps installs it; CI fails)")
def test_pipeline_view_shows_an_error_banner_and_recovers_when_the_api_fails(
        view_server: tuple[str, list[str]], tmp_path: Path) -> None:
    """A failing ``/api/graph`` shows the error banner (the other parts still draw), the page keeps retrying,
    and the graph appears and the banner goes once the API answers."""
    from playwright.sync_api import sync_playwright

    url, calls = view_server
    blog = BrowserLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
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
            _save_failure(page, blog, tmp_path)
            raise
        finally:
            browser.close()
