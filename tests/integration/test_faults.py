"""Faults while the pipeline runs: a broker SIGKILLed, a broker not there yet, Postgres restarted, a bad API.

One real 3-node KRaft cluster (replication 3, ``min.insync.replicas=2``) serves the whole module, started in
this process and tied to it (``die_with_parent``), so a killed test run leaves no broker behind. Every test
gets its own topic prefix and var folder on it. Every process under test is the real CLI (``mbyn produce``,
``mbyn consume``) in a subprocess; what the tests count is read back independently from the topics and the
warehouse.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.contracts.envelope import validate
from mbyn.errors import ContractError, SourceError
from mbyn.settings import PROJECT_ROOT, Settings, get_settings, load_settings
from tests.conftest import free_port_block
from tests.helpers.kafka import read_all
from tests.helpers.processes import reap

pytestmark = pytest.mark.integration


# The module's cluster --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """The module's 3-node cluster: ``admin`` settings (ports, var folder) and its bootstrap servers."""

    admin: Settings
    bootstrap: str


def _two_free_blocks(size: int) -> tuple[int, int]:
    brokers = free_port_block(size)
    while True:
        controllers = free_port_block(size)
        if abs(controllers - brokers) >= size:
            return brokers, controllers


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from mbyn.local import kafka as cluster

    brokers, controllers = _two_free_blocks(3)
    admin = load_settings(var_dir=tmp_path_factory.mktemp("ha") / "var", kafka_port=brokers,
                          kafka_controller_port=controllers, kafka_nodes=3, kafka_heap="384m",
                          kafka_lib_dir=PROJECT_ROOT / "var" / "kafka" / "lib")
    state = cluster.up(admin, nodes=3, die_with_parent=True)
    try:
        yield Cluster(admin, state.bootstrap_servers)
    finally:
        cluster.down(admin)


@pytest.fixture
def ha_env(ha: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on the module's cluster with a fresh prefix and var folder, exported for subprocesses."""
    monkeypatch.setenv("MBYN_BOOTSTRAP_SERVERS", ha.bootstrap)
    monkeypatch.setenv("MBYN_TOPIC_PREFIX", f"f{uuid.uuid4().hex[:10]}-")
    monkeypatch.setenv("MBYN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MBYN_CONSUMER_SESSION_TIMEOUT_S", "10")
    monkeypatch.delenv("MBYN_WAREHOUSE_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


# Helpers ---------------------------------------------------------------------------------------------------

@dataclass
class Proc:
    """A `mbyn ...` subprocess with stdout and stderr in files (no pipe can fill up and block it)."""

    name: str
    args: tuple[str, ...]
    folder: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def err(self) -> str:
        return (self.folder / f"{self.name}.err").read_text(errors="replace")

    def start(self) -> Proc:
        with (self.folder / f"{self.name}.out").open("wb") as out, (self.folder / f"{self.name}.err").open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", *self.args], stdout=out, stderr=err,
                                         env=self.env)
        return self

    def summary(self, timeout: float = 180) -> dict[str, Any]:
        """Wait for exit 0 and return the JSON summary (last stdout line)."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        assert code == 0, f"{self.name} exited {code}:\n{self.err[-4000:]}"
        lines = (self.folder / f"{self.name}.out").read_text().strip().splitlines()
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def kill(self) -> None:
        reap(self.proc, timeout=30)


def query(settings: Settings, sql: str) -> list[Any]:
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def loaded_event_ids(settings: Settings) -> list[str]:
    return [r[0] for r in query(settings, "SELECT event_id FROM clicks UNION ALL SELECT event_id FROM orders")]


def rows_so_far(settings: Settings) -> int:
    try:
        return len(loaded_event_ids(settings))
    except sa.exc.SQLAlchemyError:
        return 0  # the loader has not created the schema yet, or the database is down


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def records_on(settings: Settings, *logical: str) -> tuple[list[str], int]:
    """(event ids of the contract-valid records, number of other records) on the given topics."""
    ids: list[str] = []
    other = 0
    for name in logical:
        for r in read_all(settings.bootstrap(), settings.topic_prefix + name, timeout=60):
            try:
                value: Any = json.loads(r.value) if r.value is not None else None
                validate(name, value)
            except (ValueError, TypeError, ContractError):
                other += 1
                continue
            ids.append(str(value["event_id"]))
    return ids, other


def assert_loaded_exactly_once(settings: Settings) -> None:
    """Every contract-valid record on clickstream/orders is one warehouse row; positions are at the end."""
    on_topics, _ = records_on(settings, "clickstream", "orders")
    loaded = loaded_event_ids(settings)
    assert len(loaded) == len(set(loaded)), "an event id was loaded twice"
    missing, extra = set(on_topics) - set(loaded), set(loaded) - set(on_topics)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra, e.g. {sorted(missing)[:3]}"
    assert len(on_topics) == len(set(on_topics)), "the producer wrote a record twice"


# 1. A broker SIGKILLed under load ------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_of_a_broker_under_load_loses_no_acknowledged_record(ha: Cluster, ha_env: Settings,
                                                                      tmp_path: Path) -> None:
    from confluent_kafka.admin import ConfigResource

    from mbyn.kafka.admin import apply_topics
    from mbyn.kafka.clients import admin_client
    from mbyn.local import kafka as cluster

    apply_topics(ha_env)
    admin = admin_client(ha_env)
    clicks = ha_env.topic_prefix + "clickstream"
    wait_until(lambda: len(admin.list_topics(clicks, timeout=10).topics[clicks].partitions) == 6, 30,
               "the new topic's metadata")
    meta = admin.list_topics(clicks, timeout=10).topics[clicks]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, clicks)
    assert admin.describe_configs([resource])[resource].result()["min.insync.replicas"].value == "2"
    victim = meta.partitions[0].leader  # it leads partitions the generator is writing to

    loaders = [Proc(f"loader-{n}", ("consume", "warehouse-loader", "--idle-exit", "15"), tmp_path).start()
               for n in (1, 2)]
    generator = Proc("generator", ("produce", "clickstream", "--count", "4000", "--rate", "400", "--seed", "21",
                                   "--invalid-ratio", "0.01"), tmp_path).start()
    try:
        wait_until(lambda: rows_so_far(ha_env) > 200, 60, "the loaders to load the first rows")
        cluster.kill_node(ha.admin, victim)
        killed_at_rows = rows_so_far(ha_env)
        time.sleep(8)  # longer than nothing: the controller fences the node after broker.session.timeout (9 s)
        cluster.restart_node(ha.admin, victim, die_with_parent=True)
        produced = generator.summary()
        summaries = [copy.summary() for copy in loaders]
    finally:
        for p in (generator, *loaders):
            p.kill()

    assert produced["delivered"] == produced["records"] == 4000 and produced["failed"] == 0, produced
    assert produced["poison"] > 0
    assert rows_so_far(ha_env) > killed_at_rows
    for s in summaries:
        assert s["processed"] > 0, f"each copy loaded records: {summaries}"
    assert_loaded_exactly_once(ha_env)

    letters = Proc("dead-letters", ("consume", "dead-letters", "--idle-exit", "5"), tmp_path).start().summary()
    quarantined = query(ha_env, "SELECT count(*) FROM quarantine")[0][0]
    assert quarantined == produced["poison"] <= letters["consumed"]
    assert rows_so_far(ha_env) + quarantined == produced["delivered"], "every acknowledged record: a row or quarantined"


# 2. The broker is not there yet when the producer starts ------------------------------------------------

@pytest.mark.slow
def test_a_producer_started_before_the_broker_retries_quietly_and_loses_nothing(tmp_path: Path) -> None:
    from mbyn.kafka.admin import apply_topics
    from mbyn.local import kafka as cluster

    broker_port, controller_port = _two_free_blocks(1)
    late = load_settings(var_dir=tmp_path / "late" / "var", kafka_port=broker_port,
                         kafka_controller_port=controller_port, kafka_nodes=1, kafka_heap="384m",
                         kafka_lib_dir=PROJECT_ROOT / "var" / "kafka" / "lib")
    bootstrap = f"127.0.0.1:{broker_port}"
    prefix = f"late{uuid.uuid4().hex[:8]}-"
    env = {**os.environ, "MBYN_BOOTSTRAP_SERVERS": bootstrap, "MBYN_TOPIC_PREFIX": prefix,
           "MBYN_VAR_DIR": str(tmp_path / "var")}
    # Installed and formatted beforehand, so that starting it later is only the JVM start.
    plan = cluster.plan_nodes(late, 1)
    plan[0].home.mkdir(parents=True)
    (plan[0].home / "server.properties").write_text(cluster.server_properties(plan[0], plan))
    cluster.format_storage(late, plan, 1)
    producer = Proc("generator", ("produce", "clickstream", "--count", "3000", "--seed", "4"), tmp_path, env).start()
    try:
        wait_until(lambda: "unreachable (attempt 1)" in producer.err, 60, "the producer's first retry line")
        cluster.up(late, nodes=1, die_with_parent=True)
        try:
            apply_topics(load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, var_dir=tmp_path / "var"))
            summary = producer.summary()
            settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, var_dir=tmp_path / "var")
            ids, other = records_on(settings, "clickstream", "orders")
        finally:
            cluster.down(late)
    finally:
        producer.kill()

    assert summary["delivered"] == summary["records"] == 3000 and summary["failed"] == 0, summary
    assert len(ids) == len(set(ids)) == 3000 and other == 0, "every record once, nothing lost"
    err = producer.err
    attempts = [int(n) for n in re.findall(r"unreachable \(attempt (\d+)\)", err)]
    assert attempts == list(range(1, len(attempts) + 1)), f"one line per attempt, in order: {attempts}"
    assert "reachable now" in err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 2 * len(attempts) + 5, "no flood of client log lines while waiting:\n" + "\n".join(lines)


# 3. Postgres restarts while the loader writes ------------------------------------------------------------

@pytest.mark.slow
def test_postgres_restart_mid_run_is_retried_without_loss_or_duplicates(ha_env: Settings, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mbyn.kafka.admin import apply_topics
    from mbyn.local import postgres as postgres_local
    from tests.plugins.postgres import free_port, private_var_dir

    apply_topics(ha_env, names=["clickstream", "orders", "dead-letters"])
    with private_var_dir("mbyn-pg-fault-") as pg_var:
        pg = load_settings(var_dir=pg_var, postgres_port=free_port())
        url = postgres_local.up(pg)
        try:
            monkeypatch.setenv("MBYN_WAREHOUSE_URL", url)
            get_settings.cache_clear()
            settings = get_settings()
            generator = Proc("generator", ("produce", "clickstream", "--count", "5000", "--rate", "500",
                                           "--seed", "8"), tmp_path).start()
            # Down longer than --idle-exit: time spent retrying a batch must not count as idle.
            loader = Proc("loader", ("consume", "warehouse-loader", "--idle-exit", "5"), tmp_path).start()
            try:
                wait_until(lambda: rows_so_far(settings) > 300, 60, "the loader to write the first rows")
                postgres_local.down(pg)
                clicks = settings.topic_prefix + "clickstream"
                produced_at_outage = len(read_all(settings.bootstrap(), clicks, timeout=30))
                time.sleep(6)
                postgres_local.up(pg)
                produced = generator.summary()
                summary = loader.summary()
            finally:
                generator.kill()
                loader.kill()
            assert produced["delivered"] == 5000 and produced["failed"] == 0
            assert summary["retries"] >= 1, "the loader saw the outage and retried"
            assert "sink unavailable" in loader.err and "retrying the batch" in loader.err
            assert "Traceback" not in loader.err
            assert produced_at_outage < 5000, "the outage happened while records were still coming"
            assert_loaded_exactly_once(settings)
            assert rows_so_far(settings) == 5000
        finally:
            postgres_local.down(pg)


# 4. The public API is down or returns garbage --------------------------------------------------------------

@dataclass
class FakeEcb:
    """A real local HTTP server answering each path with a (status, body) set by the test."""

    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    url: str = ""
    requests: int = 0


@pytest.fixture
def ecb() -> Iterator[FakeEcb]:
    state = FakeEcb()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            status, body = state.answers.get(self.path.lstrip("/"), (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _history_with_a_bad_last_day() -> bytes:
    """The recorded 90-day file with one rate of its oldest day (the last <Cube time>) made negative."""
    from mbyn.sources.fx_rates import FIXTURES_DIR, HISTORY_FILE

    text = (FIXTURES_DIR / HISTORY_FILE).read_text()
    last_day = text.rindex("<Cube time=")
    head, tail = text[:last_day], text[last_day:]
    return (head + re.sub(r"rate='([0-9.]+)'", r"rate='-\1'", tail, count=1)).encode()


GARBAGE = {
    "http_503": (503, b"Service Unavailable", "HTTP 503"),
    "html_maintenance_page": (200, b"<html><body>Down for maintenance</body></html>", "not an ECB gesmes:Envelope"),
    "empty_body": (200, b"", "malformed XML"),
    "json_instead_of_xml": (200, b'{"rates": {"USD": 1.1}}', "malformed XML"),
    "truncated_xml": (200, b"<?xml version='1.0'?><gesmes:Envelope xmlns:gesmes="
                      b"'http://www.gesmes.org/xml/2002-08-01'><Cube><Cube time='2026-11-20'>"
                      b"<Cube currency='USD' rate='1.0", "malformed XML"),
    "bad_rate_on_the_last_day": (200, None, "must be a positive number"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", [*GARBAGE, "connection_refused"])
def test_a_bad_api_answer_raises_source_error_and_publishes_nothing(ha_env: Settings, ecb: FakeEcb,
                                                                    monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    from mbyn.kafka.admin import apply_topics
    from mbyn.sources.fx_rates import DAILY_FILE, FIXTURES_DIR, HISTORY_FILE, publish_fx_rates

    apply_topics(ha_env, names=["fx-rates"])
    monkeypatch.setenv("MBYN_FX_URL", ecb.url)
    monkeypatch.setenv("MBYN_FX_TIMEOUT_S", "2")
    monkeypatch.setenv("MBYN_FX_ATTEMPTS", "2")
    get_settings.cache_clear()
    settings = get_settings()
    ecb.answers[DAILY_FILE] = (200, (FIXTURES_DIR / DAILY_FILE).read_bytes())
    first = publish_fx_rates(settings, history=False)
    assert first["delivered"] == first["records"] > 0
    topic = settings.topic_prefix + "fx-rates"
    state_file = settings.state_dir / "fx-rates.json"
    state_before = state_file.read_bytes()
    on_topic_before = len(read_all(settings.bootstrap(), topic, timeout=30))

    if case == "connection_refused":
        with __import__("socket").socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            monkeypatch.setenv("MBYN_FX_URL", f"http://127.0.0.1:{s.getsockname()[1]}/")
        get_settings.cache_clear()
        settings, problem = get_settings(), "connection failed"
    else:
        status, body, problem = GARBAGE[case]
        ecb.answers[HISTORY_FILE] = (status, body if body is not None else _history_with_a_bad_last_day())
    with pytest.raises(SourceError, match=re.escape(problem)) as raised:
        publish_fx_rates(settings, history=True)
    assert HISTORY_FILE in str(raised.value), "the error names the URL"
    assert len(read_all(settings.bootstrap(), topic, timeout=30)) == on_topic_before, "nothing half-published"
    assert state_file.read_bytes() == state_before, "the state is unchanged"


def test_the_fx_dag_retries_its_task() -> None:
    """When publish_fx_rates raises, Airflow retries the task (after a delay) rather than giving up."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=PROJECT_ROOT / "dags" / "fx_rates_hourly.py")
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["fx_rates_hourly"]
    assert dag.default_args["retries"] >= 1
    assert dag.default_args["retry_delay"].total_seconds() >= 30
    task = dag.get_task("publish_fx_rates")
    assert task.retries == dag.default_args["retries"]
