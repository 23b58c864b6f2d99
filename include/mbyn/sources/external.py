"""Run a producer written in another language (the Java payments service, the Go shipment tracker).

The launcher is what `mbyn produce <name>` and the supervisor see; the real producer is its child. The
child gets the settings it needs as ``MBYN_*`` environment variables (bootstrap servers, topic prefix, the
catalog's path), its own process group (a terminal's Ctrl-C reaches only the launcher, which forwards each
SIGTERM/SIGINT exactly once — the children treat a second signal as "exit now"), and a parent-death signal:
if the launcher is killed outright, the kernel sends the child SIGTERM, so it still flushes and commits
instead of living on as an orphan.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

from mbyn.catalog import CATALOG_FILE
from mbyn.kafka.security import security_environment
from mbyn.settings import Settings


def child_environment(settings: Settings) -> dict[str, str]:
    """The process environment plus the settings an external producer reads."""
    return {**os.environ, "MBYN_BOOTSTRAP_SERVERS": settings.bootstrap(), "MBYN_TOPIC_PREFIX": settings.topic_prefix,
            "MBYN_CATALOG": str(CATALOG_FILE), **security_environment(settings)}


def _child_setup() -> None:
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_external(cmd: list[str], settings: Settings, stop_timeout: float = 60.0) -> int:
    """Run ``cmd`` until it exits, forwarding SIGTERM/SIGINT; return its exit code."""
    proc = subprocess.Popen(cmd, env=child_environment(settings), preexec_fn=_child_setup)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
    try:
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if proc.poll() is None:  # the launcher itself is being torn down (an exception): do not orphan
            proc.terminate()
            proc.wait(timeout=stop_timeout)
