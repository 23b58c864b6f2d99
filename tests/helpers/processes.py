"""Stopping the subprocesses a test starts, and never leaving one behind.

A test that runs ``mbyn ...`` as a subprocess usually stops it with a signal and then checks what it printed.
If an assertion fails first, or the process outlasts its timeout, it must not outlive the test::

    proc = subprocess.Popen([...], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        ...  # wait for it to do its work
        stdout, stderr = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, stderr
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx


def reap(*procs: subprocess.Popen[Any] | None, timeout: float | None = None) -> None:
    """SIGKILL each process that still runs and wait up to ``timeout`` for it; ``None`` and ended ones are skipped."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def reaped(*procs: subprocess.Popen[Any] | None, timeout: float | None = None) -> Iterator[None]:
    """On leaving the block, however it is left, :func:`reap` the processes."""
    try:
        yield
    finally:
        reap(*procs, timeout=timeout)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[Any, Any]:
    """Send ``sig`` and wait up to ``timeout`` seconds for the exit; return ``(stdout, stderr)``.

    They are what :meth:`subprocess.Popen.communicate` gives: ``str`` in text mode, ``bytes`` otherwise,
    ``None`` for a stream that is not a pipe. A process past ``timeout`` raises
    :class:`subprocess.TimeoutExpired` and is left running: call this inside :func:`reaped`.
    """
    proc.send_signal(sig)
    return proc.communicate(timeout=timeout)


def stop_all(procs: Iterable[subprocess.Popen[Any]], sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Send ``sig`` to every process first (they stop side by side), then wait up to ``timeout`` seconds for each;
    SIGKILL and reap one that is still running then. Never raises a timeout: for a fixture's teardown."""
    procs = list(procs)
    for proc in procs:
        proc.send_signal(sig)
    for proc in procs:
        with reaped(proc), suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, log_file: str | Path) -> Any:
    """Poll ``check`` every 2 s until it returns something truthy (an HTTP API too slow to answer counts as "not
    yet"); on timeout fail quoting the end of ``log_file`` (the server's log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(2)
    tail = "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-60:])
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; end of {log_file}:\n{tail}")
