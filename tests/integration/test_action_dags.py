"""The action DAGs the pipeline view triggers, run with ``dag.test()`` against the real broker and warehouse.

* ``quarantine_resend``: a quarantined order goes back to ``orders`` (key, value, headers, ``mbyn.replay_of``),
  a loader run loads it into the warehouse, and it is marked replayed — on SQLite and on PostgreSQL. Hostile ids
  (one that does not exist, one re-sent already, SQL) fail or are refused with the param named; nothing is sent.
* ``topic_test_message``: ``count`` fresh messages on the topic, each valid by the contract; a topic without a
  template fails the run, and a count beyond the bound is refused; nothing is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mbyn.consumers.dead_letters import DeadLetterSink
from mbyn.consumers.runtime import run_consumer
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.contracts.codec import decode_record
from mbyn.errors import ActionError
from mbyn.orchestration.actions import resend_quarantined, send_test_messages
from mbyn.orchestration.message_templates import HEADER, SOURCE
from mbyn.settings import Settings, get_settings
from tests.e2e.test_report_replay_dags import return_value
from tests.helpers.dead_letters import dead_letter_an_order
from tests.helpers.kafka import read_all
from tests.integration.test_reports import query
from tests.plugins.airflow import failed_tasks

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def quarantine_an_order(settings: Settings) -> tuple[int, dict[str, Any]]:
    """A valid order the warehouse once refused, dead-lettered as a consumer does and quarantined by the real
    dead-letters sink; (its quarantine id, the order)."""
    order = dead_letter_an_order(settings, "O-RESEND-1", offset=0, headers=[("trace_id", b"t-resend")])
    run_consumer(DeadLetterSink(settings), settings, idle_exit=2)
    [(qid,)] = query(settings, "SELECT id FROM quarantine")
    return int(qid), order


def refused_at_trigger(dag: Any, conf: dict[str, Any], param: str) -> None:
    """``conf`` breaks the DAG's params: Airflow's trigger (REST API, UI, ``dag.test``) refuses it before a run
    exists — the check ``create_dagrun`` makes (merge the conf into the params, validate), without parsing the whole
    DAGs folder for it as ``dag.test`` would."""
    from airflow.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match=f"param {param}"):
        params.update(conf)
        params.validate()


def failed_run(load_dag: Callable[[str], Any], dag_id: str, conf: dict[str, Any]) -> None:
    dag = load_dag(dag_id)
    dag_run = dag.test(run_conf=conf)
    assert dag_run.state == "failed", f"{dag_id} {conf}: expected a failed run, got {dag_run.state}"
    assert "=failed" in failed_tasks(dag_run)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, airflow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``airflow_env`` with the warehouse on its fresh SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "postgres":
        monkeypatch.setenv("MBYN_WAREHOUSE_URL", request.getfixturevalue("postgres_url"))
        get_settings.cache_clear()
    return get_settings()


def test_quarantine_resend_sends_the_record_back_and_the_loader_loads_it(
        backend: Settings, run_dag: Callable[..., Any], load_dag: Callable[[str], Any]) -> None:
    settings = backend
    orders = settings.topic_prefix + "orders"
    qid, order = quarantine_an_order(settings)

    # Hostile or impossible ids: refused before anything is sent.
    with pytest.raises(ActionError, match=rf"^ids: no quarantined record has id {qid + 1000}; nothing was re-sent"):
        resend_quarantined(settings, [qid, qid + 1000])
    failed_run(load_dag, "quarantine_resend", {"ids": [qid, qid + 1000]})
    dag = load_dag("quarantine_resend")
    for hostile in (["1; DROP TABLE quarantine"], "1 OR 1=1", [10**12], [], None):
        refused_at_trigger(dag, {"ids": hostile}, "ids")
    assert read_all(settings.bootstrap(), orders) == [], "a refused request must send nothing"

    dag_run = run_dag("quarantine_resend", conf={"ids": [qid]})
    assert return_value(dag_run, "resend_quarantined") == {"ids": [qid], "resent": 1, "topics": {orders: 1}}
    [back] = read_all(settings.bootstrap(), orders, expect=1)
    assert (back.key, back.json()) == (b"O-RESEND-1", order)
    assert back.headers["mbyn.replay_of"] == str(qid).encode() and back.headers["trace_id"] == b"t-resend"
    assert query(settings, "SELECT count(*) FROM quarantine WHERE replayed_at IS NOT NULL") == [(1,)]

    run_consumer(WarehouseLoader(settings), settings, idle_exit=2)
    assert query(settings, "SELECT order_id, event_id FROM orders") == [("O-RESEND-1", order["event_id"])]

    with pytest.raises(ActionError, match=rf"^ids: {qid} \(at .*\) were re-sent already"):
        resend_quarantined(settings, [qid])
    failed_run(load_dag, "quarantine_resend", {"ids": [qid]})
    assert len(read_all(settings.bootstrap(), orders)) == 1, "a record is re-sent once"


def test_topic_test_message_sends_valid_fresh_messages(airflow_env: Settings, run_dag: Callable[..., Any],
                                                        load_dag: Callable[[str], Any]) -> None:
    dag_run = run_dag("topic_test_message", conf={"topic": "orders", "count": 3})

    summary = return_value(dag_run, "send_test_messages")
    records = read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "orders", expect=3)
    assert len(records) == 3 and summary["sent"] == 3
    envelopes = [decode_record("orders", r.key, r.value) for r in records]  # raises if one breaks the contract
    assert sorted(e["event_id"] for e in envelopes) == sorted(summary["event_ids"])  # type: ignore[index]
    assert len(set(summary["event_ids"])) == 3 and len({r.key for r in records}) == 3
    assert all(e["source"] == SOURCE and e["payload"]["country"] == "ZZ" for e in envelopes)  # type: ignore[index]
    assert all(r.headers[HEADER] == b"true" for r in records)

    failed_run(load_dag, "topic_test_message", {"topic": "payments", "count": 1})
    with pytest.raises(ActionError, match=r"^topic: payments has no test-message template: only payments may write"):
        send_test_messages(airflow_env, "payments", 1)
    dag = load_dag("topic_test_message")
    refused_at_trigger(dag, {"topic": "orders", "count": 10**9}, "count")
    refused_at_trigger(dag, {"topic": "orders", "count": 0}, "count")
    refused_at_trigger(dag, {"topic": "no-such-topic", "count": 1}, "topic")
    refused_at_trigger(dag, {"topic": "orders; DROP TABLE orders", "count": 1}, "topic")
    with pytest.raises(ActionError, match=r"^count: 1000000000 is not allowed"):
        send_test_messages(airflow_env, "orders", 10**9)
    assert read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "payments") == []
    assert len(read_all(airflow_env.bootstrap(), airflow_env.topic_prefix + "orders")) == 3
