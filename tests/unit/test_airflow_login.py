"""The local Airflow's login: no fixed password — admin and viewer get random ones at first use, kept 0600."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

from mbyn.cli.main import main
from mbyn.errors import ConfigError
from mbyn.files import atomic_write_json
from mbyn.local import airflow as local
from mbyn.settings import load_settings


def test_first_use_generates_a_private_random_password_per_user(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    admin, viewer = local.password(settings), local.password(settings, "viewer")
    store = local.password_file(settings)
    assert store.stat().st_mode & 0o777 == 0o600
    assert json.loads(store.read_text()) == {"admin": admin, "viewer": viewer}
    assert len(admin) >= 16 and len(viewer) >= 16 and admin != viewer and "admin" not in (admin, viewer)
    assert (local.password(settings), local.password(settings, "viewer")) == (admin, viewer)  # stable
    other = load_settings(var_dir=tmp_path / "other")
    assert local.password(other) != admin  # random per installation, never a default


def test_the_setting_overrides_admin_only_and_is_written_before_start(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", airflow_password="Chosen-Pw-1234")
    viewer = local.password(settings, "viewer")
    assert local.password(settings) == "Chosen-Pw-1234"
    local.write_password(settings)
    assert json.loads(local.password_file(settings).read_text()) == {"admin": "Chosen-Pw-1234", "viewer": viewer}
    with pytest.raises(ConfigError, match="at least 8 characters") as short:
        load_settings(var_dir=tmp_path / "var", airflow_password="admin")  # pragma: allowlist secret
    assert "'admin'" not in str(short.value)  # a rejected password is not echoed


def test_airflow_knows_both_users_with_their_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    env = local.airflow_env(settings)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,viewer:viewer"
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])
    users = {u.username: u.role for u in SimpleAuthManager.get_users()}  # Airflow's own parser of the setting
    assert {name: role.lower() for name, role in users.items() if role} == {"admin": "admin", "viewer": "viewer"}


def test_a_broken_password_file_or_unknown_user_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    with pytest.raises(ConfigError, match=r"no user 'root'.*admin, viewer"):
        local.password(settings, "root")
    local.password_file(settings).parent.mkdir(parents=True)
    local.password_file(settings).write_text("{not json")
    with pytest.raises(ConfigError, match=r"not valid JSON.*delete it"):
        local.password(settings)
    local.password_file(settings).write_text('["admin"]')
    with pytest.raises(ConfigError, match="JSON object of user"):
        local.password(settings)


def test_cli_prints_the_login_of_the_chosen_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mbyn.settings import get_settings

    monkeypatch.setenv("MBYN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MBYN_AIRFLOW_PASSWORD", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["airflow", "password", "--user", "viewer"]) == 0
        user, password = capsys.readouterr().out.split()
        assert (user, password) == ("viewer", local.password(get_settings(), "viewer"))
        with pytest.raises(SystemExit) as exited:
            main(["airflow", "password", "--user", "root"])
        assert exited.value.code == 2 and "invalid choice: 'root'" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()


def test_the_old_default_admin_password_does_not_survive_an_upgrade(tmp_path: Path) -> None:
    """A checkout started before the random passwords has {"admin": "admin"} in Airflow's password file (the old
    default, written 0600): keeping it would leave `admin`/`admin` for anyone on the machine after the upgrade."""
    settings = load_settings(var_dir=tmp_path / "var")
    store = local.password_file(settings)
    atomic_write_json(store, {"admin": "admin"}, mode=0o600)  # pragma: allowlist secret - what the old version wrote
    local.write_password(settings)  # the next `mbyn airflow up`
    stored = json.loads(store.read_text())
    assert stored["admin"] != "admin" and len(stored["admin"]) >= 16, stored  # pragma: allowlist secret
    assert local.password(settings) == stored["admin"] and store.stat().st_mode & 0o777 == 0o600
    kept = {"admin": "Chosen-Pw-1234", "viewer": "Viewer-Pw-5678"}  # pragma: allowlist secret - long enough: kept
    atomic_write_json(store, kept, mode=0o600)
    local.write_password(settings)
    assert json.loads(store.read_text()) == kept


def test_the_airflow_home_is_private_also_when_an_older_version_made_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """var/airflow holds Airflow's database (DAG run parameters of the actions, XComs) and the task logs: another
    user of the machine must not read them around the login, so only the owner may enter the folder."""
    settings = load_settings(var_dir=tmp_path / "var")
    settings.airflow_home.mkdir(parents=True)
    settings.airflow_home.chmod(0o755)  # as the versions before made it
    monkeypatch.setattr(local, "port_open", lambda port: False)
    monkeypatch.setattr(local, "apply_topics", lambda settings: None)
    monkeypatch.setattr(local, "_wait_until_ready", lambda *args: "3")
    monkeypatch.setattr(local.subprocess, "Popen", lambda *args, **kwargs: SimpleNamespace(pid=os.getpid()))
    local.up(settings)
    assert settings.airflow_home.stat().st_mode & 0o777 == 0o700
    assert local.password_file(settings).stat().st_mode & 0o777 == 0o600
