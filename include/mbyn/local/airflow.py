"""A local Airflow for development and end-to-end tests: ``airflow standalone`` under ``var/airflow``.

``up`` prepares everything ``airflow standalone`` needs and starts it in its own process group:

* ``AIRFLOW_HOME = settings.airflow_home``, SQLite metadata at an absolute path, the repository's
  ``dags/`` and ``plugins/`` folders, no example DAGs, DAGs unpaused at creation (asset watchers only
  run for unpaused DAGs), new DAG files noticed within seconds.
* The API server on ``MBYN_AIRFLOW_PORT`` (default 8080), bound to 127.0.0.1, with ``[api] base_url``
  and the execution API URL pointing at the same port — task processes call the execution API, which
  otherwise defaults to port 8080 whatever the API port is. The log servers move with
  ``MBYN_AIRFLOW_LOG_PORT`` so a second instance (tests) can run beside a developer's.
* Two users of the SimpleAuthManager (``USERS``): ``admin`` (role admin) and ``viewer`` (role viewer: sees
  everything, triggers nothing). Each gets a random password at first start, kept in the SimpleAuthManager's
  own password file under ``var/airflow/`` (mode 0600, the folder 0700; Airflow reads it at every login and
  only adds users missing from it, in place; a stored one under 8 characters, like the old default, is replaced).
  ``MBYN_AIRFLOW_PASSWORD`` overrides admin's (written before every start).
  No password is ever printed by ``up``: ``mbyn airflow password [--user viewer]`` shows one. One JWT
  secret is shared by every component.
* The Kafka connections of :mod:`mbyn.orchestration.connections` as ``AIRFLOW_CONN_*`` variables, and
  the resolved ``MBYN_*`` settings, so DAGs and triggers see the same cluster and topic prefix.
* Every catalog topic is created first: an asset watcher on a missing topic crash-loops.

Output goes to ``var/logs/airflow.log``. ``down`` sends SIGTERM to the process group, waits up to
``STOP_TIMEOUT_S`` and then sends SIGKILL — to the group and to every descendant recorded before the
stop, so LocalExecutor workers that left the group are not orphaned
(``mbyn.local.processes.stop_process_groups`` with ``with_descendants``).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbyn.errors import ConfigError, OrchestratorError, PortInUseError
from mbyn.files import atomic_write, atomic_write_json
from mbyn.kafka.admin import apply_topics
from mbyn.kafka.security import as_principal, security_environment
from mbyn.local.processes import group_alive, port_open, progress_printer, stop_process_groups
from mbyn.orchestration.connections import connection_env
from mbyn.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    import httpx

DAGS_FOLDER = PROJECT_ROOT / "dags"
PLUGINS_FOLDER = PROJECT_ROOT / "plugins"
ADMIN_USER = "admin"
VIEWER_USER = "viewer"
#: The users of the local instance → their SimpleAuthManager role (admin: everything; viewer: read only).
USERS = {ADMIN_USER: "admin", VIEWER_USER: "viewer"}
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


log = progress_printer("airflow")


@dataclass(frozen=True)
class AirflowState:
    """What ``up`` recorded about the running instance (``$AIRFLOW_HOME/standalone.json``)."""

    pid: int
    port: int
    url: str
    log_file: str

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), indent=2)

    @classmethod
    def load(cls, path: Path) -> AirflowState | None:
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), port=int(data["port"]), url=str(data["url"]),
                       log_file=str(data["log_file"]))
        except (OSError, ValueError, KeyError):
            return None


def state_file(settings: Settings) -> Path:
    return settings.airflow_home / "standalone.json"


def log_file(settings: Settings) -> Path:
    return settings.logs_dir / "airflow.log"


def password_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json.generated"


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# Environment -----------------------------------------------------------------------------------------


def _jwt_secret(settings: Settings) -> str:
    """One secret for every component (tokens signed by the scheduler must verify in the API server)."""
    path = settings.airflow_home / "jwt_secret"
    if not path.exists():
        atomic_write(path, secrets.token_urlsafe(64), mode=0o600)  # ≥ 64 bytes: HS512 wants that much
    return path.read_text().strip()


def airflow_env(settings: Settings, port: int | None = None, dags_folder: Path | None = None) -> dict[str, str]:
    """The ``AIRFLOW_*`` and ``MBYN_*`` variables of the local instance (see the module docstring)."""
    port = port or settings.airflow_port
    home = settings.airflow_home
    settings = as_principal(settings, "airflow")  # secured mode: Airflow's own principal (no-op when open)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(settings)),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url(port)}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_log_port + 1),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        # mbyn settings, resolved, so every Airflow process sees the same cluster, prefix and folders.
        "MBYN_VAR_DIR": str(settings.var_dir),
        "MBYN_BOOTSTRAP_SERVERS": settings.bootstrap(),
        "MBYN_TOPIC_PREFIX": settings.topic_prefix,
        "MBYN_WAREHOUSE_URL": settings.warehouse(),
        **security_environment(settings),
        **connection_env(settings),
    }
    if home.exists():
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = _jwt_secret(settings)
    return env


def _process_env(settings: Settings, port: int, dags_folder: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(airflow_env(settings, port, dags_folder))
    # `airflow standalone` starts its components as `airflow <component>` from PATH.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# Users and passwords ---------------------------------------------------------------------------------


def _stored_passwords(settings: Settings) -> dict[str, str]:
    """user → password from the 0600 password file; users missing from it (or with a password under 8 characters,
    like the old default ``admin``) get a random one (written back).

    ConfigError when the file is not a JSON object of strings (delete it: new passwords at the next start).
    """
    path = password_file(settings)
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        stored = {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it and restart Airflow "
                          "(`mbyn airflow down` / `up`): new passwords are generated") from None
    if not isinstance(stored, dict) or not all(isinstance(v, str) and v for v in stored.values()):
        raise ConfigError(f"{path} must be a JSON object of user → password; delete it and restart Airflow "
                          "(`mbyn airflow down` / `up`): new passwords are generated")
    # A password under 8 characters counts as missing: the old default {"admin": "admin"} of a checkout started
    # before the random passwords must not survive the upgrade (MBYN_AIRFLOW_PASSWORD has the same minimum).
    missing = [user for user in USERS if len(stored.get(user, "")) < 8]
    too_open = path.exists() and path.stat().st_mode & 0o077  # e.g. a file written by hand: narrowed to 0600
    if missing or too_open:
        stored.update({user: secrets.token_urlsafe(18) for user in missing})
        atomic_write_json(path, stored, mode=0o600)
    return stored


def password(settings: Settings, user: str = ADMIN_USER) -> str:
    """The password of ``user`` (``admin`` or ``viewer``) of the local Airflow.

    ``MBYN_AIRFLOW_PASSWORD`` for admin when set; otherwise the one in the 0600 password file, generated on
    first use (so a client may ask before the first start). ConfigError for another user name.
    """
    if user not in USERS:
        raise ConfigError(f"no user {user!r} in the local Airflow; its users are {', '.join(USERS)}")
    if user == ADMIN_USER and settings.airflow_password is not None:
        return settings.airflow_password.get_secret_value()
    return _stored_passwords(settings)[user]


def write_password(settings: Settings) -> None:
    """Make the password file complete before start: every user of ``USERS``, admin's override applied."""
    stored = _stored_passwords(settings)
    if settings.airflow_password is not None and stored[ADMIN_USER] != settings.airflow_password.get_secret_value():
        stored[ADMIN_USER] = settings.airflow_password.get_secret_value()
        atomic_write_json(password_file(settings), stored, mode=0o600)


# Processes -------------------------------------------------------------------------------------------


def is_running(state: AirflowState) -> bool:
    return group_alive(state.pid)


def _stop(state: AirflowState, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group, wait, then SIGKILL the group and every descendant recorded before."""
    stop_process_groups([state.pid], timeout_s, who="airflow standalone process group", with_descendants=True)


def _version(port: int) -> str | None:
    """The version the API server reports, or None while it does not answer."""
    import httpx  # noqa: PLC0415 - only to call Airflow (60 ms); every CLI command imports this module

    try:
        response = httpx.get(f"{base_url(port)}/api/v2/version", timeout=2.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return str(response.json().get("version"))


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Lifecycle -------------------------------------------------------------------------------------------


def up(settings: Settings, timeout_s: float = START_TIMEOUT_S, dags_folder: Path | None = None) -> AirflowState:
    """Start ``airflow standalone`` and wait until its API answers; return the recorded state.

    ``dags_folder`` replaces the repository's ``dags/`` (tests run one DAG without the others' load).
    Idempotent: an instance already recorded and alive is returned as is. Raises PortInUseError when a
    port is taken, OrchestratorError when the process exits or the API does not answer within
    ``timeout_s`` (the instance is stopped again then, and the error quotes the end of its log);
    Ctrl-C while waiting stops it too.
    """
    path = state_file(settings)
    current = AirflowState.load(path)
    if current is not None and is_running(current):
        log(f"already running (pid {current.pid}) at {current.url}")
        return current
    port = settings.airflow_port
    for taken, name in ((port, "MBYN_AIRFLOW_PORT"), (settings.airflow_log_port, "MBYN_AIRFLOW_LOG_PORT"),
                        (settings.airflow_log_port + 1, "MBYN_AIRFLOW_LOG_PORT (+1)")):
        if port_open(taken):
            raise PortInUseError(f"port {taken} is in use; set {name} to a free port")

    log(f"creating catalog topics on {settings.bootstrap()} (watchers need them) ...")
    apply_topics(as_principal(settings))

    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    # Owner only: Airflow's database (DAG run parameters, XComs) and task logs are readable without its login.
    settings.airflow_home.chmod(0o700)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    write_password(settings)
    out = log_file(settings)
    env = _process_env(settings, port, dags_folder)
    log(f"starting airflow standalone (AIRFLOW_HOME={settings.airflow_home}, log {out}) ...")
    with out.open("ab") as fh:
        process = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"],
                                   env=env, cwd=settings.airflow_home, stdin=subprocess.DEVNULL,
                                   stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    state = AirflowState(pid=process.pid, port=port, url=base_url(port), log_file=str(out))
    state.save(path)

    started = time.monotonic()
    try:
        version = _wait_until_ready(settings, state, process, started, timeout_s)
    except KeyboardInterrupt:
        log("interrupted: stopping the half-started Airflow")
        down(settings)
        raise
    log(f"Airflow {version} ready after {time.monotonic() - started:.0f}s: {state.url} ({login_hint(settings)})")
    return state


def _wait_until_ready(settings: Settings, state: AirflowState, process: subprocess.Popen[bytes],
                      started: float, timeout_s: float) -> str:
    """Poll ``/api/v2/version`` until it answers; stop the instance and raise if it dies or times out."""
    out = Path(state.log_file)
    next_progress = started + 15
    while True:
        version = _version(state.port)
        if version is not None:
            return version
        if process.poll() is not None:
            state_file(settings).unlink(missing_ok=True)
            _stop(state)
            raise OrchestratorError(f"airflow standalone exited with status {process.returncode}; "
                                    f"end of {out}:\n{_log_tail(out)}")
        now = time.monotonic()
        if now - started > timeout_s:
            down(settings)
            raise OrchestratorError(f"the Airflow API did not answer on {state.url} within {timeout_s:.0f}s; "
                                    f"end of {out}:\n{_log_tail(out)}")
        if now >= next_progress:
            log(f"waiting for the API server on {state.url} ({now - started:.0f}s) ...")
            next_progress = now + 15
        time.sleep(1.0)


def down(settings: Settings, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the recorded instance; False when none was running."""
    path = state_file(settings)
    state = AirflowState.load(path)
    if state is None:
        return False
    running = is_running(state)
    if running:
        log(f"stopping Airflow (process group {state.pid}) ...")
        _stop(state, timeout_s)
        log("stopped")
    path.unlink(missing_ok=True)
    return running


def status(settings: Settings) -> dict[str, object]:
    """Whether the recorded instance runs, its URL and the version its API reports."""
    state = AirflowState.load(state_file(settings))
    if state is None or not is_running(state):
        return {"running": False}
    return {"running": True, "pid": state.pid, "url": state.url, "version": _version(state.port),
            "log_file": state.log_file}


def current_port(settings: Settings) -> int:
    """The port of the recorded instance, else the configured one."""
    state = AirflowState.load(state_file(settings))
    return state.port if state is not None else settings.airflow_port


def login_hint(settings: Settings) -> str:
    """Where the login of the local Airflow comes from — never the password itself (terminals are shared)."""
    return (f"users {', '.join(USERS)}; `mbyn airflow password [--user {VIEWER_USER}]` shows theirs, "
            f"kept 0600 in {password_file(settings)}")


def api_client(settings: Settings, user: str = ADMIN_USER, timeout_s: float = 30.0) -> httpx.Client:
    """An ``httpx.Client`` on the local Airflow REST API, logged in as ``user`` (``POST /auth/token``)."""
    import httpx  # noqa: PLC0415 - as in _version

    url = base_url(current_port(settings))
    try:
        response = httpx.post(f"{url}/auth/token", json={"username": user, "password": password(settings, user)},
                              timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise OrchestratorError(f"no Airflow API at {url} ({exc}); start it with `mbyn airflow up`") from None
    if response.status_code not in (200, 201):
        hint = "MBYN_AIRFLOW_PASSWORD" if user == ADMIN_USER else str(password_file(settings))
        raise OrchestratorError(f"Airflow at {url} refused the login of {user!r} "
                                f"(HTTP {response.status_code}); check {hint}")
    token = response.json()["access_token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)


def env_lines(settings: Settings) -> list[str]:
    """``export`` lines that point the ``airflow`` CLI at the local instance (``eval "$(mbyn airflow env)"``)."""
    env = airflow_env(settings, current_port(settings))
    return [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
