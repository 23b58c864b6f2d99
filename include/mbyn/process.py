"""Shared process plumbing for producers and consumers: stop signals, logging, rate limiting, progress.

``pid_alive`` is here too (the run-state reader needs it); starting and stopping local process groups and
probing ports is ``mbyn.local.processes``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def backoff_delays(initial: float = 0.5, maximum: float = 15.0, factor: float = 2.0) -> Iterator[float]:
    """Infinite exponential back-off sequence: 0.5, 1, 2, 4 ... capped at ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * factor)


# Processes -----------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead). Not a process id (≤ 0, too large): False.

    ``pid`` often comes from a state file: 0 or a negative number would name a process *group* to ``kill``.
    """
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
