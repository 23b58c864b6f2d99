"""Lag objectives and lag alerts without a broker: the evaluator (raise after N rounds, clear, once per transition,
hostile and empty samples), the open alerts kept across restarts, the alert envelope against the catalog, the
lag incident report (chart, members, last error lines, cleared) and the watcher's filter on hostile values."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mbyn.consumers.lag_objectives import (
    LagObjectives,
    Transition,
    check_options,
    clean,
    load_open,
    objectives,
    save_open,
)
from mbyn.consumers.lag_state import summarise
from mbyn.contracts.codec import decode_record
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.producer import encode_valid
from mbyn.settings import Settings, get_settings
from mbyn.workers import WORKERS

G = "p-warehouse-loader"


def row(group: str = G, lag: Any = 5, members: Any = 1, seconds: Any = 1.0, held: Any = 0, **more: Any) -> dict:
    return {"consumer_group": group, "topic": "p-orders", "partition": 0, "end_offset": 100, "lag": lag,
            "held": held, "members": members, "lag_seconds": seconds, **more}


def judge(evaluator: LagObjectives, *rows: Any) -> list[Transition]:
    """One round: the transitions it gives, confirmed (as if sent)."""
    found = evaluator.evaluate(summarise(clean(rows)))
    for t in found:
        evaluator.confirm(t)
    return found


# The evaluator ----------------------------------------------------------------------------------------------


def test_every_reading_group_declares_an_objective_above_what_it_holds() -> None:
    groups = objectives("p-")
    assert groups[G] == 30.0
    assert {w.name for w in WORKERS.values() if w.groups and w.lag_objective_s is None} == set()
    assert groups["p-fraud-detector"] > 120, "above the fraud-detector's join window (--timeout 120 s)"


def test_raised_after_two_rounds_over_once_then_cleared_after_two_rounds_under() -> None:
    evaluator = LagObjectives({G: 30.0})
    assert judge(evaluator, row(seconds=45.0)) == [], "one round over the objective raises nothing"
    (raised,) = judge(evaluator, row(seconds=50.0))
    assert raised.state == "raised" and "over 30 s" in raised.reason and raised.lag.lag_seconds == 50.0
    assert judge(evaluator, row(seconds=80.0)) == [] == judge(evaluator, row(seconds=90.0)), "once per transition"
    assert judge(evaluator, row(seconds=1.0)) == [], "one good round does not clear"
    assert judge(evaluator, row(seconds=95.0)) == [], "... and a bad one after it raises nothing new"
    judge(evaluator, row(seconds=0.0))
    (cleared,) = judge(evaluator, row(seconds=0.0, lag=0))
    assert cleared.state == "cleared" and cleared.alert == raised.alert, "the clearance names the raised alert"
    assert evaluator.open_alerts == {}
    assert [t.state for t in (judge(evaluator, row(seconds=99.0)) + judge(evaluator, row(seconds=99.0)))] == [
        "raised"], "a new incident is a new alert"
    assert evaluator.open_alerts[G].alert_id != raised.alert.alert_id


def test_no_live_member_while_records_wait_breaches_whatever_the_objective() -> None:
    evaluator = LagObjectives({G: 1e9})
    judge(evaluator, row(members=0, seconds=None))
    (raised,) = judge(evaluator, row(members=0, seconds=None))
    assert "no live member" in raised.reason and raised.state == "raised"
    # nothing waits (every record of the lag held by design): not stuck, even without members
    quiet = LagObjectives({G: 1.0})
    assert judge(quiet, row(members=0, held=5)) == [] == judge(quiet, row(members=0, held=5))


def test_unknown_seconds_or_undeclared_groups_raise_nothing() -> None:
    evaluator = LagObjectives({G: 1.0})
    rounds = [row(seconds=None), row(group="p-airflow-batch", members=0, seconds=500.0)]
    assert judge(evaluator, *rounds) == [] == judge(evaluator, *rounds) == judge(evaluator, *rounds)
    every = LagObjectives({}, default=1.0)  # --objective 1: every group of the prefix is judged
    judge(every, rounds[1])
    assert [t.lag.group for t in judge(every, rounds[1])] == ["p-airflow-batch"]


def test_an_unsent_transition_is_offered_again_next_round() -> None:
    evaluator = LagObjectives({G: 1.0})
    evaluator.evaluate(summarise(clean([row(seconds=5.0)])))
    first = evaluator.evaluate(summarise(clean([row(seconds=5.0)])))
    assert [t.state for t in first] == ["raised"]  # not confirmed: the send failed
    again = evaluator.evaluate(summarise(clean([row(seconds=5.0)])))
    assert [t.state for t in again] == ["raised"]


def test_hostile_and_empty_samples_never_raise_or_crash() -> None:
    hostile = [None, 42, "row", {}, {"consumer_group": ""}, {"consumer_group": 7, "lag": 5},
               row(lag=-5, seconds=math.nan), row(lag=True, seconds=math.inf), row(lag="9", seconds="12"),
               row(lag=None, members=None, seconds=-3.0, held=None), row(lag=2**70, seconds=1e308, members=3)]
    cleaned = clean(hostile)
    assert [r["consumer_group"] for r in cleaned] == [G] * 5
    assert all(r["lag_seconds"] is None or math.isfinite(r["lag_seconds"]) for r in cleaned)
    evaluator = LagObjectives({G: 30.0})
    assert judge(evaluator) == [] == judge(evaluator, *hostile[:6]), "empty rounds: nothing to raise"
    judge(evaluator, *hostile)
    (raised,) = judge(evaluator, *hostile)  # the one sane huge row is over its objective
    payload = raised.payload(["m"] * 500)
    envelope = make_envelope("lag_alert", payload, "lag-monitor")
    encode_valid("ops-alerts", envelope)  # within the catalog's bounds (seconds capped, 100 members)
    assert len(payload["members"]) == 100 and payload["seconds"] == 1e9
    # a group that disappears from the samples is no longer breaching: cleared after two empty rounds
    assert judge(evaluator) == [] and [t.state for t in judge(evaluator)] == ["cleared"]


def test_bad_options_are_refused_naming_the_option() -> None:
    for objective, rounds, name in ((-1.0, 2, "--objective"), (math.nan, 2, "--objective"),
                                    (1e12, 2, "--objective"), (5.0, 0, "--alert-rounds")):
        with pytest.raises(SystemExit, match=name):
            check_options(objective, rounds)
    check_options(None, 2)


def test_open_alerts_survive_a_restart_and_a_broken_file_starts_afresh(tmp_path: Path) -> None:
    evaluator = LagObjectives({G: 1.0})
    judge(evaluator, row(seconds=9.0))
    judge(evaluator, row(seconds=9.0))
    path = tmp_path / "lag-alerts.json"
    save_open(path, evaluator.open_alerts)
    restarted = LagObjectives({G: 1.0}, open_alerts=load_open(path))
    assert judge(restarted, row(seconds=9.0)) == [] == judge(restarted, row(seconds=9.0)), "not raised twice"
    assert [t.state for t in judge(restarted, row(lag=0)) + judge(restarted, row(lag=0))] == ["cleared"]
    for broken in ("{not json", "[1, 2]", '{"g": {"alert_id": 1}}', '{"g": {"alert_id": "x", "raised_at": "t", '
                   '"objective_s": "nan"}}', '{"g": null}'):
        path.write_text(broken)
        assert load_open(path) == {}
    assert load_open(tmp_path / "missing.json") == {}


# The alert on the topic -------------------------------------------------------------------------------------


def lag_envelope(state: str = "raised", group: str = G, alert_id: str | None = None, **payload: Any) -> dict:
    body = {"alert_id": alert_id or str(uuid.uuid4()), "state": state, "group": group, "lag": 42,
            "seconds": 75.0, "objective_s": 30.0, "members": [], "reason": "no live member while 42 record(s) wait",
            "raised_at": "2026-12-05T06:00:00Z", **payload}
    return dict(make_envelope("lag_alert", body, "lag-monitor"))


def test_a_transition_is_a_valid_lag_alert_record() -> None:
    evaluator = LagObjectives({G: 30.0})
    judge(evaluator, row(seconds=31.5))
    (raised,) = judge(evaluator, row(seconds=31.5))
    value = encode_valid("ops-alerts", make_envelope("lag_alert", raised.payload(["c m h"]), "lag-monitor"))
    decoded = decode_record("ops-alerts", G.encode(), value)
    assert decoded is not None and decoded["payload"]["group"] == G and decoded["payload"]["members"] == ["c m h"]


HOSTILE: dict[str, Any] = {
    "no value": None, "empty": b"", "not json": b"nope", "invalid utf-8": b'{"a": "\xff"}', "NaN": b'{"x": NaN}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000, "an int": 42, "text": "not json",
    "a fraud alert": json.dumps(make_envelope("fraud_alert", {"alert_id": "A-1", "kind": "order_velocity",
                                                              "severity": "low", "details": ""}, "x")).encode(),
    "unknown state": json.dumps(lag_envelope(state="exploded")).encode(),
    "negative lag": json.dumps(lag_envelope(lag=-1)).encode(),
    "script in group": json.dumps(lag_envelope(group="<script>" + "x" * 300)).encode(),
}


def test_the_lag_alert_filter_fires_valid_alerts_and_skips_every_hostile_value(monkeypatch: pytest.MonkeyPatch,
                                                                              ) -> None:
    from mbyn.orchestration import triggers

    rejected: list[int] = []
    monkeypatch.setattr(triggers, "reject_shared_stream_event", lambda: rejected.append(1))
    good = [lag_envelope(), lag_envelope(state="cleared", seconds=None)]
    values = [json.dumps(good[0]).encode(), *HOSTILE.values(), json.dumps(good[1]).encode()]

    async def stream() -> AsyncIterator[Any]:
        for value in values:
            yield value

    async def collect() -> list[Any]:
        trigger = triggers.LagAlertStreamTrigger(topics=["ops-alerts"], kafka_config_id="kafka_lag_alerts")
        return [event.payload async for event in trigger.filter_shared_stream(stream())]

    assert asyncio.run(collect()) == good
    assert len(rejected) == len(HOSTILE)
    assert triggers.LagAlertStreamTrigger(topics=["t"]).serialize()[0] == \
        "mbyn.orchestration.triggers.LagAlertStreamTrigger"
    assert triggers.AlertStreamTrigger(topics=["t"]).serialize()[0] == "mbyn.orchestration.triggers.AlertStreamTrigger"


# The report -------------------------------------------------------------------------------------------------


@pytest.fixture
def report_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("MBYN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MBYN_TOPIC_PREFIX", "p-")
    monkeypatch.delenv("MBYN_WAREHOUSE_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_report_has_the_trend_members_last_errors_and_is_marked_cleared(report_env: Settings) -> None:
    from mbyn.orchestration.lag_alerts import handle_lag_alert_events, report_path
    from mbyn.warehouse.engine import init_schema, warehouse_engine
    from mbyn.warehouse.schema import lag_samples

    engine = warehouse_engine(report_env)
    init_schema(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(lag_samples.insert(), [
            {"sampled_at": now - timedelta(seconds=60 - 5 * i), "consumer_group": G, "topic": "p-orders",
             "partition": p, "end_offset": 100, "committed_offset": 10, "lag": 10 * i, "lag_seconds": 4.0 * i}
            for i in range(12) for p in (0, 1)])
    engine.dispose()
    logs = report_env.logs_dir / "workers"
    logs.mkdir(parents=True)
    (logs / "warehouse-loader-0.log").write_text("started\nERROR sink failed: <disk full>\nretrying\n")

    alert_id = str(uuid.uuid4())
    raised = lag_envelope(alert_id=alert_id, members=["mbyn-warehouse-loader wl-0-abc 127.0.0.1"])
    (path,) = handle_lag_alert_events([{"payload": raised}, {"payload": "junk"}, None], report_env, run_id="r1")
    assert path == str(report_path(report_env, alert_id))
    page = Path(path).read_text()
    assert f"group {G}" in page and "<svg" in page and "<polyline" in page and "objective 30 s" in page
    assert "wl-0-abc" in page and "ERROR sink failed: &lt;disk full&gt;" in page
    assert "warehouse-loader-1</th><td><code>no log" in page, "a copy without a log says so"
    assert "Raised: no live member" in page and "mbyn run --scale consume:warehouse-loader=N" in page

    cleared = lag_envelope(state="cleared", alert_id=alert_id, reason="back under its objective", lag=0)
    handle_lag_alert_events([{"payload": cleared}], report_env)
    page = Path(path).read_text()
    assert 'content="cleared"' in page and "Cleared at" in page and "When raised" in page
    assert "no live member while 42" in page, "the section written when raised is kept"
    handle_lag_alert_events([{"payload": raised}], report_env)  # redelivered raise after the clearance
    assert 'content="cleared"' in Path(path).read_text()


def test_report_without_warehouse_or_worker_still_says_what_it_knows(report_env: Settings) -> None:
    from mbyn.orchestration.lag_alerts import write_lag_report

    page = write_lag_report(lag_envelope(group="p-<b>someone-else</b>"), report_env).read_text()
    assert "no warehouse yet" in page and "belongs to no registered worker" in page
    assert "<b>someone-else" not in page and "&lt;b&gt;" in page


def test_the_lag_incident_dag_is_driven_by_a_watched_ops_alerts_asset() -> None:
    from airflow.dag_processing.dagbag import DagBag

    from mbyn.orchestration.connections import LAG_ALERTS_CONN_ID, kafka_extra
    from mbyn.orchestration.triggers import LagAlertStreamTrigger
    from mbyn.settings import PROJECT_ROOT, load_settings

    bag = DagBag(dag_folder=PROJECT_ROOT / "dags" / "lag_incident_report.py")
    assert not bag.import_errors, bag.import_errors
    (asset,) = bag.dags["lag_incident_report"].schedule
    assert asset.name.endswith("ops-alerts")
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert isinstance(watcher.trigger, LagAlertStreamTrigger)
    assert classpath == "mbyn.orchestration.triggers.LagAlertStreamTrigger", "the triggerer imports this path"
    assert kwargs["topics"] == [asset.name] and kwargs["dlq_topic"] is None
    assert kwargs["kafka_config_id"] == LAG_ALERTS_CONN_ID
    extra = kafka_extra(load_settings(), LAG_ALERTS_CONN_ID)
    assert extra["enable.auto.commit"] is False and extra["group.id"].endswith("mbyn-lag-alert-watcher")
