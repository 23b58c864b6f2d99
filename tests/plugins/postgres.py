"""PostgreSQL fixtures: one real server per test session, one fresh database per test.

``postgres_server`` starts the project's own server (``mbyn.local.postgres``) on a free port in a
temporary folder, or uses ``MBYN_TEST_POSTGRES_URL`` when set (any SQLAlchemy URL of a server where that
role may CREATE DATABASE; the database part is ignored). ``postgres_url`` gives each test its own database
``t_<uuid>`` and drops it afterwards, so tests never see each other's tables.

The temporary folder is made with ``tempfile.mkdtemp`` under the system temp folder rather than under
pytest's ``tmp_path``: pytest keeps ``/tmp/pytest-of-<user>`` at mode 0700, which the ``postgres`` OS user
(the server runs as it when tests run as root) could not enter, and the short path keeps the unix socket
path below the kernel's 107-byte limit.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mbyn.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_var_dir(prefix: str = "mbyn-pg-") -> Iterator[Path]:
    """A fresh var folder the server's OS user can reach; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root / "var"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL reachable with ``admin_url`` (a role allowed to create databases)."""

    admin_url: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        from sqlalchemy.engine import make_url

        url = make_url(self.admin_url).set(drivername="postgresql+psycopg", database=database)
        return url.render_as_string(hide_password=False)


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """Create database ``t_<uuid>``, yield its URL, drop it (closing leftover connections) afterwards."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex}"
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.url(name)
        finally:
            with admin.connect() as conn:
                # WITH (FORCE) (PostgreSQL 13+) ends sessions a test left open, e.g. an engine never disposed.
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the whole session: ``MBYN_TEST_POSTGRES_URL``, else one started here."""
    external = os.environ.get("MBYN_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(admin_url=external)
        return
    from mbyn.local import postgres as postgres_local
    from mbyn.settings import load_settings

    with private_var_dir() as var_dir:
        settings = load_settings(var_dir=var_dir, postgres_port=free_port())
        postgres_local.up(settings)
        url = postgres_local.LocalPostgres.from_settings(settings).url()  # the superuser: tests create databases
        try:
            yield PostgresServer(admin_url=url)
        finally:
            postgres_local.down(settings)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database for this test only (dropped afterwards)."""
    with fresh_database(postgres_server) as url:
        yield url


def warehouse_fixture(session_timeout_s: int | None = None) -> Any:
    """A ``warehouse`` fixture for a test module: ``topics`` with the warehouse on a fresh SQLite file, then on
    a fresh PostgreSQL database (the fixture is parametrized, so each test runs once per backend).

    ``session_timeout_s`` sets ``MBYN_CONSUMER_SESSION_TIMEOUT_S`` for tests that stop and restart consumers:
    a short session lets the group drop a stopped member sooner. Use it as ``warehouse = warehouse_fixture()``.
    """

    @pytest.fixture(params=["sqlite", "postgres"])
    def warehouse(request: pytest.FixtureRequest, topics: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
        from mbyn.settings import get_settings

        if request.param == "postgres":
            monkeypatch.setenv("MBYN_WAREHOUSE_URL", request.getfixturevalue("postgres_url"))
        if session_timeout_s is not None:
            monkeypatch.setenv("MBYN_CONSUMER_SESSION_TIMEOUT_S", str(session_timeout_s))
        get_settings.cache_clear()
        return get_settings()

    return warehouse
