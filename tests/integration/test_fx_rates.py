"""The FX-rates poller against a real local HTTP server (scripted answers) and the real broker."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaException

from mbyn.contracts.envelope import validate
from mbyn.errors import SourceError
from mbyn.settings import Settings, get_settings
from mbyn.sources.fx_rates import DAILY_FILE, FIXTURES_DIR, HISTORY_FILE, catalog_currencies, publish_fx_rates
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration

CURRENCIES = len(catalog_currencies())  # 9, EUR included


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass
class ScriptedEcb:
    """A threaded HTTP server that answers each path from a script (the last answer repeats)."""

    script: dict[str, list[Answer]]
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str) -> Answer:
        self.requests.append(path)
        answers = self.script.get(path.lstrip("/"), [Answer(404, b"not found")])
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def ecb() -> Iterator[ScriptedEcb]:
    server_state = ScriptedEcb(script={})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = server_state.answer(self.path)
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fx_settings(topics: Settings, ecb: ScriptedEcb, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings pointed at the scripted server, with short timeouts."""
    monkeypatch.setenv("MBYN_FX_URL", ecb.url)
    monkeypatch.setenv("MBYN_FX_TIMEOUT_S", "0.5")
    monkeypatch.setenv("MBYN_FX_ATTEMPTS", "3")
    get_settings.cache_clear()
    return get_settings()


def fixture(name: str) -> bytes:
    return (FIXTURES_DIR / name).read_bytes()


def topic_records(settings: Settings, expect: int | None = None):
    """Everything on the test's fx-rates topic; retries while a just-created topic has no leader yet."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return read_all(settings.bootstrap(), settings.topic_prefix + "fx-rates", expect=expect, timeout=20)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_first_run_backfills_history_and_a_rerun_publishes_nothing(fx_settings, ecb):
    history = fixture(HISTORY_FILE)
    days = history.count(b"<Cube time=")
    ecb.script = {HISTORY_FILE: [Answer(body=history)], DAILY_FILE: [Answer(body=fixture(DAILY_FILE))]}

    first = publish_fx_rates(fx_settings)
    assert first["records"] == first["delivered"] == days * CURRENCIES
    assert ecb.requests == ["/" + HISTORY_FILE]
    got = topic_records(fx_settings)
    assert len(got) == days * CURRENCIES
    keys = {(r.json()["payload"]["rate_date"], r.key.decode()) for r in got}
    assert len(keys) == len(got), "one record per (rate_date, currency)"
    for r in got:
        validate("fx-rates", r.json())
        assert r.key.decode() == r.json()["payload"]["currency"]
    eur = [r.json()["payload"] for r in got if r.key == b"EUR"]
    assert len(eur) == days and {p["rate_per_eur"] for p in eur} == {1.0}
    usd_latest = [r.json()["payload"] for r in got if r.key == b"USD"][-1]
    assert usd_latest["rate_date"] == "2026-11-25", "oldest first: the compacted topic ends with the newest rate"

    second = publish_fx_rates(fx_settings)  # state exists now → the daily file, already published
    assert ecb.requests[-1] == "/" + DAILY_FILE
    assert second["records"] == 0 and second["already_published"] == CURRENCIES
    assert len(topic_records(fx_settings)) == days * CURRENCIES


def test_http_500_then_good_is_retried(fx_settings, ecb, caplog):
    ecb.script = {HISTORY_FILE: [Answer(500, b"oops"), Answer(body=fixture(DAILY_FILE))]}
    summary = publish_fx_rates(fx_settings)
    assert ecb.requests == ["/" + HISTORY_FILE] * 2
    assert summary["records"] == CURRENCIES
    assert len(topic_records(fx_settings, expect=CURRENCIES)) == CURRENCIES
    retries = [r for r in caplog.records if "HTTP 500" in r.getMessage()]
    assert len(retries) == 1 and "attempt 1/3" in retries[0].getMessage()


def test_slow_server_times_out_with_bounded_attempts(fx_settings, ecb):
    ecb.script = {HISTORY_FILE: [Answer(body=fixture(DAILY_FILE), delay=2.0)]}
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        publish_fx_rates(fx_settings)
    assert ecb.url + HISTORY_FILE in str(err.value)
    assert "no answer within 0.5s" in str(err.value) and "after 3 attempt(s)" in str(err.value)
    assert len(ecb.requests) == 3
    assert time.monotonic() - started < 6
    assert topic_records(fx_settings) == []


@pytest.mark.parametrize(("body", "problem"), [
    (b"<gesmes:Envelope><Cube", "malformed XML"),
    (fixture(DAILY_FILE).replace(b"rate='1.1583'", b"rate='-1.1583'"), "must be a positive number"),
])
def test_bad_response_publishes_nothing_and_keeps_no_state(fx_settings, ecb, body, problem):
    ecb.script = {HISTORY_FILE: [Answer(body=body)]}
    with pytest.raises(SourceError, match=problem):
        publish_fx_rates(fx_settings)
    assert len(ecb.requests) == 1, "a malformed answer is not retried"
    assert topic_records(fx_settings) == []
    assert not (fx_settings.state_dir / "fx-rates.json").exists()


def test_unreachable_source_says_offline_and_how_to_replay(topics, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MBYN_FX_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("MBYN_FX_ATTEMPTS", "2")
    get_settings.cache_clear()
    with pytest.raises(SourceError, match=r"connection failed.*after 2 attempt\(s\).*offline\?.*--replay"):
        publish_fx_rates(get_settings())


def test_replay_cli_serves_recorded_files_over_http(topics):
    days = fixture(HISTORY_FILE).count(b"<Cube time=")
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "fx-rates", "--replay"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "REPLAY" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["producer"] == "fx-rates-poller" and summary["records"] == days * CURRENCIES
    assert len(topic_records(topics)) == days * CURRENCIES
    again = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "fx-rates", "--replay"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["records"] == 0
