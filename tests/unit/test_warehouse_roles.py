"""Read-only work connects as the local PostgreSQL's reader; the run record never copies a role's password."""

from __future__ import annotations

import os
from pathlib import Path

from mbyn.local.postgres import LocalPostgres
from mbyn.run_state import pipeline_file, running_pipeline, write_pipeline
from mbyn.settings import POSTGRES_LOADER, POSTGRES_READER, load_settings
from mbyn.warehouse.roles import read_url

LOADER_URL = "postgresql+psycopg://mbyn_loader:Loader-Pw-1@127.0.0.1:5433/mbyn"  # pragma: allowlist secret


def _role_files(var: Path) -> None:
    folder = var / "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    for role, secret in ((POSTGRES_LOADER, "Loader-Pw-1"), (POSTGRES_READER, "Reader-Pw-2"), ("mbyn", "Super-Pw-3")):
        path = LocalPostgres(home=folder, port=5433).password_path(role)
        path.write_text(secret + "\n")
        path.chmod(0o600)
        assert path == load_settings(var_dir=var).local_postgres_password_file(role)  # one location, two readers


def test_the_local_warehouse_is_read_as_the_reader(tmp_path: Path) -> None:
    _role_files(tmp_path)
    settings = load_settings(var_dir=tmp_path, warehouse_url=LOADER_URL)
    assert read_url(settings) == \
        "postgresql+psycopg://mbyn_reader:Reader-Pw-2@127.0.0.1:5433/mbyn"  # pragma: allowlist secret
    superuser = LOADER_URL.replace("mbyn_loader:Loader-Pw-1", "mbyn:Super-Pw-3")
    assert read_url(load_settings(var_dir=tmp_path, warehouse_url=superuser)).startswith(
        "postgresql+psycopg://mbyn_reader:")


def test_other_warehouses_keep_their_url_unless_a_read_url_is_set(tmp_path: Path) -> None:
    _role_files(tmp_path)
    unchanged = [
        "sqlite:////tmp/w.db",
        LOADER_URL.replace(":5433/", ":5999/"),  # another server
        LOADER_URL.replace("/mbyn", "/other"),  # another database: the reader has no rights there
        "postgresql+psycopg://someone:pw@127.0.0.1:5433/mbyn",  # pragma: allowlist secret - a role of the user's
        "postgresql+psycopg://mbyn_loader:pw@db.example:5433/mbyn",  # pragma: allowlist secret - not this machine
    ]
    for url in unchanged:
        assert read_url(load_settings(var_dir=tmp_path, warehouse_url=url)) == url
    no_roles = load_settings(var_dir=tmp_path / "older", warehouse_url=LOADER_URL)  # a server made before the roles
    assert read_url(no_roles) == LOADER_URL
    explicit = "postgresql+psycopg://ro:pw@db.example/w"  # pragma: allowlist secret
    assert read_url(load_settings(var_dir=tmp_path, warehouse_url=LOADER_URL, warehouse_read_url=explicit)) == explicit


def test_the_run_record_references_the_loaders_password_instead_of_copying_it(tmp_path: Path) -> None:
    _role_files(tmp_path)
    write_pipeline(load_settings(var_dir=tmp_path, warehouse_url=LOADER_URL), pid=os.getpid())
    text = pipeline_file(load_settings(var_dir=tmp_path)).read_text()
    assert "Loader-Pw-1" not in text
    assert '"warehouse_password": "local-postgres"' in text  # pragma: allowlist secret - a marker
    assert running_pipeline(load_settings(var_dir=tmp_path))["warehouse_url"] == LOADER_URL  # type: ignore[index]
