"""Headless Chromium for the pipeline-view tests: the browser, the Airflow login, the view's iframe, failure artifacts.

Chromium is the Debian package (``/usr/bin/chromium``), driven by Playwright through ``executable_path``; no
browser is downloaded. A missing Chromium fails the test with the fix (``make system-deps``): the browser tests
never skip.

The view's frame is found as the main frame's child at ``/mbyn/``, never by URL alone: once the iframe has
loaded, the UI rewrites its own address to ``/plugin/mbyn-pipeline/mbyn/``, so "the frame whose URL ends in
/mbyn" is the UI itself half of the time on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEW_PATH = "/mbyn/"
VIEW_ROUTE = "/plugin/mbyn-pipeline"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed afterwards; fails the test when it is not installed."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed ({CHROMIUM}): `make system-deps` installs the Debian package "
                    "chromium; the browser tests never skip")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


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
        path = urlparse(response.url).path
        if path.startswith(VIEW_PATH) or path.startswith("/api/v2/dags"):
            waited = response.request.timing.get("responseStart", -1)
            self.add(f"HTTP {response.status} {response.request.method} {response.url} ({waited:.0f} ms)")


def log_in(page: Any, url: str, user: str, password: str) -> None:
    """Log into the Airflow UI through the SimpleAuthManager form and wait until it has left the login page."""
    page.goto(url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("input[name=username]", timeout=60_000)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)


def pipeline_frame(page: Any, timeout_s: float = 60) -> Any:
    """The iframe that shows the view: the main frame's child at ``/mbyn/`` (see the module docstring)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.main_frame.child_frames:
            if not frame.is_detached() and urlparse(frame.url).path == VIEW_PATH:
                return frame
        page.wait_for_timeout(250)
    raise AssertionError(f"no {VIEW_PATH} iframe; frames: {[f.url for f in page.frames]}")


def save_failure(page: Any, blog: BrowserLog, folder: Path, name: str = "pipeline-view") -> None:
    """Failure artifacts (screenshot, the view's HTML, the browser log) named ``name-*``; the log is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-browser.log").write_text("\n".join(blog.lines) + "\n")
    print(f"---- browser log ({name}) ----", *blog.lines[-150:], sep="\n")
    try:
        page.screenshot(path=str(folder / f"{name}-failed.png"), full_page=True)
        frames = [f for f in page.main_frame.child_frames if urlparse(f.url).path == VIEW_PATH]
        (folder / f"{name}.html").write_text(frames[0].content() if frames else page.content())
    except Exception as exc:  # noqa: BLE001 - the artifacts must never hide the failure that asked for them
        print(f"(no screenshot or HTML: {exc})")
    print(f"---- failure artifacts in {folder} ----")


# What the page shows ------------------------------------------------------------------------------------------


def what_is_missing(page: Any, prefix: str) -> list[str]:
    """What the live view does not show yet (empty when everything is there), with the error banner's text."""
    from mbyn.catalog import load_catalog
    from mbyn.workers import consumers, producers

    frame = pipeline_frame(page)  # looked up each time: the UI may recreate its iframe
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


def lag_rows(page: Any) -> dict[str, dict[str, Any]]:
    """The lag table as the page draws it: per group its state, why, and its trend chart's points and lines."""
    rows = pipeline_frame(page).eval_on_selector_all("#lag tbody tr", """rows => rows.map(r => ({
        group: r.dataset.group, state: r.dataset.state, why: r.cells[2].textContent,
        points: Number((r.querySelector('svg.lag-chart') || {dataset: {}}).dataset.points || 0),
        lines: [...r.querySelectorAll('svg.lag-chart polyline')].map(p => p.getAttribute('class'))}))""")
    return {row["group"]: row for row in rows}


@contextmanager
def view_page(browser: Any, url: str, user: str, password: str, blog: BrowserLog, folder: Path, name: str,
              height: int = 1900) -> Iterator[Any]:
    """A new page (its own cookies) logged into the Airflow UI at ``url`` as ``user``, on the pipeline view; what
    the test does with it that fails leaves ``<name>-failed.png``, the iframe's HTML and the browser log."""
    page = browser.new_context(viewport={"width": 1500, "height": height}).new_page()
    blog.attach(page)
    try:
        log_in(page, url, user, password)
        page.goto(url + "/plugin/mbyn-pipeline", wait_until="domcontentloaded")
        yield page
    except BaseException:
        save_failure(page, blog, folder, name)
        raise
