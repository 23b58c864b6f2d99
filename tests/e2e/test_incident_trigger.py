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
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mbyn.settings import Settings, get_settings
from tests.helpers.kafka import read_all
from tests.helpers.processes import wait_for
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


@pytest.mark.integration
def test_the_lag_report_draws_its_trend_from_postgresql_too(report_env: Settings, postgres_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from mbyn.contracts.envelope import make_envelope
    from mbyn.orchestration.lag_alerts import lag_history, write_lag_report
    from mbyn.warehouse.engine import init_schema, warehouse_engine
    from mbyn.warehouse.schema import lag_samples

    monkeypatch.setenv("MBYN_WAREHOUSE_URL", postgres_url)
    get_settings.cache_clear()
    settings = get_settings()
    engine = warehouse_engine(settings)
    init_schema(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(lag_samples.insert(), [
            {"sampled_at": now - timedelta(seconds=50 - 5 * i), "consumer_group": "g", "topic": "t", "partition": p,
             "end_offset": 100, "committed_offset": 10, "lag": 10 * i, "lag_seconds": 3.0 * i + p}
            for i in range(10) for p in (0, 1)])
    engine.dispose()

    points, note = lag_history(settings, "g", now - timedelta(minutes=5))
    assert [(n, s) for _, n, s in points] == [(20 * i, 3.0 * i + 1) for i in range(10)] and note == ""
    assert all(t.tzinfo is not None for t, _, _ in points)
    body = {"alert_id": "A-1", "state": "raised", "group": "g", "lag": 180, "seconds": 28.0, "objective_s": 20.0,
            "members": [], "reason": "over", "raised_at": (now - timedelta(seconds=10)).isoformat()}
    page = write_lag_report(make_envelope("lag_alert", body, "lag-monitor"), settings).read_text()
    assert page.count("<polyline") == 2 and "objective 20 s" in page and ">raised</text>" in page


# End to end ----------------------------------------------------------------------------------------


#: The event-driven DAGs one module-scoped ``airflow standalone`` serves (the scheduled DAGs stay out).
DAG_FILES = ("fraud_incident_report.py", "lag_incident_report.py")


@pytest.fixture(scope="module")
def local_airflow(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """ONE real ``airflow standalone`` for the tests of this module: free ports, a temporary var/, a topic prefix
    of its own, stopped afterwards leaving no process behind (each standalone costs about a minute).

    Its DAGs folder holds only the event-driven DAGs, so the scheduled DAGs do not compete for the machine.
    """
    import psutil

    from mbyn.kafka.admin import apply_topics
    from mbyn.local import airflow as local
    from mbyn.local.processes import descendants

    root = tmp_path_factory.mktemp("incident-airflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MBYN_BOOTSTRAP_SERVERS", kafka_bootstrap)
        patch.setenv("MBYN_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}-")
        patch.setenv("MBYN_VAR_DIR", str(root / "var"))
        patch.delenv("MBYN_WAREHOUSE_URL", raising=False)
        settings = standalone_settings(patch)
        apply_topics(settings)
        dags = root / "dags"
        dags.mkdir()
        for name in DAG_FILES:
            shutil.copy(local.DAGS_FOLDER / name, dags)
        state = local.up(settings, dags_folder=dags)
        tree = {state.pid, *descendants(state.pid)}
        try:
            yield settings
            tree |= descendants(state.pid)
        finally:
            stopped = local.down(settings)
            survivors = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            get_settings.cache_clear()
            assert stopped, "down() found no running Airflow"
            assert not survivors, f"processes left behind by `airflow standalone`: {survivors}"
            assert not local.state_file(settings).exists()


@pytest.fixture
def airflow(local_airflow: Settings) -> Settings:
    """``local_airflow``, with the settings cache cleared (a test before may have cached other settings)."""
    get_settings.cache_clear()
    assert get_settings().topic_prefix == local_airflow.topic_prefix
    return local_airflow


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.slow
def test_an_alert_on_kafka_starts_the_incident_dag(airflow: Settings) -> None:
    from mbyn.local import airflow as local

    settings = airflow
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

    wait_for(f"{dag_id} to be parsed and unpaused", dag_active, RUN_TIMEOUT_S, logs)

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

    run = wait_for("an incident DAG run to finish", finished_run, RUN_TIMEOUT_S, logs)
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


# Lag alerts --------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.slow
def test_a_group_with_waiting_records_and_no_member_starts_the_lag_incident_dag(airflow: Settings) -> None:
    """A stopped warehouse-loader (committed offsets, no live member) while orders wait: the lag-monitor raises a
    lag alert on ops-alerts after two rounds, the watcher starts the lag incident DAG and its report names the
    group and draws the trend; the copies' (missing) logs say "no log". Once it has caught up, a lag-monitor
    started afresh clears the alert (once) and the next run marks the report cleared."""
    from confluent_kafka import Producer, TopicPartition

    from mbyn.consumers.lag_monitor import monitor
    from mbyn.local import airflow as local
    from mbyn.orchestration.lag_alerts import report_path
    from tests.helpers.kafka import commit_offsets, end_offsets

    settings = airflow
    logs = str(local.log_file(settings))
    dag_id = "lag_incident_report"
    group = settings.topic_prefix + "warehouse-loader"
    orders = settings.topic_prefix + "orders"
    with local.api_client(settings) as client:
        def dag_active() -> bool:
            response = client.get(f"/api/v2/dags/{dag_id}")
            return response.status_code == 200 and not response.json()["is_paused"]

        wait_for(f"{dag_id} to be parsed and unpaused", dag_active, RUN_TIMEOUT_S, logs)

        # the loader ran once (committed at the start) and stopped; then orders arrived
        commit_offsets(settings.bootstrap(), group, [TopicPartition(orders, p, 0) for p in range(6)])
        producer = Producer({"bootstrap.servers": settings.bootstrap()})
        for i in range(12):
            producer.produce(orders, b"{}", f"k{i}".encode())
        assert producer.flush(30) == 0

        summary = monitor(settings, interval=0.5, duration=2.5)
        assert summary["rounds"] >= 2 and summary["lag_alerts"] == 1, summary
        (alert,) = [json.loads(r.value) for r in read_all(settings.bootstrap(), settings.topic_prefix + "ops-alerts")]
        assert alert["payload"]["group"] == group and alert["payload"]["state"] == "raised"
        assert alert["payload"]["lag"] == 12 and alert["payload"]["members"] == []

        def finished_runs(count: int) -> list[dict[str, Any]] | None:
            runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return done if len(done) >= count else None

        def assert_succeeded(runs: list[dict[str, Any]]) -> None:
            for run in runs:
                if run["state"] != "success":
                    tis = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances").json()
                    pytest.fail(f"run {run['dag_run_id']} is {run['state']}: {json.dumps(tis, indent=1)[:3000]}")
                assert run["run_type"] == "asset_triggered"

        assert_succeeded(wait_for("a lag incident DAG run to finish", lambda: finished_runs(1), RUN_TIMEOUT_S, logs))
        path = report_path(settings, alert["payload"]["alert_id"])
        assert path.exists(), f"no report at {path}"
        page = path.read_text()
        assert f"group {group}" in page and "12 record(s) waiting and no live member" in page
        assert "<svg" in page and "<polyline" in page, "the lag trend chart (from lag_samples) is missing"
        assert "warehouse-loader-0</th><td><code>no log" in page

        # the loader caught up: a lag-monitor started afresh (its open alert kept in var/state) clears it, once
        commit_offsets(settings.bootstrap(), group, [TopicPartition(orders, p, end) for (_, p), end in
                                                     end_offsets(settings, ["orders"]).items()])
        summary = monitor(settings, interval=0.5, duration=2.5)
        assert summary["lag_alerts"] == 1, summary
        alerts = [json.loads(r.value) for r in read_all(settings.bootstrap(), settings.topic_prefix + "ops-alerts")]
        assert [(a["payload"]["alert_id"], a["payload"]["state"]) for a in alerts] == [
            (alert["payload"]["alert_id"], "raised"), (alert["payload"]["alert_id"], "cleared")]
        assert_succeeded(wait_for("the clearance's DAG run", lambda: finished_runs(2), RUN_TIMEOUT_S, logs))
    page = path.read_text()
    assert 'content="cleared"' in page and "Cleared at" in page and "12 record(s) waiting" in page
