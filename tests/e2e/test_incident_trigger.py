"""The event-driven incident DAG, for real: ``airflow standalone`` + triggerer + the Kafka asset watcher.

Fast tests first (the report writer; the trigger's filter on hostile values: tests/unit/test_triggers.py);
then ONE end-to-end test that starts the local Airflow with ``mbyn.local.airflow.up`` on free ports in a
temporary folder, writes a fraud alert (and one malformed record) to the alerts topic, waits for the incident
DAG run to reach ``success`` through the REST API, checks the report file and that the malformed record started
nothing, and stops Airflow leaving no process behind.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mbyn.settings import Settings, get_settings
from tests.helpers.kafka import read_all
from tests.plugins.airflow import standalone_settings

RUN_TIMEOUT_S = 240.0


def _alert(order_id: str | None = "O-4711", customer_id: str | None = "C000042", **overrides: Any) -> dict[str, Any]:
    from mbyn.contracts.envelope import make_envelope

    payload: dict[str, Any] = {"alert_id": f"A-{uuid.uuid4().hex[:12]}", "kind": "amount_mismatch",
                               "severity": "high", "details": "paid 12.00 EUR for an order of 120.00 EUR"}
    if order_id:
        payload["order_id"] = order_id
    if customer_id:
        payload["customer_id"] = customer_id
    payload.update(overrides)
    return dict(make_envelope("fraud_alert", payload, "fraud-detector"))


# The report writer ---------------------------------------------------------------------------------


@pytest.fixture
def report_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with a fresh var/ folder (SQLite warehouse, reports); no broker needed."""
    monkeypatch.setenv("MBYN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MBYN_WAREHOUSE_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_reports_are_one_file_per_alert_with_warehouse_context(report_env: Settings) -> None:
    from mbyn.orchestration.incidents import handle_alert_events, report_path
    from mbyn.warehouse.engine import init_schema, utc_now, warehouse_engine
    from mbyn.warehouse.schema import orders

    engine = warehouse_engine(report_env)
    init_schema(engine)
    with engine.begin() as conn:
        conn.execute(orders.insert().values(order_id="O-4711", event_id=str(uuid.uuid4()), customer_id="C000042",
                                            session_id="s1", country="DE", currency="EUR", amount=120.0,
                                            item_count=2, event_time=utc_now(), loaded_at=utc_now()))
    engine.dispose()
    first, second = _alert(), _alert(order_id=None, customer_id=None, kind="order_velocity", severity="low")
    redelivered = dict(first, event_id=str(uuid.uuid4()))

    events = [{"from_trigger": True, "payload": first},
              {"from_trigger": True, "payload": json.dumps(second)},  # the provider's plain-text form
              {"from_trigger": True, "payload": redelivered}]
    paths = handle_alert_events(events, report_env)

    assert sorted(paths) == sorted(str(report_path(report_env, a["payload"]["alert_id"])) for a in (first, second))
    assert sorted(p.name for p in (report_env.reports_dir / "incidents").iterdir()) == sorted(
        f"{a['payload']['alert_id']}.html" for a in (first, second))
    page = report_path(report_env, first["payload"]["alert_id"]).read_text()
    assert "paid 12.00 EUR" in page and "O-4711" in page and "120.0" in page, "order row missing from the report"
    assert redelivered["event_id"] in page, "the redelivered alert must overwrite the report"
    lone = report_path(report_env, second["payload"]["alert_id"]).read_text()
    assert "the alert names none" in lone


def test_report_without_warehouse_shows_the_alert_alone(report_env: Settings) -> None:
    from mbyn.orchestration.incidents import write_incident_report

    path = write_incident_report(_alert(details="<script>x</script>"), report_env)
    page = path.read_text()
    assert "no warehouse yet" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


# End to end ----------------------------------------------------------------------------------------


@pytest.fixture
def local_airflow(topics: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """A real ``airflow standalone`` for this test only: free ports, temporary var/, stopped afterwards.

    Its DAGs folder holds only the incident DAG, so the scheduled DAGs do not compete for the machine.
    """
    from mbyn.local import airflow as local

    settings = standalone_settings(monkeypatch)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(local.DAGS_FOLDER / "fraud_incident_report.py", dags)
    state = local.up(settings, dags_folder=dags)
    import psutil

    from mbyn.local.processes import descendants

    tree = {state.pid, *descendants(state.pid)}
    try:
        yield settings
        tree |= descendants(state.pid)
    finally:
        stopped = local.down(settings)
        survivors = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert stopped, "down() found no running Airflow"
        assert not survivors, f"processes left behind by `airflow standalone`: {survivors}"
        assert not local.state_file(settings).exists()


def _wait_for(what: str, check: Any, timeout: float, log_file: str) -> Any:
    """Poll ``check`` until it returns something truthy; an API that is slow to answer counts as "not yet"."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(2)
    tail = "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-60:])
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; end of {log_file}:\n{tail}")


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.slow
def test_an_alert_on_kafka_starts_the_incident_dag(local_airflow: Settings) -> None:
    from mbyn.local import airflow as local

    settings = local_airflow
    logs = str(local.log_file(settings))
    with local.api_client(settings) as client:
        _run_incident_flow(settings, client, logs)


def _run_incident_flow(settings: Settings, client: Any, logs: str) -> None:
    from mbyn.kafka.producer import TopicProducer
    from mbyn.orchestration.incidents import report_path

    dag_id = "fraud_incident_report"

    def dag_active() -> bool:
        response = client.get(f"/api/v2/dags/{dag_id}")
        return response.status_code == 200 and not response.json()["is_paused"]

    _wait_for(f"{dag_id} to be parsed and unpaused", dag_active, RUN_TIMEOUT_S, logs)

    alert = _alert()
    producer = TopicProducer("test-fraud-detector", settings)
    producer.send_raw(settings.topic_prefix + "alerts", b"definitely not an alert", b"junk")
    assert producer.send("alerts", alert, key=alert["payload"]["alert_id"])
    producer.flush_or_raise()
    producer.close()

    def finished_run() -> dict[str, Any] | None:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return done[0] if done else None

    run = _wait_for("an incident DAG run to finish", finished_run, RUN_TIMEOUT_S, logs)
    if run["state"] != "success":
        tis = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances").json()
        pytest.fail(f"run {run['dag_run_id']} is {run['state']}: {json.dumps(tis, indent=1)[:3000]}")
    assert run["run_type"] == "asset_triggered"

    path = report_path(settings, alert["payload"]["alert_id"])
    assert path.exists(), f"no report at {path}"
    assert alert["payload"]["details"] in path.read_text()
    # The malformed record was skipped by the watcher's filter: no run of its own, no report, and no dead
    # letter from the watcher (the warehouse-loader quarantines it; see mbyn.orchestration.triggers).
    runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
    assert len(runs) == 1, f"expected one run (the alert's), got {[r['dag_run_id'] for r in runs]}"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert read_all(settings.bootstrap(), settings.topic_prefix + "dead-letters") == []
