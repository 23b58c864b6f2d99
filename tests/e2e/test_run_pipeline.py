"""`mbyn run` (what `make run` starts): data flows through M producers and N groups, Ctrl-C leaves no
process behind, and a second run resumes with the data intact."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT
from tests.conftest import free_port_block

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries ``marker`` (our descendants)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                stat = (entry / "stat").read_text().split()
                if stat[2] != "Z":
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
        except OSError:
            continue
    return found


def _count(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mbyn.cli", "run", "--no-airflow", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_run_flows_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    marker = f"MBYN_TEST_MARKER_{uuid.uuid4().hex}"
    env = {**os.environ, "MBYN_VAR_DIR": str(tmp_path / "var"), "MBYN_KAFKA_PORT": str(free_port_block(1)),
           "MBYN_KAFKA_CONTROLLER_PORT": str(free_port_block(1)), "MBYN_KAFKA_HEAP": "384m",
           "MBYN_KAFKA_LIB_DIR": str(PROJECT_ROOT / "var" / "kafka" / "lib"), marker: "1",
           "MBYN_CONSUMER_SESSION_TIMEOUT_S": "6"}
    for name in ("MBYN_BOOTSTRAP_SERVERS", "MBYN_TOPIC_PREFIX", "MBYN_WAREHOUSE_URL"):
        env.pop(name, None)
    db = tmp_path / "var" / "warehouse.db"
    log = tmp_path / "run.log"
    run = _start(env, log)
    try:
        deadline = time.monotonic() + 240
        tables = ("orders", "clicks", "payments", "customers", "fx_rates", "inventory")
        while time.monotonic() < deadline and run.poll() is None:
            if all(_count(db, t) > 0 for t in tables):
                break
            time.sleep(2)
        counts = {t: _count(db, t) for t in tables}
        assert run.poll() is None, f"mbyn run exited early:\n{log.read_text()[-3000:]}"
        assert all(counts.values()), f"no data flowed into {counts}:\n{log.read_text()[-3000:]}"
        workers = [c for c in _processes_with(marker) if "mbyn.cli" in c and ("produce" in c or "consume" in c)]
        assert len(workers) >= 10, workers
        assert any("java" in c for c in _processes_with(marker)), "the Kafka broker / Java producer should run"
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGINT)  # what Ctrl-C delivers to `mbyn run`
        code = run.wait(150)
    assert code == 0, log.read_text()[-3000:]
    time.sleep(1)
    leftovers = _processes_with(marker)
    assert not leftovers, f"processes left behind after Ctrl-C: {leftovers}"

    orders_before = _count(db, "orders")
    again = _start(env, log, "--duration", "25", "--scale", "clickstream=1")
    assert again.wait(240) == 0, log.read_text()[-3000:]
    assert _count(db, "orders") >= orders_before > 0
    assert not _processes_with(marker)
