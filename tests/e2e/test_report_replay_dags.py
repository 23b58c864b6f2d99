"""``sales_report_daily`` and ``replay_topic`` run with ``dag.test()`` against the real broker and warehouse.

Both assert the run succeeded AND its effect: the report's files for the run's logical date, and a
replay that re-processed records without changing a row count — after a dry run that previewed the same
partitions and moved nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from mbyn.settings import Settings
from tests.integration.test_replay import committed, counts, stored, two_bursts_loaded
from tests.integration.test_reports import DAY, end_offsets, load_warehouse, query, send_shop_day
from tests.plugins.airflow import failed_tasks

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def return_value(dag_run: Any, task_id: str) -> Any:
    """The task's XCom ``return_value`` of ``dag_run``, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=dag_run.run_id, key="return_value", task_ids=task_id,
                                                 dag_ids=dag_run.dag_id)).first()
        assert row is not None, f"{dag_run.dag_id}.{task_id} returned nothing"
        return XComModel.deserialize_value(row)


def test_sales_report_daily_reports_its_logical_date(airflow_env: Settings, load_dag: Callable[[str], Any]) -> None:
    send_shop_day(airflow_env)
    load_warehouse(airflow_env)

    dag = load_dag("sales_report_daily")
    dag_run = dag.test(logical_date=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC))
    assert dag_run.state == "success", f"run {dag_run.run_id} is {dag_run.state}: {failed_tasks(dag_run)}"

    folder = airflow_env.reports_dir / "sales" / DAY.isoformat()
    page = (folder / "index.html").read_text()
    assert f"Sales report {DAY.isoformat()}" in page and "No data" not in page
    assert (folder / "revenue_by_hour.png").stat().st_size > 1000
    with (folder / "revenue_by_country.csv").open(newline="") as f:
        reported = sum(int(r["orders"]) for r in csv.DictReader(f))
    orders = query(airflow_env, "SELECT COUNT(*) FROM orders")[0][0]
    assert reported == orders > 0
    result = return_value(dag_run, "build_report")
    assert result["day"] == DAY.isoformat() and "revenue_by_country.csv" in result["csv"]
    assert "revenue_by_hour.png" in result["charts"]


def test_replay_topic_reprocesses_without_changing_rows(airflow_env: Settings,
                                                         run_dag: Callable[..., Any]) -> None:
    middle, second_orders = two_bursts_loaded(airflow_env)
    before = counts(airflow_env)
    physical = airflow_env.topic_prefix + "orders"
    group = airflow_env.topic_prefix + "warehouse-loader"
    conf = {"topic": "orders", "group": "warehouse-loader", "from_ts": middle.isoformat(), "reload": True,
            "idle_exit": 3}
    positions = (stored(airflow_env, group, physical), committed(airflow_env, group, physical))

    preview = return_value(run_dag("replay_topic", conf={**conf, "dry_run": True}), "replay_from_timestamp")
    assert preview["dry_run"] is True and preview["rewound_records"] == second_orders > 0, preview
    assert (stored(airflow_env, group, physical), committed(airflow_env, group, physical)) == positions, \
        "a dry run must move no offset, in the warehouse or in Kafka"
    assert counts(airflow_env) == before

    dag_run = run_dag("replay_topic", conf=conf)

    summary = return_value(dag_run, "replay_from_timestamp")
    assert summary["partitions"] == preview["partitions"], "the preview showed what the replay then re-read"
    assert summary["reprocessed"] == second_orders > 0, summary
    assert summary["rows_unchanged"] is True
    assert counts(airflow_env) == before
    assert stored(airflow_env, group, physical) == \
        end_offsets(airflow_env, ("orders",))


def test_replay_topic_fails_on_a_bad_timestamp(airflow_env: Settings, load_dag: Callable[[str], Any]) -> None:
    dag = load_dag("replay_topic")
    dag_run = dag.test(run_conf={"topic": "orders", "group": "warehouse-loader", "from_ts": "2999-01-01T00:00:00Z"})
    assert dag_run.state == "failed", "a timestamp in the future must fail the run"
