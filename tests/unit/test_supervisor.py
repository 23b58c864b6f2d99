"""The supervisor's restart records: real child processes that exit at once, the state file, ``worker_status``."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from mbyn.errors import ConfigError
from mbyn.local.supervisor import Copy, Supervisor, parse_scale
from mbyn.run_state import CRASH_LOOP_WINDOW_S, last_error_line, worker_status
from mbyn.settings import Settings, load_settings
from mbyn.workers import WORKERS

# Prints an error line, then an ordinary line, and exits 3: the error line is what must be reported.
FAILING = [sys.executable, "-c", "import sys; print('INFO starting', flush=True); "
           "print('ValueError: record 7 is not valid', file=sys.stderr, flush=True); "
           "print('INFO closing', flush=True); sys.exit(3)"]
HEALTHY = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(var_dir=tmp_path / "var")


def supervisor_with(settings: Settings, *argvs: list[str]) -> Supervisor:
    sup = Supervisor(settings, scale={}, grace=5.0, backoff_s=0.01, poll_s=0.02)
    logs = settings.logs_dir / "workers"
    for i, argv in enumerate(argvs):
        sup.copies.append(Copy("consume:warehouse-loader", i, argv, logs / f"warehouse-loader-{i}.log"))
    return sup


def watch_until(sup: Supervisor, done: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the copies did not exit as expected"
        sup._watch()
        time.sleep(sup.poll_s)


def test_a_copy_that_keeps_exiting_is_crash_looping_with_its_last_error_line(settings: Settings) -> None:
    sup = supervisor_with(settings, FAILING, HEALTHY)
    sup.start()
    try:
        failing = sup.copies[0]
        watch_until(sup, lambda: len(failing.exits) >= 3)
        assert failing.last_exit_code == 3 and failing.restarts >= 2

        mode = stat.S_IMODE(sup.state_file.stat().st_mode)
        assert mode == 0o600, oct(mode)
        raw = json.loads(sup.state_file.read_text())
        assert raw["supervisor"] > 0 and "warehouse-loader#1" in raw["workers"], "mbyn down still finds the pids"
        assert not list(sup.state_file.parent.glob("*.tmp")), "no temporary file left behind"

        status = worker_status(settings)
        copies = {c["label"]: c for c in status["copies"]}
        assert status["crash_looping"] == ["warehouse-loader#0"]
        looping = copies["warehouse-loader#0"]
        assert looping["state"] == "crash-looping" and looping["recent_restarts"] >= 3
        assert looping["last_error"] == "ValueError: record 7 is not valid" and looping["last_exit_code"] == 3
        assert looping["last_exit_at"] is not None
        assert copies["warehouse-loader#1"]["state"] == "running"
        assert copies["warehouse-loader#1"]["restarts"] == 0

        # Five minutes later the same exits no longer count as a loop.
        later = worker_status(settings, now=time.time() + CRASH_LOOP_WINDOW_S + 1)
        assert later["crash_looping"] == [] and later["copies"][0]["recent_restarts"] == 0
    finally:
        sup.stop_all()
    assert not sup.state_file.exists()
    assert worker_status(settings)["supervisor"] is None


def test_last_error_line_reads_only_the_copys_own_output(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_bytes(b"Traceback (most recent call last):\nKeyError: 'old run'\n")
    start = log.stat().st_size
    with log.open("ab") as out:
        out.write(b"INFO started\n\xff\xfe not utf-8 \n")
    assert last_error_line(log, start) == "\ufffd\ufffd not utf-8"  # no error word: the last line
    assert last_error_line(log, 0) == "KeyError: 'old run'"
    assert last_error_line(tmp_path / "missing.log") is None


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"supervisor": "x", "copies": [1]}',
                                     '{"supervisor": 1, "copies": {"a": 5, "b": {"exits": ["x", 1e300]}}}'])
def test_worker_status_never_raises_on_a_damaged_state_file(settings: Settings, content: str) -> None:
    path = settings.var_dir / "run" / "workers.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    status = worker_status(settings)
    assert status["crash_looping"] == []
    assert all(c["state"] in ("unknown", "running", "restarting") for c in status["copies"])


def test_a_supervisor_that_is_gone_makes_its_copies_unknown(settings: Settings) -> None:
    path = settings.var_dir / "run" / "workers.json"
    path.parent.mkdir(parents=True)
    exits = [time.time()] * 5
    path.write_text(json.dumps({"supervisor": 2**22 + 12345, "workers": {},  # no such pid
                                "copies": {"x#0": {"worker": "consume:x", "exits": exits, "restarts": 5}}}))
    status = worker_status(settings)
    assert status["supervisor"]["running"] is False
    assert [c["state"] for c in status["copies"]] == ["unknown"] and status["crash_looping"] == []


def test_scale_starts_from_the_registrys_copies_and_names_workers_by_name_or_key() -> None:
    defaults = parse_scale([])
    assert defaults == {w.key: w.copies for w in WORKERS.values() if w.copies > 0}
    scale = parse_scale(["warehouse-loader=3", "lag-monitor=0", "consume:fraud-detector=1", "produce:bogus=2"])
    assert scale["consume:warehouse-loader"] == 3 and scale["consume:fraud-detector"] == 1
    assert "consume:lag-monitor" not in scale and "produce:bogus" not in scale
    with pytest.raises(ConfigError, match="unknown worker; producers: clickstream"):
        parse_scale(["nope=1"])
    with pytest.raises(ConfigError, match="NAME=COUNT"):
        parse_scale(["warehouse-loader"])
