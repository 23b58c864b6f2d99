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

    {"pid": <pid of mbyn run>, "started_at": <unix time>, "security": "open" | "scram", "topic_prefix": "...",
     "bootstrap_servers": "...", "kafka_port": <n>, "kafka_controller_port": <n>, "postgres_port": <n>,
     "warehouse_url": "<URL without its password when referenced>", "warehouse_password_file": <path or null>,
     "airflow_url": <URL or null>}

The warehouse password is not copied when it can be referenced: a URL whose password is the content of the
local PostgreSQL's ``password`` file is stored without it, with the file's path; ``running_pipeline``
puts it back when read. ``use_running_pipeline`` applies the record to the settings of a command —
only the values the user did not set (``MBYN_*`` variables and options win); a file whose pid is not alive
is ignored (a run killed with SIGKILL leaves it behind), and so defaults apply as without a run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mbyn.errors import ConfigError
from mbyn.files import atomic_write_json
from mbyn.process import pid_alive
from mbyn.settings import Settings, hide_password

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


def write_pipeline(settings: Settings, *, pid: int, airflow_url: str | None = None,
                   password_file: Path | None = None) -> dict[str, Any]:
    """Record the pipeline ``settings`` describe (the run's effective settings) as run by ``pid``; the document.

    ``password_file``: where the warehouse password is kept (the local PostgreSQL's); when the URL's password
    is that file's content, the URL is stored without it and the file is referenced instead.
    """
    url, reference = settings.warehouse(), None
    if password_file is not None:
        try:
            parsed = make_url(url)
            stored = password_file.read_text(encoding="utf-8").strip()
        except (ArgumentError, OSError):
            parsed, stored = None, None
        if parsed is not None and parsed.password and parsed.password == stored:
            url = parsed._replace(password=None).render_as_string(hide_password=False)  # set() keeps it on None
            reference = str(password_file)
    document = {"pid": pid, "started_at": time.time(), "security": settings.security,
                "topic_prefix": settings.topic_prefix, "bootstrap_servers": settings.bootstrap(),
                "kafka_port": settings.kafka_port, "kafka_controller_port": settings.kafka_controller_port,
                "postgres_port": settings.postgres_port, "warehouse_url": url, "warehouse_password_file": reference,
                "airflow_url": airflow_url}
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


def running_pipeline(settings: Settings) -> dict[str, Any] | None:
    """The record of the running pipeline with its warehouse password put back; None when there is no record,
    it is unreadable, or its pid is not alive. ConfigError when the referenced password file cannot be read."""
    try:
        document = json.loads(pipeline_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("pid"), int) or not pid_alive(document["pid"]):
        return None
    reference = document.get("warehouse_password_file")
    if reference and document.get("warehouse_url"):
        try:
            password = Path(reference).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"the running pipeline's warehouse password file {reference} cannot be read ({exc}); "
                              "set MBYN_WAREHOUSE_URL") from None
        url = make_url(document["warehouse_url"]).set(password=password)
        document["warehouse_url"] = url.render_as_string(hide_password=False)
    return document


def use_running_pipeline(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` with the running pipeline's values for the ``PIPELINE_SETTINGS`` the user did not set, and
    the line that says so (password masked; None when nothing changed). Without a running pipeline:
    ``settings`` unchanged."""
    pipeline = running_pipeline(settings)
    if pipeline is None:
        return settings, None
    current = {"warehouse_url": settings.warehouse(), "security": settings.security,
               "topic_prefix": settings.topic_prefix, "bootstrap_servers": settings.bootstrap()}
    update = {name: pipeline[name] for name in PIPELINE_SETTINGS
              if name not in settings.model_fields_set and isinstance(pipeline.get(name), str)
              and pipeline[name] != current[name]}
    if not update:
        return settings, None
    shown = {"warehouse_url": "warehouse", "security": "security", "topic_prefix": "topic prefix",
             "bootstrap_servers": "Kafka"}
    parts = [f"{shown[n]}: {hide_password(v) if n == 'warehouse_url' else repr(v) if n == 'topic_prefix' else v}"
             for n, v in update.items()]
    line = f"using the running pipeline's {'; '.join(parts)} (mbyn run, pid {pipeline['pid']})"
    return settings.model_copy(update=update), line

