"""Airflow fixtures: a throw-away AIRFLOW_HOME for the session, DAGs parsed per test, ``dag.test()`` runs.

Airflow reads ``AIRFLOW_HOME`` and its configuration when ``airflow`` is first imported, so
``pytest_configure`` points it at a temporary folder (SQLite metadata, the repository's ``dags/``, no
examples) before any test module is collected. ``airflow_db`` migrates that database once per session,
only when a test asks for it.

DAG files read the mbyn settings at parse time (topic names carry the test's prefix), so ``load_dag``
parses the file again inside each test, after ``mbyn_env`` has exported the test's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mbyn.settings import PROJECT_ROOT, Settings

DAGS_FOLDER = PROJECT_ROOT / "dags"
_HOME: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    if "airflow" in sys.modules:
        raise pytest.UsageError("tests.plugins.airflow must configure Airflow before it is imported")
    home = Path(tempfile.mkdtemp(prefix="mbyn-airflow-test-"))
    _HOME.append(home)
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    })


def pytest_unconfigure(config: pytest.Config) -> None:
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow metadata database, migrated once (``airflow db migrate``)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                            capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(f"[airflow] metadata DB migrated in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return home / "airflow.db"


@pytest.fixture
def airflow_env(topics: Settings, airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's mbyn settings (topics created) plus the Kafka connections as ``AIRFLOW_CONN_*``."""
    from mbyn.orchestration.connections import connection_env

    for key, value in connection_env(topics).items():
        monkeypatch.setenv(key, value)
    return topics


def standalone_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings for an ``airflow standalone`` of its own (``mbyn.local.airflow.up``): free API
    and log-server ports, so it runs beside a developer's instance, and a random admin password."""
    import secrets

    from mbyn.settings import get_settings
    from tests.conftest import free_port_block

    monkeypatch.setenv("MBYN_AIRFLOW_PORT", str(free_port_block(1)))
    monkeypatch.setenv("MBYN_AIRFLOW_LOG_PORT", str(free_port_block(2)))
    monkeypatch.setenv("MBYN_AIRFLOW_PASSWORD", secrets.token_urlsafe(12))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def load_dag() -> Callable[[str], Any]:
    """Parse ``dags/<dag_id>.py`` now (with the current settings) and return its DAG."""
    from airflow.dag_processing.dagbag import DagBag

    def load(dag_id: str) -> Any:
        bag = DagBag(dag_folder=DAGS_FOLDER / f"{dag_id}.py")
        assert not bag.import_errors, f"{dag_id}: import errors: {bag.import_errors}"
        assert dag_id in bag.dags, f"dags/{dag_id}.py defines {sorted(bag.dags)}, not {dag_id!r}"
        return bag.dags[dag_id]

    return load


def failed_tasks(dag_run: Any) -> str:
    """The task instances of a run that did not succeed, for assertion messages (read in a fresh session)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id,
                                                         TaskInstance.run_id == dag_run.run_id)).all()
        return ", ".join(f"{ti.task_id}={ti.state}" for ti in tis if ti.state != "success") or "(no task failed)"


@pytest.fixture
def run_dag(load_dag: Callable[[str], Any]) -> Iterator[Callable[..., Any]]:
    """Run a DAG in-process with ``dag.test()`` and assert the run succeeded; returns the DagRun.

    Retries are switched off for the run, so a failing task fails the test at once instead of after
    its retry delays; the assertion message lists the task instances that did not succeed.
    """

    def run(dag_id: str, conf: dict[str, Any] | None = None) -> Any:
        dag = load_dag(dag_id)
        for task in dag.tasks:
            task.retries = 0  # dag.test() would sit out every retry_delay before reporting a failure
        dag_run = dag.test(run_conf=conf)
        assert dag_run.state == "success", f"{dag_id}: run {dag_run.run_id} is {dag_run.state}: {failed_tasks(dag_run)}"
        return dag_run

    yield run
