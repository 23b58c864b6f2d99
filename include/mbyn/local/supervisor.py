"""Run M producers and N consumer groups as supervised processes, several copies each.

Every worker copy is a ``mbyn produce <name>`` or ``mbyn consume <name>`` process in its own process group
(so a stop signal reaches its children too — the Java and Go producers are grandchildren), with output
in ``var/logs/workers/<worker>-<copy>.log``. A copy that exits while the pipeline runs is restarted with
exponential back-off (1 s … 60 s, reset after a minute of healthy running). On SIGTERM/SIGINT or when
``duration`` is over, every process group gets SIGTERM (producers flush, consumers finish their batch and
commit), then SIGKILL after ``grace`` seconds. Nothing is left behind.

Which workers run, how many copies and with which arguments comes from the worker registry
(``mbyn.workers``: ``copies``, ``args``, ``instance_id``); ``--scale`` changes the copies.

The running workers are recorded in ``var/run/workers.json`` (``mbyn.run_state``: written atomically, mode
0600) so that ``mbyn down`` in another terminal can stop a pipeline whose terminal was closed. The same file
records each copy's exits: how often it was restarted, its last exit code and time, and its last error line;
``mbyn.run_state.worker_status`` reads it for ``mbyn status`` and the pipeline view.

Secured mode (``MBYN_SECURITY=scram``) against the local cluster: each copy authenticates as its own
service — ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` of the worker's name from the local secret
store (``mbyn.kafka.security.principal_environment``) — so a producer can write only its own topics.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mbyn.errors import ConfigError
from mbyn.kafka.security import credentials_file, principal_environment
from mbyn.local.processes import stop_process_groups
from mbyn.process import StopFlag
from mbyn.run_state import describe_exit, last_error_line, state_file, write_state
from mbyn.settings import Settings
from mbyn.workers import WORKERS, by_key

log = logging.getLogger("mbyn.run")

#: Exit times kept per copy in the run-state file.
KEPT_EXITS = 20


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
        for key, count in self.scale.items():
            worker = by_key(key)
            for i in range(count):
                argv = [sys.executable, "-m", "mbyn.cli", worker.verb, worker.name, *worker.args]
                if worker.instance_id:  # static membership: a restarted copy gets its partitions back at once
                    argv += ["--instance-id", f"{worker.name}-{i}"]
                self.copies.append(Copy(worker.key, i, argv, logs / f"{worker.name}-{i}.log"))

    @property
    def state_file(self) -> Path:
        return state_file(self.settings)

    def _env(self, copy: Copy) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.settings.security == "scram" and credentials_file(self.settings).exists():
            # the local cluster: one principal per service
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
        """Write the run-state file (``mbyn.run_state``): never half-written, private to the user."""
        pids = {c.label: c.proc.pid for c in self.copies if c.proc is not None and c.proc.poll() is None}
        copies = {c.label: {"worker": c.worker, "pid": pids.get(c.label), "restarts": c.restarts,
                            "exits": c.exits, "last_exit_code": c.last_exit_code, "last_error": c.last_error,
                            "log": str(c.log_path)} for c in self.copies}
        state = {"supervisor": os.getpid(), "workers": pids, "updated_at": time.time(), "copies": copies}
        write_state(self.settings, state)

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
            copy.last_error = last_error_line(copy.log_path, copy.log_start) or describe_exit(code)
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


def parse_scale(items: list[str]) -> dict[str, int]:
    """``--scale NAME=K`` (NAME a worker's name, or ``produce:NAME`` / ``consume:NAME``; K ≥ 0, 0 disables it)
    over each worker's default ``copies``. Keys are ``Worker.key``; a ``<verb>:<name>`` that names no worker of
    that kind is ignored."""
    scale = {w.key: w.copies for w in WORKERS.values()}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise ConfigError(f"--scale expects NAME=COUNT, got {item!r}")
        if ":" in name:
            key = name
        elif name in WORKERS:
            key = WORKERS[name].key
        else:
            names = {kind: ", ".join(w.name for w in WORKERS.values() if w.kind == kind)
                     for kind in ("producer", "consumer")}
            raise ConfigError(f"--scale {name}: unknown worker; producers: {names['producer']}; "
                              f"consumers: {names['consumer']}")
        scale[key] = int(count)
    known = {w.key for w in WORKERS.values()}
    return {k: v for k, v in scale.items() if v > 0 and k in known}
