"""The project-started PostgreSQL (`mbyn postgres ...`) and the fixtures built on it, against real servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.errors import PortInUseError, PostgresError, PostgresNotInstalledError
from mbyn.local import postgres as postgres_local
from mbyn.settings import PROJECT_ROOT, Settings, load_settings
from mbyn.warehouse.engine import init_schema, warehouse_engine
from mbyn.warehouse.roles import read_url
from tests.plugins.postgres import PostgresServer, free_port, fresh_database, private_var_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_settings() -> Iterator[Settings]:
    """Settings for a server of this test's own: fresh var folder, free port; stopped afterwards."""
    with private_var_dir("mbyn-pgt-") as var_dir:
        settings = load_settings(var_dir=var_dir, postgres_port=free_port())
        try:
            yield settings
        finally:
            postgres_local.down(settings)


def scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def test_up_creates_the_database_and_is_idempotent(pg_settings: Settings) -> None:
    url = postgres_local.up(pg_settings)
    assert url.startswith("postgresql+psycopg://mbyn_loader:")  # daily work is never the superuser
    assert url.endswith(f"@127.0.0.1:{pg_settings.postgres_port}/mbyn")
    assert scalar(url, "SELECT current_database()") == "mbyn"
    first = postgres_local.status(pg_settings)
    assert first["running"] and first["accepting"]

    assert postgres_local.up(pg_settings) == url  # already running: same URL, same process
    assert postgres_local.status(pg_settings)["pid"] == first["pid"]

    home = pg_settings.var_dir / "postgres"
    assert (home / "postgres.log").stat().st_size > 0
    conf = (home / "data" / "mbyn.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in conf and f"port = {pg_settings.postgres_port}" in conf
    if os.geteuid() == 0:
        assert (home / "data").stat().st_uid == postgres_local.pwd.getpwnam("postgres").pw_uid

    assert postgres_local.down(pg_settings) is True
    assert not postgres_local.port_open(pg_settings.postgres_port)
    assert postgres_local.status(pg_settings)["running"] is False
    assert postgres_local.down(pg_settings) is False


def test_password_is_required_over_tcp(pg_settings: Settings) -> None:
    url = postgres_local.up(pg_settings)
    wrong = sa.engine.make_url(url).set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        scalar(wrong, "SELECT 1")


def test_restart_keeps_data(pg_settings: Settings) -> None:
    url = postgres_local.up(pg_settings)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (1, 'before restart'), (2, 'also')"))
    engine.dispose()
    pid = postgres_local.status(pg_settings)["pid"]

    postgres_local.down(pg_settings)
    assert postgres_local.up(pg_settings) == url
    assert postgres_local.status(pg_settings)["pid"] != pid
    assert scalar(url, "SELECT string_agg(note, ',' ORDER BY id) FROM kept") == "before restart,also"


def test_loader_writes_the_warehouse_and_the_reader_can_only_read(pg_settings: Settings) -> None:
    pg = postgres_local.LocalPostgres.from_settings(pg_settings)
    loader_url = postgres_local.up(pg_settings)
    with sa.create_engine(pg.url()).begin() as conn:  # a table an older mbyn made as the superuser
        conn.execute(sa.text("CREATE TABLE legacy (id int PRIMARY KEY)"))
    assert postgres_local.up(pg_settings) == loader_url  # running: roles refreshed, the old table handed over
    superuser = sa.create_engine(pg.url())  # a warehouse URL from before the upgrade still naming the superuser ...
    with superuser.begin() as conn:
        conn.execute(sa.text("CREATE TABLE made_after_the_roles (id int)"))
    superuser.dispose()
    assert scalar(pg.url(role=postgres_local.READER), "SELECT count(*) FROM made_after_the_roles") == 0  # ... read
    for role in postgres_local.ROLES:
        assert pg.password_path(role).stat().st_mode & 0o777 == 0o600
    settings = load_settings(var_dir=pg_settings.var_dir, postgres_port=pg_settings.postgres_port,
                             warehouse_url=loader_url)
    writer = warehouse_engine(settings)
    init_schema(writer)  # the loader creates and migrates the schema ...
    with writer.begin() as conn:  # ... writes rows, and alters a table it did not create
        conn.execute(sa.text("ALTER TABLE legacy ADD COLUMN note text"))
        conn.execute(sa.text("INSERT INTO legacy VALUES (1, 'kept')"))
    writer.dispose()
    assert scalar(loader_url, "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
                              "WHERE rolname = current_user") is False

    reader = warehouse_engine(settings, read_only=True)  # what `mbyn sql`, `mbyn status` and the view use
    assert reader.url.username == "mbyn_reader"
    with reader.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM legacy")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM kafka_offsets")).scalar() == 0
    reader.dispose()
    plain = sa.create_engine(read_url(settings))  # no read-only transaction: the role itself must refuse
    for statement in ("INSERT INTO legacy VALUES (2, 'x')", "DELETE FROM legacy", "UPDATE legacy SET note = 'x'",
                      "CREATE TABLE intruder (i int)", "DROP TABLE legacy", "ALTER TABLE legacy ADD COLUMN x int",
                      "CREATE TEMP TABLE scratch (i int)", "TRUNCATE legacy",
                      # large objects live in the database too: PUBLIC may create them unless revoked
                      "SELECT lo_from_bytea(0, 'x')", "SELECT lo_create(0)", "SELECT lo_creat(-1)"):
        with pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"), plain.begin() as conn:
            conn.execute(sa.text("SET TRANSACTION READ WRITE"))
            conn.execute(sa.text(statement))
    plain.dispose()

    env = {**os.environ, "MBYN_VAR_DIR": str(pg_settings.var_dir),
           "MBYN_POSTGRES_PORT": str(pg_settings.postgres_port), "MBYN_WAREHOUSE_URL": loader_url}
    sneaky = "SET TRANSACTION READ WRITE; DELETE FROM legacy"  # past the read-only transaction: the role refuses
    refused = subprocess.run([sys.executable, "-m", "mbyn.cli", "sql", sneaky], env=env, cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "permission denied for table legacy" in refused.stderr, refused.stderr
    assert scalar(loader_url, "SELECT count(*) FROM legacy") == 1


def _start_without_roles(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running server with database ``mbyn`` and no roles of daily work (as one made before they existed)."""
    monkeypatch.setattr(postgres_local, "ensure_roles", lambda pg: None)
    with pytest.raises(PostgresError, match="no mbyn_loader yet"):  # up's URL is the loader's: none yet
        postgres_local.up(settings)
    monkeypatch.undo()


class _InStep:
    """A superuser connection whose role lookups meet ``barrier``: two `up` look, then both act on what they saw."""

    def __init__(self, conn: Any, barrier: threading.Barrier) -> None:
        self._conn, self._barrier = conn, barrier

    def __enter__(self) -> _InStep:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, query: Any, *args: Any) -> Any:
        result = self._conn.execute(query, *args)
        if "FROM pg_roles" in str(query):
            try:
                self._barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other start is not looking at the same time (it waits, or is done)
        return result


def test_two_starts_at_once_make_the_roles_once_with_the_passwords_in_their_files(
        pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `mbyn run` / `mbyn postgres up` at once on a server without the roles (first start, or a server made
    before them): both must succeed, and each role must log in with the password its file holds."""
    _start_without_roles(pg_settings, monkeypatch)
    pg = postgres_local.LocalPostgres.from_settings(pg_settings)
    barrier, connect = threading.Barrier(2, timeout=2), postgres_local._admin_connection
    monkeypatch.setattr(postgres_local, "_admin_connection",
                        lambda *args, **kwargs: _InStep(connect(*args, **kwargs), barrier))
    failures: list[BaseException] = []

    def start() -> None:
        try:
            postgres_local.ensure_roles(pg)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    for role in (postgres_local.LOADER, postgres_local.READER):
        assert scalar(pg.url(role=role), "SELECT current_user") == role


def test_the_compose_init_script_makes_the_roles_without_a_password_on_a_command_line(
        pg_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docker/postgres/initdb/10-roles.sh, run by the postgres image on an empty volume, against a real server:
    the roles work as the compose file uses them, and no password is in psql's arguments — a container's
    processes are in the host's `ps` for every user there."""
    _start_without_roles(pg_settings, monkeypatch)  # the image makes none either
    pg = postgres_local.LocalPostgres.from_settings(pg_settings)
    psql, seen = shutil.which("psql"), tmp_path / "argv"
    assert psql, "psql (Debian package postgresql-client) is installed with the server"
    shim = tmp_path / "bin" / "psql"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {seen}\nexec {psql} "$@"\n')
    shim.chmod(0o755)
    passwords = {name: uuid.uuid4().hex for name in
                 ("WAREHOUSE_LOADER_PASSWORD", "WAREHOUSE_READER_PASSWORD", "AIRFLOW_DB_PASSWORD")}
    env = {**os.environ, **passwords, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
           "POSTGRES_USER": postgres_local.SUPERUSER, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port),
           "PGPASSWORD": pg.password_file.read_text().strip()}
    script = PROJECT_ROOT / "docker" / "postgres" / "initdb" / "10-roles.sh"
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen.read_text().strip() and not [s for s in passwords.values() if s in seen.read_text()], seen.read_text()
    base = f"postgresql+psycopg://{{}}:{{}}@127.0.0.1:{pg.port}/mbyn"
    loader = base.format("mbyn_loader", passwords["WAREHOUSE_LOADER_PASSWORD"])
    writer = sa.create_engine(loader)
    with writer.begin() as conn:
        conn.execute(sa.text("CREATE TABLE made_later (id int)"))
        conn.execute(sa.text("INSERT INTO made_later VALUES (1)"))
    writer.dispose()
    assert scalar(base.format("mbyn_reader", passwords["WAREHOUSE_READER_PASSWORD"]),
                  "SELECT count(*) FROM made_later") == 1
    assert scalar(base.format("airflow", passwords["AIRFLOW_DB_PASSWORD"]).replace("/mbyn", "/airflow"),
                  "SELECT current_user") == "airflow"


def test_taken_port_names_the_setting(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", postgres_port=free_port())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.postgres_port))
        squatter.listen()
        with pytest.raises(PortInUseError, match="MBYN_POSTGRES_PORT"):
            postgres_local.up(settings)
    assert not (tmp_path / "var" / "postgres").exists()


def test_missing_binaries_name_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_local, "DEBIAN_BIN_ROOT", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresNotInstalledError, match="Debian package `postgresql`"):
        postgres_local.find_bin_dir()


def test_cli_up_status_url_down(pg_settings: Settings) -> None:
    env = {**os.environ, "MBYN_VAR_DIR": str(pg_settings.var_dir),
           "MBYN_POSTGRES_PORT": str(pg_settings.postgres_port)}
    mbyn = [sys.executable, "-m", "mbyn.cli", "postgres"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*mbyn, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=120, check=False)

    # Each call starts a fresh interpreter (a few seconds on a busy machine): keep them few.
    up = run("up")
    assert up.returncode == 0, up.stderr
    url = run("url").stdout.strip()  # `up` prints the URL with its password masked; `url` reveals it
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password and password not in up.stdout + up.stderr and ":***@" in up.stdout
    assert up.stdout.split()[0] == url.replace(f":{password}@", ":***@")
    assert scalar(url, "SELECT 42") == 42
    assert run("status").returncode == 0
    assert run("down").returncode == 0
    stopped = run("status")
    assert stopped.returncode == 3 and "not running" in stopped.stdout


def test_fresh_database_is_created_empty_and_dropped(postgres_server: PostgresServer) -> None:
    with fresh_database(postgres_server) as url:
        name = sa.engine.make_url(url).database
        assert name is not None and name.startswith("t_")
        assert scalar(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == 0
        leftover = sa.create_engine(url)  # left open on purpose: the drop must still succeed
        with leftover.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
        leftover_conn = leftover.connect()
    present = scalar(postgres_server.url("postgres"), f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    assert present == 0
    leftover_conn.invalidate()
    leftover.dispose()


def test_postgres_url_fixture_gives_each_test_its_own_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id int)"))
        conn.execute(sa.text("INSERT INTO orders VALUES (1), (2), (3)"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 3
    engine.dispose()
