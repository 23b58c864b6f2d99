"""The pipeline view for real: ``airflow standalone`` with the repository's plugins, data flowing, headless Chromium.

One test (Airflow takes minutes to start here): start the local Airflow (``mbyn.orchestration.local.up``,
free ports, temporary var/, no DAGs),
check that the plugin app answers 401 without credentials and 200 with a token, run the generator and the
warehouse-loader and dead-letters consumers in the background, log into the UI through the
SimpleAuthManager form, open the "Pipeline" view (the UI's iframe at ``/plugin/mbyn-pipeline``) and wait
until every producer, topic and consumer group is drawn with non-zero rates where data flows. The
screenshot goes to ``var/artifacts/pipeline-view.png`` (or ``$MBYN_SCREENSHOT``).

Chromium is the Debian package (``/usr/bin/chromium``), driven by Playwright; no browser is downloaded.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mbyn.settings import PROJECT_ROOT, Settings, get_settings
from tests.conftest import free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
MBYN = str(Path(sys.executable).parent / "mbyn")
FLOW_S = 240


@pytest.fixture
def airflow_with_plugin(topics: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """A real ``airflow standalone`` (plugins folder = the repository's ``plugins/``), stopped afterwards."""
    from mbyn.orchestration import local

    monkeypatch.setenv("MBYN_AIRFLOW_PORT", str(free_port_block(1)))
    monkeypatch.setenv("MBYN_AIRFLOW_LOG_PORT", str(free_port_block(2)))
    monkeypatch.setenv("MBYN_AIRFLOW_PASSWORD", secrets.token_urlsafe(12))
    get_settings.cache_clear()
    settings = get_settings()
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
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _check_login_required(settings: Settings) -> None:
    """The plugin app answers 401 without credentials and 200 with a token; the UI lists the view."""
    import httpx

    from mbyn.orchestration import local

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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian package chromium is not installed")
def test_pipeline_view_requires_login_and_draws_the_pipeline(data_flowing: Settings) -> None:
    from playwright.sync_api import sync_playwright

    from mbyn.orchestration import local
    from mbyn.sources import PRODUCERS

    settings = data_flowing
    _check_login_required(settings)  # one Airflow start for both checks: it takes minutes on a busy machine
    url = local.base_url(local.current_port(settings))
    shot = Path(os.environ.get("MBYN_SCREENSHOT") or PROJECT_ROOT / "var" / "artifacts" / "pipeline-view.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    prefix = settings.topic_prefix
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(url + "/", wait_until="domcontentloaded")
            page.wait_for_selector("input[name=username]", timeout=60_000)
            page.fill("input[name=username]", local.ADMIN_USER)
            page.fill("input[name=password]", settings.airflow_password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)

            page.goto(url + "/plugin/mbyn-pipeline", wait_until="domcontentloaded")
            page.wait_for_selector("iframe", timeout=60_000)
            frame = _pipeline_frame(page)
            frame.wait_for_selector("svg#graph g.node", timeout=60_000)
            # Rates need two samples and data in flight: wait until topics and the loader show some.
            frame.wait_for_function(
                """([prefix]) => {
                    const rate = (kind, name) => {
                        const n = document.querySelector(`g.node[data-kind="${kind}"][data-name="${name}"]`);
                        return n ? parseFloat(n.dataset.rate || "0") : 0;
                    };
                    return rate("topic", "clickstream") > 0 && rate("producer", "clickstream") > 0
                        && rate("group", "warehouse-loader") > 0
                        && document.querySelector('#verdict').dataset.balanced !== "";
                }""", arg=[prefix], timeout=120_000, polling=1000)
            frame.wait_for_selector("#quarantine tbody tr", timeout=90_000)
            frame.select_option("#topic", "orders")
            frame.click("#browse button[type=submit]")
            frame.wait_for_selector("#messages tbody tr", timeout=30_000)
            assert "orders" in frame.get_attribute("#export-csv", "href")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shot), full_page=True)

            from mbyn.catalog import load_catalog
            from mbyn.consumers import CONSUMERS

            expected = ({("producer", p) for p in PRODUCERS} | {("topic", t) for t in load_catalog().topics}
                        | {("group", c) for c in CONSUMERS})

            def problems() -> list[str]:
                """What the page does not show yet; the page redraws every few seconds, so poll it."""
                found: list[str] = []
                nodes: list[dict[str, Any]] = frame.eval_on_selector_all(
                    "svg#graph g.node", "els => els.map(e => ({...e.dataset}))")
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
                edges = frame.eval_on_selector_all("svg#graph path.edge",
                                                   "els => els.map(e => [e.dataset.from, e.dataset.to])")
                if ["producer:clickstream", "topic:clickstream"] not in edges:
                    found.append("no edge producer:clickstream → topic:clickstream")
                if [f"group:{prefix}warehouse-loader", "topic:dead-letters"] not in edges:
                    found.append("no dead letters edge")
                if frame.locator("#tables tr[data-table=clicks]").count() != 1:
                    found.append("no clicks row in the warehouse table")
                return found

            deadline = time.monotonic() + 90
            missing = problems()
            while missing and time.monotonic() < deadline:
                page.wait_for_timeout(2000)
                missing = problems()
            assert not missing, "; ".join(missing)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def _pipeline_frame(page: Any) -> Any:
    """The iframe the UI shows for the external view (its URL ends in /mbyn/)."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for frame in page.frames:
            if frame.url.rstrip("/").endswith("/mbyn"):
                return frame
        page.wait_for_timeout(500)
    raise AssertionError(f"no /mbyn/ iframe; frames: {[f.url for f in page.frames]}")
