"""Processes and ports on this machine: is a port taken, is a process group alive, stop process groups.

Used by what starts and stops the local pieces (Kafka nodes, PostgreSQL, Airflow, ``mbyn run``'s
workers). ``pid_alive`` lives in ``mbyn.process``: the run-state reader below this layer needs it too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from mbyn.process import pid_alive

log = logging.getLogger("mbyn.process")

KILL_WAIT_S = 10.0  # how long stop_process_groups waits for processes to vanish after SIGKILL


def progress_printer(component: str) -> Callable[[str], None]:
    """``log(message)`` for a local service: one ``[mbyn <component>] message`` line on stderr, flushed."""

    def log_line(message: str) -> None:
        print(f"[mbyn {component}] {message}", file=sys.stderr, flush=True)

    return log_line


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live (non-zombie) member."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
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
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _reap(pids: list[int]) -> None:
    """Collect the exit status of those ``pids`` that are our own children, so none lingers as a zombie."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


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
