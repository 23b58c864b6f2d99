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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SECRET + "\n")
    return path


def test_record_is_private_and_references_the_password_instead_of_copying_it(tmp_path: Path) -> None:
    run = load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram", topic_prefix="t-",
                        bootstrap_servers="127.0.0.1:9999")
    _password_file(tmp_path)
    write_pipeline(run, pid=os.getpid(), airflow_url="http://127.0.0.1:8080")
    path = pipeline_file(run)
    assert path == tmp_path / "run" / "pipeline.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert SECRET not in text
    stored = json.loads(text)
    assert stored["warehouse_url"] == "postgresql+psycopg://mbyn@127.0.0.1:5433/mbyn"
    assert stored["warehouse_password"] == "local-postgres"  # pragma: allowlist secret
    assert "warehouse_password_file" not in stored
    assert (stored["security"], stored["topic_prefix"], stored["bootstrap_servers"], stored["airflow_url"]) == \
        ("scram", "t-", "127.0.0.1:9999", "http://127.0.0.1:8080")
    assert stored["pid"] == os.getpid()
    assert running_pipeline(load_settings(var_dir=tmp_path))["warehouse_url"] == PG_URL  # type: ignore[index]


def test_a_password_that_cannot_be_referenced_is_kept_in_the_private_file(tmp_path: Path) -> None:
    other = "postgresql+psycopg://u:other@db.example:5432/w"  # pragma: allowlist secret
    _password_file(tmp_path)
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=other), pid=os.getpid())
    assert json.loads(pipeline_file(load_settings(var_dir=tmp_path)).read_text())["warehouse_url"] == other


def test_running_values_apply_unless_set_explicitly_and_the_line_masks_the_password(tmp_path: Path) -> None:
    _password_file(tmp_path)
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram", topic_prefix="t-"),
                   pid=os.getpid())
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


# A hostile or broken record: ignored with one line, never trusted, never a traceback --------------------------

def _record(tmp_path: Path, **changes: object) -> Path:
    """A record of this (live) process as `mbyn run` writes it, with ``changes``; its path."""
    _password_file(tmp_path)
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=PG_URL, security="scram"), pid=os.getpid())
    path = pipeline_file(load_settings(var_dir=tmp_path))
    document = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(document))
    return path


def _ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str], **explicit: object) -> str:
    fresh = load_settings(var_dir=tmp_path, **explicit)  # type: ignore[arg-type]
    assert use_running_pipeline(fresh) == (fresh, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ignoring " in err and "pipeline.json" in err, err
    assert "Traceback" not in err and SECRET not in err
    return err


def test_a_forged_record_never_reads_another_file_as_the_password(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other-secret"
    other.write_text("not-the-password\n")
    # the old reference key is not honoured: the password comes only from the local PostgreSQL's own file
    _record(tmp_path, warehouse_password_file=str(other), warehouse_url="postgresql+psycopg://mbyn@evil.example:5433/mbyn")
    fresh = load_settings(var_dir=tmp_path)
    settings, _ = use_running_pipeline(fresh)
    assert "not-the-password" not in settings.warehouse()
    assert SECRET not in settings.warehouse() and "ignoring" in capsys.readouterr().err  # not localhost: refused
    _record(tmp_path, warehouse_url="postgresql+psycopg://mbyn@127.0.0.1:5999/mbyn")  # another port: refused
    _ignored(tmp_path, capsys)
    for bad in ("/etc/passwd", 1):
        _record(tmp_path, warehouse_password=bad)
        _ignored(tmp_path, capsys)


def test_a_record_that_is_a_symlink_not_private_or_not_own_is_ignored(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _record(tmp_path)
    path.chmod(0o644)
    assert "group or others" in _ignored(tmp_path, capsys)
    path.chmod(0o600)
    real = tmp_path / "elsewhere.json"
    path.rename(real)
    path.symlink_to(real)
    assert "symbolic link" in _ignored(tmp_path, capsys)
    path.unlink()
    real.rename(path)
    assert use_running_pipeline(load_settings(var_dir=tmp_path))[1] is not None
    if os.getuid() == 0:  # a file of another user: only root can make one here
        os.chown(path, 12345, 12345)
        assert "owned by uid 12345" in _ignored(tmp_path, capsys)


@pytest.mark.parametrize("changes", [
    {"warehouse_password_file": ["a"], "warehouse_password": ["a"]}, {"warehouse_url": 5},
    {"warehouse_url": "not a url"}, {"pid": "1"}, {"postgres_port": "5433"}, {"security": "SCRAM"},
    {"security": "bogus"}, {"bootstrap_servers": "no port here"}, {"topic_prefix": "t\x1b[31m\n"},
    {"kafka_port": True}])
def test_a_malformed_or_invalid_record_is_ignored_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, object]) -> None:
    _record(tmp_path, **changes)
    err = _ignored(tmp_path, capsys)
    assert "\x1b" not in err and "\n" not in err[:-1]


def test_a_live_pid_of_another_process_is_not_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record(tmp_path, process_start="1")  # this test process is alive, but it is not the run that wrote it
    assert "not the mbyn run" in _ignored(tmp_path, capsys)
    assert running_pipeline(load_settings(var_dir=tmp_path)) is None


def test_explicit_settings_win_before_the_record_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record(tmp_path, warehouse_url="not a url", bootstrap_servers="127.0.0.1:7777")
    explicit = load_settings(var_dir=tmp_path, warehouse_url="sqlite:////x.db", kafka_port=9400)
    settings, line = use_running_pipeline(explicit)  # the bad URL is never looked at
    assert (settings.warehouse(), settings.bootstrap(), settings.security) == ("sqlite:////x.db", "127.0.0.1:9400",
                                                                               "scram")
    assert line is not None and "Kafka" not in line and capsys.readouterr().err == ""


def test_the_password_file_location_is_the_local_postgresqls(tmp_path: Path) -> None:
    from mbyn.local.postgres import LocalPostgres
    from mbyn.run_state import local_postgres_password_file

    settings = load_settings(var_dir=tmp_path)
    assert local_postgres_password_file(settings) == LocalPostgres.from_settings(settings).password_file
