"""The run-state file of ``mbyn run``: which worker copies run, and how each one last exited.

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

from mbyn.files import atomic_write_json
from mbyn.process import pid_alive
from mbyn.settings import Settings

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
