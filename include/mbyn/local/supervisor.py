"""Run M producers and N consumer groups as supervised processes, several copies each.

Every worker copy is a ``mbyn produce <name>`` or ``mbyn consume <name>`` process in its own process group
(so a stop signal reaches its children too — the Java and Go producers are grandchildren), with output
in ``var/logs/workers/<worker>-<copy>.log``. A copy that exits while the pipeline runs is restarted with
exponential back-off (1 s … 60 s, reset after a minute of healthy running). On SIGTERM/SIGINT or when
``duration`` is over, every process group gets SIGTERM (producers flush, consumers finish their batch and
commit), then SIGKILL after ``grace`` seconds. Nothing is left behind.

The running workers are recorded in ``var/run/workers.json`` (written atomically: temporary file, fsync,
rename; mode 0600) so that ``mbyn down`` in another terminal can stop a pipeline whose terminal was closed.
The same file records each copy's exits: how often it was restarted, its last exit code and time, and its
last error line (the last line of its log since that start that mentions an error, else its last line).
``worker_status`` reads it for ``mbyn status`` and the pipeline view: a copy that exited at least
``CRASH_LOOP_RESTARTS`` times within ``CRASH_LOOP_WINDOW_S`` is ``crash-looping``.

Secured mode (``MBYN_SECURITY=scram``) against the local cluster: each copy authenticates as its own
service — ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` of the worker's name from the local secret
store (``mbyn.kafka.security.principal_environment``) — so a producer can write only its own topics.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mbyn.errors import ConfigError
from mbyn.process import StopFlag, pid_alive, stop_process_groups
from mbyn.settings import Settings

log = logging.getLogger("mbyn.run")

#: Copies per worker when `--scale` does not say otherwise: the lab's M×N shape, small enough for 2 cores.
DEFAULT_SCALE: dict[str, int] = {
    "produce:clickstream": 2,
    "produce:payments": 2,
    "produce:shipments": 2,
    "consume:warehouse-loader": 2,
    "consume:order-enricher": 2,
    "consume:sales-aggregator": 2,
    "consume:fraud-detector": 2,
    "consume:dead-letters": 1,
    "consume:lake-archiver": 2,
    "consume:lag-monitor": 1,
}
#: Extra arguments per worker in the demo (rates chosen so that a laptop stays responsive).
#: A copy that exited this many times within the window is shown as crash-looping.
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_S = 300
#: Exit times kept per copy; how much of a log's end is searched for the last error line, and its longest form.
KEPT_EXITS = 20
LOG_TAIL_BYTES = 64 * 1024
MAX_ERROR_LINE = 300
_ERROR_WORDS = re.compile(r"error|exception|fatal|traceback|refused|denied|killed", re.IGNORECASE)
DEFAULT_ARGS: dict[str, list[str]] = {
    "produce:clickstream": ["--rate", "25", "--invalid-ratio", "0.005"],
    "produce:shipments": ["--stage-delay", "5"],
}


@dataclass
class Copy:
    worker: str  # "produce:clickstream"
    index: int
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    failures: int = 0
    log_start: int = 0  # size of the log when this run of the copy started: its own output follows
    exits: list[float] = field(default_factory=list)  # wall-clock times of the latest exits
    last_exit_code: int | None = None
    last_error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.worker.split(':', 1)[1]}#{self.index}"


@dataclass
class Supervisor:
    settings: Settings
    scale: dict[str, int]
    extra_env: dict[str, str] = field(default_factory=dict)
    grace: float = 30.0
    copies: list[Copy] = field(default_factory=list)
    backoff_s: float = 1.0  # first restart delay; doubles per failure up to max_backoff_s
    max_backoff_s: float = 60.0
    poll_s: float = 1.0  # how often exited copies are looked for

    def __post_init__(self) -> None:
        logs = self.settings.logs_dir / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        for worker, count in self.scale.items():
            verb, name = worker.split(":", 1)
            for i in range(count):
                argv = [sys.executable, "-m", "mbyn.cli", verb, name, *DEFAULT_ARGS.get(worker, [])]
                if verb == "consume":
                    argv += ["--instance-id", f"{name}-{i}"] if _supports_instance_id(name) else []
                self.copies.append(Copy(worker, i, argv, logs / f"{name}-{i}.log"))

    @property
    def state_file(self) -> Path:
        return self.settings.var_dir / "run" / "workers.json"

    def _env(self, copy: Copy) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.settings.security == "scram":
            from mbyn.kafka.security import credentials_file, principal_environment

            if credentials_file(self.settings).exists():  # the local cluster: one principal per service
                env.update(principal_environment(self.settings, copy.worker.split(":", 1)[1]))
        return env

    def _start(self, copy: Copy) -> None:
        with open(copy.log_path, "ab") as out:
            copy.log_start = out.tell()
            copy.proc = subprocess.Popen(copy.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self._env(copy), start_new_session=True)
        copy.started = time.monotonic()
        self._save()

    def _save(self) -> None:
        """Write the state file atomically (see the module docstring): never half-written, private to the user."""
        pids = {c.label: c.proc.pid for c in self.copies if c.proc is not None and c.proc.poll() is None}
        copies = {c.label: {"worker": c.worker, "pid": pids.get(c.label), "restarts": c.restarts,
                            "exits": c.exits, "last_exit_code": c.last_exit_code, "last_error": c.last_error,
                            "log": str(c.log_path)} for c in self.copies}
        state = {"supervisor": os.getpid(), "workers": pids, "updated_at": time.time(), "copies": copies}
        write_private_json(self.state_file, state)

    def start(self) -> None:
        """Start every copy (returns at once)."""
        for copy in self.copies:
            self._start(copy)
        log.info("started %d worker processes (logs in %s)", len(self.copies), self.settings.logs_dir / "workers")

    def supervise(self, stop: StopFlag, deadline: float | None = None) -> None:
        """Restart exited copies until ``stop`` is set or the monotonic ``deadline`` passes."""
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                log.info("duration reached")
                return
            self._watch()
            stop.wait(self.poll_s)

    def run(self, stop: StopFlag, duration: float | None = None) -> dict[str, int]:
        """start + supervise + stop_all; returns restarts per copy."""
        self.start()
        try:
            self.supervise(stop, time.monotonic() + duration if duration else None)
        finally:
            self.stop_all()
        return {c.label: c.restarts for c in self.copies}

    def _watch(self) -> None:
        now = time.monotonic()
        for copy in self.copies:
            proc = copy.proc
            if proc is None:
                if now >= copy.next_start:
                    copy.restarts += 1
                    log.info("restarting %s (restart %d)", copy.label, copy.restarts)
                    self._start(copy)
                continue
            code = proc.poll()
            if code is None:
                if now - copy.started > 60:
                    copy.failures = 0
                continue
            copy.failures += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2.0 ** (copy.failures - 1))
            copy.exits = [*copy.exits, time.time()][-KEPT_EXITS:]
            copy.last_exit_code = code
            copy.last_error = last_error_line(copy.log_path, copy.log_start) or _describe_exit(code)
            log.warning("%s exited with code %s; restarting in %.0fs (see %s): %s", copy.label, code, delay,
                        copy.log_path, copy.last_error)
            copy.proc = None
            copy.next_start = now + delay
            self._save()

    def stop_all(self) -> None:
        """SIGTERM every process group, wait up to ``grace``, then SIGKILL what is left."""
        running = [c.proc for c in self.copies if c.proc is not None and c.proc.poll() is None]
        if running:
            log.info("stopping %d worker processes (SIGTERM, up to %.0fs) ...", len(running), self.grace)
        stop_process_groups([p.pid for p in running], self.grace, who="worker")
        for proc in running:
            try:
                proc.wait(1)
            except subprocess.TimeoutExpired:
                pass
        self.state_file.unlink(missing_ok=True)


def write_private_json(path: Path, document: Any) -> None:
    """Write ``document`` to ``path`` atomically: a 0600 temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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


def _describe_exit(code: int) -> str:
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
    path = settings.var_dir / "run" / "workers.json"
    result: dict[str, Any] = {"state_file": str(path), "supervisor": None, "copies": [], "crash_looping": [],
                              "window_s": CRASH_LOOP_WINDOW_S}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return result
    if not isinstance(state, dict):
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


def _supports_instance_id(name: str) -> bool:
    """Whether ``mbyn consume NAME`` accepts --instance-id (static membership: a restarted copy gets its
    partitions back at once instead of after a session timeout)."""
    import contextlib
    import io

    from mbyn.cli.main import build_parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["consume", name, "--instance-id", "probe"])
        except SystemExit:
            return False
    return True


def parse_scale(items: list[str]) -> dict[str, int]:
    """``--scale NAME=K`` (NAME a producer or consumer name, K ≥ 0; 0 disables it) over the defaults."""
    from mbyn.consumers import CONSUMERS
    from mbyn.sources import PRODUCERS

    scale = dict(DEFAULT_SCALE)
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise ConfigError(f"--scale expects NAME=COUNT, got {item!r}")
        if name in PRODUCERS and name in CONSUMERS:
            raise ConfigError(f"--scale {name}: ambiguous; write produce:{name} or consume:{name}")
        if ":" in name:
            key = name
        elif name in PRODUCERS:
            key = f"produce:{name}"
        elif name in CONSUMERS:
            key = f"consume:{name}"
        else:
            raise ConfigError(f"--scale {name}: unknown worker; producers: {', '.join(PRODUCERS)}; "
                              f"consumers: {', '.join(CONSUMERS)}")
        scale[key] = int(count)
    unknown = [k for k in scale if k.split(":", 1)[1] not in (PRODUCERS if k.startswith("produce") else CONSUMERS)]
    for key in unknown:  # defaults name workers that a trimmed registry may not have
        del scale[key]
    return {k: v for k, v in scale.items() if v > 0}
