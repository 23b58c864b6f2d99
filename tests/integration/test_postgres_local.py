"""The project-started PostgreSQL (`mbyn postgres ...`) and the fixtures built on it, against real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mbyn.errors import PortInUseError, PostgresNotInstalledError
from mbyn.local import postgres as postgres_local
from mbyn.settings import PROJECT_ROOT, Settings, load_settings
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
    assert url.startswith("postgresql+psycopg://mbyn:")
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
