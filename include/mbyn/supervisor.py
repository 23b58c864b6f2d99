"""Run M producers and N consumer groups as supervised processes, several copies each.

Every worker copy is a ``mbyn produce <name>`` or ``mbyn consume <name>`` process in its own process group
(so a stop signal reaches its children too — the Java and Go producers are grandchildren), with output
in ``var/logs/workers/<worker>-<copy>.log``. A copy that exits while the pipeline runs is restarted with
exponential back-off (1 s … 60 s, reset after a minute of healthy running). On SIGTERM/SIGINT or when
``duration`` is over, every process group gets SIGTERM (producers flush, consumers finish their batch and
commit), then SIGKILL after ``grace`` seconds. Nothing is left behind.

The running workers are recorded in ``var/run/workers.json`` so that ``mbyn down`` in another terminal
can stop a pipeline whose terminal was closed.

Secured mode (``MBYN_SECURITY=scram``) against the local cluster: each copy authenticates as its own
service — ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` of the worker's name from the local secret
store (``mbyn.kafka.security.principal_environment``) — so a producer can write only its own topics.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mbyn.errors import ConfigError
from mbyn.runtime import StopFlag, stop_process_groups
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
            copy.proc = subprocess.Popen(copy.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self._env(copy), start_new_session=True)
        copy.started = time.monotonic()
        self._save()

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        pids = {c.label: c.proc.pid for c in self.copies if c.proc is not None and c.proc.poll() is None}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "workers": pids}, indent=2))
        tmp.replace(self.state_file)

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
            stop.wait(1.0)

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
            delay = min(60.0, 2.0 ** (copy.failures - 1))
            log.warning("%s exited with code %s; restarting in %.0fs (see %s)", copy.label, code, delay, copy.log_path)
            copy.proc = None
            copy.next_start = now + delay

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


def _supports_instance_id(name: str) -> bool:
    """Whether ``mbyn consume NAME`` accepts --instance-id (static membership: a restarted copy gets its
    partitions back at once instead of after a session timeout)."""
    import contextlib
    import io

    from mbyn.cli import build_parser

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
