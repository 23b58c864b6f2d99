"""The run-state files of ``mbyn run``: what it started (``pipeline.json``), which worker copies run and how
each one last exited (``workers.json``).

``mbyn run``'s supervisor (``mbyn.local.supervisor``) writes ``var/run/workers.json`` through
``write_state`` each time a copy starts or exits (atomically, mode 0600: never half-written, private to the
user); ``mbyn down``, ``mbyn status`` and the pipeline view read it. The document::

    {"supervisor": <pid>, "workers": {"<label>": <pid>, ...}, "updated_at": <unix time>,
     "copies": {"<label>": {"worker": "produce:clickstream", "pid": <pid or null>, "restarts": <n>,
                            "exits": [<unix time>, ...], "last_exit_code": <n or null>,
                            "last_error": <line or null>, "log": <path>}}}

A copy's ``last_error`` is the last line of its log since that start that mentions an error, else its last
line (``last_error_line``), else how it exited (``describe_exit``). ``worker_status`` reads the file for
``mbyn status`` and the view: a copy that exited at least ``CRASH_LOOP_RESTARTS`` times within
``CRASH_LOOP_WINDOW_S`` is ``crash-looping``.

``var/run/pipeline.json`` (``write_pipeline``, mode 0600, removed by ``remove_pipeline`` when the run ends)
tells the commands typed next to a running pipeline where it is::

    {"pid": <pid of mbyn run>, "process_start": <its start time, /proc/<pid>/stat field 22, or null>,
     "started_at": <unix time>, "security": "open" | "scram", "topic_prefix": "...",
     "bootstrap_servers": "...", "kafka_port": <n>, "kafka_controller_port": <n>, "postgres_port": <n>,
     "warehouse_url": "<URL, without its password when it is the local PostgreSQL's>",
     "warehouse_password": <the marker LOCAL_POSTGRES_PASSWORD or null>, "airflow_url": <URL or null>}

The local PostgreSQL's password is not copied: the URL is stored without it and ``warehouse_password`` holds
the marker ``local-postgres``; the reader takes the password from that server's own file of the URL's role
(``var/postgres/password``, ``password-mbyn_loader``, ``password-mbyn_reader``) and only for a URL on
127.0.0.1/localhost at the record's ``postgres_port`` — the record names no path.
``use_running_pipeline`` applies the record to the settings of a command — only the values the user did not
set (``MBYN_*`` variables and options win, decided before the record is read); a file whose pid is not alive
is ignored silently (a run killed with SIGKILL leaves it behind), and so defaults apply as without a run.
A record that is a symlink, not the user's own, readable or writable by others, malformed, invalid as
settings, or whose pid is now another process (its start time differs) is ignored with one line on stderr.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mbyn.files import atomic_write_json
from mbyn.process import pid_alive
from mbyn.settings import POSTGRES_LOADER, POSTGRES_READER, POSTGRES_SUPERUSER, Settings, hide_password

#: A copy that exited this many times within the window is shown as crash-looping.
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_S = 300
#: How much of a log's end is searched for the last error line, and its longest form.
LOG_TAIL_BYTES = 64 * 1024
MAX_ERROR_LINE = 300
_ERROR_WORDS = re.compile(r"error|exception|fatal|traceback|refused|denied|killed", re.IGNORECASE)


def state_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "workers.json"


def write_state(settings: Settings, state: dict[str, Any]) -> None:
    """Replace the run-state file with ``state`` atomically (temporary file, fsync, rename), mode 0600."""
    atomic_write_json(state_file(settings), state, mode=0o600, indent=1)


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The run-state document; None when there is none or it is unreadable or not a JSON object."""
    try:
        state = json.loads(state_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def last_error_line(log_path: Path, start: int = 0) -> str | None:
    """The last line of ``log_path`` after byte ``start`` that mentions an error (else its last non-empty
    line), at most ``MAX_ERROR_LINE`` characters; None when there is none or the log cannot be read."""
    try:
        with open(log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - LOG_TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        return None
    line = next((ln for ln in reversed(lines) if _ERROR_WORDS.search(ln)), lines[-1])
    return line if len(line) <= MAX_ERROR_LINE else line[: MAX_ERROR_LINE - 1] + "…"


def describe_exit(code: int) -> str:
    """How a process that printed nothing ended: its exit code, or the signal that killed it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (no output)"
        except ValueError:
            return f"killed by signal {-code} (no output)"
    return f"exited with code {code} (no output)"


def worker_status(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """The copies of a running ``mbyn run`` (its state file) with their restarts and state; never raises.

    A copy is ``crash-looping`` when it exited ``CRASH_LOOP_RESTARTS`` times within ``CRASH_LOOP_WINDOW_S``
    (while the supervisor runs), ``restarting`` while it waits for its next start, ``running`` otherwise;
    ``unknown`` when the supervisor that wrote the file is gone. ``supervisor`` is None without a run.
    """
    result: dict[str, Any] = {"state_file": str(state_file(settings)), "supervisor": None, "copies": [],
                              "crash_looping": [], "window_s": CRASH_LOOP_WINDOW_S}
    state = read_state(settings)
    if state is None:
        return result
    now = time.time() if now is None else now
    pid = state.get("supervisor")
    running = isinstance(pid, int) and pid_alive(pid)
    updated = state.get("updated_at")
    result["supervisor"] = {"pid": pid, "running": running,
                            "updated_at": _iso(updated) if isinstance(updated, int | float) else None}
    copies = state.get("copies")
    for label, info in sorted(copies.items() if isinstance(copies, dict) else []):
        if not isinstance(info, dict):
            continue
        exits = [t for t in info.get("exits") or [] if isinstance(t, int | float)]
        recent = sum(1 for t in exits if now - t <= CRASH_LOOP_WINDOW_S)
        if not running:
            copy_state = "unknown"
        elif recent >= CRASH_LOOP_RESTARTS:
            copy_state = "crash-looping"
        else:
            copy_state = "running" if info.get("pid") else "restarting"
        result["copies"].append({
            "label": str(label), "worker": info.get("worker"), "pid": info.get("pid"), "state": copy_state,
            "restarts": info.get("restarts", 0), "recent_restarts": recent,
            "last_exit_code": info.get("last_exit_code"), "last_exit_at": _iso(exits[-1]) if exits else None,
            "last_error": info.get("last_error"), "log": info.get("log")})
        if copy_state == "crash-looping":
            result["crash_looping"].append(str(label))
    return result


def _iso(ts: float) -> str | None:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


# What a running `mbyn run` started: var/run/pipeline.json ---------------------------------------------------

#: The settings a command takes from the running pipeline when the user did not set them.
PIPELINE_SETTINGS = ("warehouse_url", "security", "topic_prefix", "bootstrap_servers")


def pipeline_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "pipeline.json"


#: ``warehouse_password`` in the record: the URL's password is the local PostgreSQL's (not copied).
LOCAL_POSTGRES_PASSWORD = "local-postgres"  # pragma: allowlist secret - a marker, not a password
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


def local_postgres_password_file(settings: Settings, role: str = POSTGRES_SUPERUSER) -> Path:
    """The local PostgreSQL's password file of ``role`` (``Settings.local_postgres_password_file``, the one
    place ``mbyn.local.postgres`` writes it; a unit test checks they agree)."""
    return settings.local_postgres_password_file(role)


def _role(url: URL) -> str:
    """The local PostgreSQL role a URL logs in as whose password file may be read (the superuser otherwise)."""
    return url.username if url.username in (POSTGRES_LOADER, POSTGRES_READER) else POSTGRES_SUPERUSER


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (field 22 of /proc/<pid>/stat, clock ticks since boot), else None: tells
    the run's process from a later one that got its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def write_pipeline(settings: Settings, *, pid: int, airflow_url: str | None = None) -> dict[str, Any]:
    """Record the pipeline ``settings`` describe (the run's effective settings) as run by ``pid``; the document.

    When the warehouse is the local PostgreSQL (127.0.0.1/localhost, ``settings.postgres_port``) and the URL's
    password is that server's (``local_postgres_password_file``), the URL is stored without it and
    ``warehouse_password`` says ``local-postgres``: the reader takes it from that file, never from a path in
    the record.
    """
    url, marker = settings.warehouse(), None
    try:
        parsed = make_url(url)
        stored = _read_private(local_postgres_password_file(settings, _role(parsed)), owner_only=False).strip()
    except (ArgumentError, ValueError, OSError):
        parsed, stored = None, None
    if (parsed is not None and parsed.password and parsed.password == stored and parsed.host in _LOCAL_HOSTS
            and parsed.port == settings.postgres_port):
        url = parsed._replace(password=None).render_as_string(hide_password=False)  # set() keeps it on None
        marker = LOCAL_POSTGRES_PASSWORD
    document = {"pid": pid, "process_start": process_start(pid), "started_at": time.time(),
                "security": settings.security, "topic_prefix": settings.topic_prefix,
                "bootstrap_servers": settings.bootstrap(), "kafka_port": settings.kafka_port,
                "kafka_controller_port": settings.kafka_controller_port, "postgres_port": settings.postgres_port,
                "warehouse_url": url, "warehouse_password": marker, "airflow_url": airflow_url}
    atomic_write_json(pipeline_file(settings), document, mode=0o600, indent=1)
    return document


def remove_pipeline(settings: Settings, pid: int | None = None) -> None:
    """Remove the pipeline record — only the one of ``pid`` when given (another run's record stays)."""
    path = pipeline_file(settings)
    if pid is not None:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") != pid:
                return
        except (OSError, ValueError, AttributeError):
            return
    path.unlink(missing_ok=True)


class _Ignored(Exception):
    """The record cannot be trusted or used; the message says why."""


MAX_RECORD_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value: object, limit: int = 80) -> str:
    """``value`` fit for one line on a terminal: control characters escaped, at most ``limit`` characters,
    a URL's password masked."""
    text = hide_password(value) if isinstance(value, str) else repr(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_private(path: Path, *, owner_only: bool = True) -> str:
    """The text of ``path``, opened without following a symlink; OSError unless it is a regular file (and,
    with ``owner_only``, owned by this user and neither readable nor writable by group or others)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if owner_only and info.st_uid != os.getuid():
            raise OSError(f"{path} is owned by uid {info.st_uid}, not by this user")
        if owner_only and info.st_mode & 0o077:
            raise OSError(f"{path} is accessible to group or others (mode {stat.S_IMODE(info.st_mode):o})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD_BYTES:
        raise OSError(f"{path} is larger than {MAX_RECORD_BYTES} bytes")
    return data.decode("utf-8")


_TYPES: dict[str, tuple[type, ...]] = {
    "security": (str,), "topic_prefix": (str,), "bootstrap_servers": (str,), "warehouse_url": (str,),
    "kafka_port": (int,), "kafka_controller_port": (int,), "postgres_port": (int,),
    "warehouse_password": (str, type(None)), "airflow_url": (str, type(None)), "process_start": (str, type(None)),
    "started_at": (int, float)}


def _load_record(settings: Settings) -> dict[str, Any] | None:
    """The record when it belongs to a live ``mbyn run``; None when there is none or its pid is gone;
    _Ignored when it cannot be trusted or is malformed."""
    path = pipeline_file(settings)
    try:
        text = _read_private(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Ignored("it is a symbolic link") from None
        raise _Ignored(exc.strerror or str(exc)) from None
    try:
        document = json.loads(text)
    except ValueError:
        raise _Ignored("not valid JSON") from None
    if not isinstance(document, dict):
        raise _Ignored("not a JSON object")
    pid = document.get("pid")
    if type(pid) is not int or pid <= 0:
        raise _Ignored(f"pid {shown(pid)} is not a process id")
    for name, types in _TYPES.items():
        value = document.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise _Ignored(f"{name} {shown(value)} is not a {' or '.join(t.__name__ for t in types)}")
    if document["warehouse_password"] not in (None, LOCAL_POSTGRES_PASSWORD):
        raise _Ignored(f"warehouse_password {shown(document['warehouse_password'])} is not "
                       f"{LOCAL_POSTGRES_PASSWORD!r} or null")
    if not pid_alive(pid):
        return None  # a run killed with SIGKILL leaves its record behind
    if process_start(pid) != document["process_start"]:
        raise _Ignored(f"pid {pid} is not the mbyn run that wrote it (the process started at another time)")
    return document


def _warehouse_url(settings: Settings, document: dict[str, Any]) -> str:
    """The record's warehouse URL with the local PostgreSQL's password put back when it says so."""
    url = document["warehouse_url"]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise _Ignored(f"warehouse_url {shown(url)} is not a database URL") from None
    if document["warehouse_password"] != LOCAL_POSTGRES_PASSWORD:
        return str(url)
    if parsed.host not in _LOCAL_HOSTS or parsed.port != document["postgres_port"]:
        raise _Ignored(f"warehouse_url {shown(url)} is not the local PostgreSQL (127.0.0.1:"
                       f"{document['postgres_port']}), so it does not get its password")
    password_file = local_postgres_password_file(settings, _role(parsed))
    try:
        password = _read_private(password_file, owner_only=False).strip()
    except (OSError, ValueError) as exc:
        raise _Ignored(f"the local PostgreSQL's password file {password_file} cannot be read ({exc})") from None
    return parsed.set(password=password).render_as_string(hide_password=False)


def _ignoring(settings: Settings, why: str) -> None:
    print(f"mbyn: ignoring {pipeline_file(settings)}: {why}", file=sys.stderr, flush=True)


def running_pipeline(settings: Settings) -> dict[str, Any] | None:
    """The record of the running pipeline with its warehouse password put back; None when there is no record
    or its pid is not alive. A record that cannot be trusted (a symlink, not this user's, readable by others,
    its pid now another process) or is malformed is ignored with one line on stderr."""
    try:
        document = _load_record(settings)
        if document is not None:
            document["warehouse_url"] = _warehouse_url(settings, document)
    except _Ignored as exc:
        _ignoring(settings, str(exc))
        return None
    return document


def _explicit(settings: Settings, name: str) -> bool:
    """Whether the user set ``name`` (an ``MBYN_*`` variable or an option); the Kafka address counts as set
    when its port is."""
    fields = settings.model_fields_set
    return name in fields or (name == "bootstrap_servers" and "kafka_port" in fields)


def use_running_pipeline(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` with the running pipeline's values for the ``PIPELINE_SETTINGS`` the user did not set, and
    the line that says so (password masked; None when nothing changed). Without a running pipeline:
    ``settings`` unchanged. A setting the user set is decided before the record is read: its value in the
    record (the warehouse password included) is never resolved. The record's values are validated as the
    settings are; an invalid record is ignored with one line on stderr."""
    wanted = [name for name in PIPELINE_SETTINGS if not _explicit(settings, name)]
    if not wanted:
        return settings, None
    try:
        document = _load_record(settings)
        if document is None:
            return settings, None
        values = {name: _warehouse_url(settings, document) if name == "warehouse_url" else document[name]
                  for name in wanted}
        try:
            validated = Settings.model_validate({**{n: getattr(settings, n) for n in settings.model_fields_set},
                                                 **values})
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])} {shown(e.get('input'))}: {e['msg']}"
                               for e in exc.errors())
            raise _Ignored(errors) from None
    except _Ignored as exc:
        _ignoring(settings, str(exc))
        return settings, None
    current = {"warehouse_url": settings.warehouse(), "security": settings.security,
               "topic_prefix": settings.topic_prefix, "bootstrap_servers": settings.bootstrap()}
    update = {name: getattr(validated, name) for name in wanted if values[name] != current[name]}
    if not update:
        return settings, None
    labels = {"warehouse_url": "warehouse", "security": "security", "topic_prefix": "topic prefix",
              "bootstrap_servers": "Kafka"}
    parts = [f"{labels[n]}: {shown(repr(v) if n == 'topic_prefix' else v, 200)}" for n, v in update.items()]
    line = f"using the running pipeline's {'; '.join(parts)} (mbyn run, pid {document['pid']})"
    return settings.model_copy(update=update), line
