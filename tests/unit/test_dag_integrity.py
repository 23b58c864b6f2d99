"""Every DAG file parses on its own, quickly, and carries what the team relies on.

One test per DAG file: no import errors, at least one DAG, Markdown docs, tags, an owner, retries
set (0 allowed only for manual DAGs), ``catchup=False``, and a parse time a scheduler can live with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT

DAG_FILES = sorted(p for p in (PROJECT_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
MAX_PARSE_S = 3.0
#: Modules a DAG file must not import at parse time (import them inside the tasks).
HEAVY_MODULES = ("pandas", "matplotlib", "pyarrow", "faker", "psycopg")
EXPECTED_DAGS = {"fx_rates_hourly", "customers_snapshot", "inventory_file_drop", "clickstream_burst",
                 "shipments_hourly_load", "fraud_incident_report",
                 "replay_topic", "quarantine_resend", "topic_test_message"}  # the pipeline view's actions


def _bag(path: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=path)


@pytest.fixture(scope="module", autouse=True)
def _airflow_imported() -> None:
    """Pay Airflow's own first-import cost once, so the timings below measure the DAG files."""
    _bag(PROJECT_ROOT / "dags" / "clickstream_burst.py")


def test_the_dags_folder_holds_every_expected_dag() -> None:
    names = {p.stem for p in DAG_FILES}
    missing = EXPECTED_DAGS - names
    assert not missing, f"dags/ lacks {sorted(missing)} (found {sorted(names)})"


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_is_complete(path: Path) -> None:
    started = time.monotonic()
    bag = _bag(path)
    elapsed = time.monotonic() - started
    assert not bag.import_errors, f"{path.name} does not import:\n" + "\n".join(bag.import_errors.values())
    assert bag.dags, f"{path.name} defines no DAG"
    problems: list[str] = []
    for dag_id, dag in bag.dags.items():
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: doc_md is empty (use the module docstring: doc_md=__doc__)")
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        if dag.catchup:
            problems.append(f"{dag_id}: catchup must be False")
        manual = dag.schedule is None
        for task in dag.tasks:
            if not task.owner or task.owner == "airflow":
                problems.append(f"{dag_id}.{task.task_id}: owner not set (default_args owner)")
            if task.retries is None or (task.retries < 1 and not manual):
                problems.append(f"{dag_id}.{task.task_id}: retries={task.retries}; scheduled DAGs retry at least once")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
    assert elapsed < MAX_PARSE_S, (f"{path.name} took {elapsed:.1f}s to parse (limit {MAX_PARSE_S}s): "
                                   "move heavy imports into the tasks")


def test_parsing_the_dags_imports_no_heavy_module() -> None:
    """What the scheduler's parser pays for every file, every 30 s: no pandas & co. at module level."""
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(PROJECT_ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print('HEAVY:' + ' '.join(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    probes = [line[len("HEAVY:"):] for line in result.stdout.splitlines() if line.startswith("HEAVY:")]
    assert probes, f"the probe printed nothing:\n{result.stdout[-2000:]}"
    heavy = probes[-1].strip()
    assert not heavy, f"parsing dags/ imported {heavy}: import it inside the task that needs it"


def test_shipments_load_uses_the_operator_safely() -> None:
    """The ConsumeFromTopicOperator traps (see FACTS.md) stay avoided."""
    from mbyn.orchestration.connections import KAFKA_CONN_ID, kafka_extra
    from mbyn.settings import load_settings

    dag = _bag(PROJECT_ROOT / "dags" / "shipments_hourly_load.py").dags["shipments_hourly_load"]
    op = dag.get_task("load_shipments")
    assert op.commit_cadence == "end_of_batch"
    assert op.max_batch_size <= op.max_messages, "max_batch_size > max_messages silently raises max_messages"
    assert op.poll_timeout <= 10, f"poll_timeout={op.poll_timeout}: every run waits that long at its end"
    assert kafka_extra(load_settings(), op.kafka_config_id)["enable.auto.commit"] is False
    assert op.kafka_config_id == KAFKA_CONN_ID
    assert op.apply_function_kwargs == {"kafka_config_id": op.kafka_config_id}, \
        "the batch function reads its dead letters' consumer group from the connection the operator consumes with"


def test_incident_dag_is_driven_by_a_watched_alerts_asset() -> None:
    from mbyn.orchestration.connections import INCIDENTS_CONN_ID, kafka_extra
    from mbyn.orchestration.triggers import AlertStreamTrigger
    from mbyn.settings import load_settings

    bag = _bag(PROJECT_ROOT / "dags" / "fraud_incident_report.py")
    schedule = bag.dags["fraud_incident_report"].schedule
    assert isinstance(schedule, list) and len(schedule) == 1, f"schedule should be [alerts asset], got {schedule!r}"
    (asset,) = schedule
    assert asset.name.endswith("alerts")
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, AlertStreamTrigger)
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "mbyn.orchestration.triggers.AlertStreamTrigger", "the triggerer imports this path"
    assert kwargs["topics"] == [asset.name]
    assert kwargs["dlq_topic"] is None, ("the provider's dead letters carry no dlq.* headers (quarantined as "
                                         "'unknown', not replayable); the warehouse-loader quarantines bad alerts")
    assert kafka_extra(load_settings(), INCIDENTS_CONN_ID)["enable.auto.commit"] is False


def test_a_quarantine_resend_never_runs_beside_another() -> None:
    """Two runs re-sending the same ids at once (a double click in the view, two operators) would both find the
    rows "not re-sent yet" before either marks them — rows are marked after the broker acknowledged the send — and
    every record would go out twice (the sales-aggregator adds orders up: counted twice). One run at a time: the
    second waits for the first, then fails naming the ids re-sent already, and sends nothing."""
    dag = _bag(PROJECT_ROOT / "dags" / "quarantine_resend.py").dags["quarantine_resend"]
    assert dag.max_active_runs == 1, f"quarantine_resend: max_active_runs={dag.max_active_runs}, must be 1"
