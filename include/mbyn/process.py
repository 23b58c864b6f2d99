"""Shared process plumbing for producers and consumers: stop signals, logging, rate limiting, progress."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines to stderr once per process (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_mbyn", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._mbyn = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


class StopFlag:
    """Set by SIGTERM / SIGINT (or by code); loops check ``stop.is_set()`` and finish their batch.

    ``install()`` only works in the main thread; elsewhere (Airflow tasks, test threads) the flag is
    still usable and simply never set by a signal.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.set(signal.Signals(signum).name)

    def set(self, reason: str = "requested") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if stopped."""
        return self._event.wait(seconds)


class RateLimiter:
    """Token bucket: ``acquire()`` blocks just long enough to keep ``rate`` events per second on average."""

    def __init__(self, rate: float | None, stop: StopFlag | None = None) -> None:
        self.rate = rate
        self.stop = stop
        self._start = time.monotonic()
        self._count = 0

    def acquire(self) -> None:
        if not self.rate:
            return
        self._count += 1
        due = self._start + self._count / self.rate
        delay = due - time.monotonic()
        if delay > 0.002:
            if self.stop is not None:
                self.stop.wait(delay)
            else:
                time.sleep(delay)


class Progress:
    """Calls ``report()`` at most every ``interval`` seconds (progress lines on long work)."""

    def __init__(self, report: Callable[[], None], interval: float = 5.0) -> None:
        self.report = report
        self.interval = interval
        self._next = time.monotonic() + interval

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self.report()


def backoff_delays(initial: float = 0.5, maximum: float = 15.0, factor: float = 2.0):  # type: ignore[no-untyped-def]
    """Infinite exponential back-off sequence: 0.5, 1, 2, 4 ... capped at ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * factor)


# Processes and ports ------------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead). Not a process id (≤ 0, too large): False.

    ``pid`` often comes from a state file: 0 or a negative number would name a process *group* to ``kill``.
    """
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live (non-zombie) member."""
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def descendants(pid: int) -> set[int]:
    """The live children of ``pid``, their children and so on — also those that left its process group."""
    import psutil

    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _reap(pids: list[int]) -> None:
    """Collect the exit status of those ``pids`` that are our own children, so none lingers as a zombie."""
    import os

    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


KILL_WAIT_S = 10.0  # how long stop_process_groups waits for processes to vanish after SIGKILL


def stop_process_groups(pgids: list[int], grace: float, who: str = "process group", *,
                        with_descendants: bool = False) -> None:
    """SIGTERM each process group, wait up to ``grace`` seconds, then SIGKILL the groups still alive.

    SIGTERM lets producers flush and consumers commit; the bounded wait keeps a stuck process (a broker
    waiting for a lost quorum) from hanging the caller. With ``with_descendants``, the descendants of each
    group leader are recorded before the SIGTERM and waited for and killed like the groups: a process that
    moved to a process group of its own (Airflow's LocalExecutor workers do) is not orphaned. After a
    SIGKILL the call waits up to ``KILL_WAIT_S`` until the kernel has removed the processes, so their ports
    are free when it returns.
    """
    import os

    log = logging.getLogger("mbyn.process")
    known = {pid for pgid in pgids for pid in descendants(pgid)} if with_descendants else set()

    def alive() -> tuple[list[int], list[int]]:
        """(groups, recorded descendants) still running."""
        return [p for p in pgids if group_alive(p)], [p for p in known if pid_alive(p)]

    def running() -> bool:
        groups, others = alive()
        return bool(groups or others)

    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and running():
        _reap(pgids)
        time.sleep(0.2)
    groups, others = alive()
    for pgid in groups:
        log.warning("%s %d did not stop within %.0fs; sending SIGKILL", who, pgid, grace)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in others:
        log.warning("process %d (a descendant of %s %s) did not stop within %.0fs; sending SIGKILL",
                    pid, who, pgids, grace)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_WAIT_S
    while (groups or others) and time.monotonic() < deadline and running():
        _reap(pgids)
        time.sleep(0.2)
