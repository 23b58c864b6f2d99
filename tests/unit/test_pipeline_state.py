"""``var/run/pipeline.json``: what a running `mbyn run` started, and how the commands next to it use it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mbyn.run_state import (
    pipeline_file,
    remove_pipeline,
    running_pipeline,
    use_running_pipeline,
    write_pipeline,
)
from mbyn.settings import load_settings

SECRET = "s3cret-Pw_0"  # pragma: allowlist secret
PG_URL = f"postgresql+psycopg://mbyn:{SECRET}@127.0.0.1:5433/mbyn"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "postgres" / "password"
    path.parent.mkdir(parents=True)
    path.write_text(SECRET + "\n")
    return path


def test_record_is_private_and_references_the_password_instead_of_copying_it(tmp_path: Path) -> None:
    run = load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram", topic_prefix="t-",
                        bootstrap_servers="127.0.0.1:9999")
    password_file = _password_file(tmp_path)
    write_pipeline(run, pid=os.getpid(), airflow_url="http://127.0.0.1:8080", password_file=password_file)
    path = pipeline_file(run)
    assert path == tmp_path / "run" / "pipeline.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert SECRET not in text
    stored = json.loads(text)
    assert stored["warehouse_url"] == "postgresql+psycopg://mbyn@127.0.0.1:5433/mbyn"
    assert stored["warehouse_password_file"] == str(password_file)
    assert (stored["security"], stored["topic_prefix"], stored["bootstrap_servers"], stored["airflow_url"]) == \
        ("scram", "t-", "127.0.0.1:9999", "http://127.0.0.1:8080")
    assert stored["pid"] == os.getpid()
    assert running_pipeline(load_settings(var_dir=tmp_path))["warehouse_url"] == PG_URL  # type: ignore[index]


def test_a_password_that_cannot_be_referenced_is_kept_in_the_private_file(tmp_path: Path) -> None:
    other = "postgresql+psycopg://u:other@db.example:5432/w"  # pragma: allowlist secret
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=other), pid=os.getpid(),
                   password_file=_password_file(tmp_path))
    assert json.loads(pipeline_file(load_settings(var_dir=tmp_path)).read_text())["warehouse_url"] == other


def test_running_values_apply_unless_set_explicitly_and_the_line_masks_the_password(tmp_path: Path) -> None:
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram", topic_prefix="t-"),
                   pid=os.getpid(), password_file=_password_file(tmp_path))
    settings, line = use_running_pipeline(load_settings(var_dir=tmp_path))
    assert (settings.warehouse(), settings.security, settings.topic_prefix) == (PG_URL, "scram", "t-")
    assert line is not None and SECRET not in line
    assert "warehouse: postgresql+psycopg://mbyn:***@127.0.0.1:5433/mbyn" in line and "security: scram" in line
    explicit = load_settings(var_dir=tmp_path, warehouse_url="sqlite:////x.db", security="open")
    settings, line = use_running_pipeline(explicit)
    assert (settings.warehouse(), settings.security, settings.topic_prefix) == ("sqlite:////x.db", "open", "t-")
    assert line is not None and "warehouse" not in line and "security" not in line


def test_a_stale_record_is_ignored_and_only_the_own_record_is_removed(tmp_path: Path) -> None:
    run = load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram")
    write_pipeline(run, pid=_dead_pid())
    fresh = load_settings(var_dir=tmp_path)
    assert running_pipeline(fresh) is None
    assert use_running_pipeline(fresh) == (fresh, None)
    write_pipeline(run, pid=os.getpid())
    remove_pipeline(run, pid=os.getpid() + 1_000_000)  # another run's pid: the record stays
    assert running_pipeline(fresh) is not None
    remove_pipeline(run, pid=os.getpid())
    assert not pipeline_file(run).exists() and use_running_pipeline(fresh) == (fresh, None)


def _warehouse(path: Path, marker: str) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE marker (name TEXT)")
        conn.execute("INSERT INTO marker VALUES (?)", (marker,))
    return f"sqlite:///{path}"


def _mbyn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("explicit", [False, True])
def test_sql_reads_the_running_pipelines_warehouse_unless_the_environment_names_one(
        tmp_path: Path, explicit: bool) -> None:
    running = _warehouse(tmp_path / "running.db", "running-pipeline")
    own = _warehouse(tmp_path / "own.db", "explicit-setting")
    write_pipeline(load_settings(var_dir=tmp_path / "var", warehouse_url=running), pid=os.getpid())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBYN_")}
    env["MBYN_VAR_DIR"] = str(tmp_path / "var")
    if explicit:
        env["MBYN_WAREHOUSE_URL"] = own
    done = _mbyn(env, "sql", "SELECT name FROM marker")
    assert done.returncode == 0, done.stderr
    if explicit:
        assert "explicit-setting" in done.stdout and "running pipeline" not in done.stderr
    else:
        assert "running-pipeline" in done.stdout
        assert f"using the running pipeline's warehouse: {running}" in done.stderr
    remove_pipeline(load_settings(var_dir=tmp_path / "var"))
    done = _mbyn({**env, "MBYN_WAREHOUSE_URL": own} if explicit else env, "sql", "SELECT count(*) FROM orders")
    assert "running pipeline" not in done.stderr  # nothing runs: the defaults (var/warehouse.db) apply


def test_commands_that_read_the_pipeline_opt_in_with_the_principal_of_their_kind(tmp_path: Path) -> None:
    from mbyn.cli.main import _attach, build_parser
    from mbyn.kafka.security import ADMIN, VIEWER, local_credentials

    parser = build_parser()
    expected = {("status",): VIEWER, ("report",): VIEWER, ("sql", "SELECT 1"): None, ("dlq", "list"): None,
                ("dlq", "replay"): ADMIN, ("replay", "--topic", "t", "--group", "g", "--from-ts", "x"): ADMIN,
                ("topics", "apply"): ADMIN}
    for argv, principal in expected.items():
        args = parser.parse_args(list(argv))
        assert args.reads_pipeline and getattr(args, "principal", None) == principal, argv
    assert not getattr(parser.parse_args(["run"]), "reads_pipeline", False)  # a second run never attaches

    store = local_credentials(load_settings(var_dir=tmp_path, security="scram"), create=True)
    write_pipeline(load_settings(var_dir=tmp_path, security="scram"), pid=os.getpid())
    viewer = _attach(load_settings(var_dir=tmp_path), VIEWER)  # open by default: scram from the running pipeline
    assert (viewer.security, viewer.kafka_username) == ("scram", VIEWER)
    assert viewer.kafka_password is not None and viewer.kafka_password.get_secret_value() == store[VIEWER]
    named = _attach(load_settings(var_dir=tmp_path, kafka_username="payments", kafka_password="pw"), VIEWER)
    assert named.kafka_username == "payments"  # the environment names a user: it wins
