"""``mbyn status`` against the real broker, on SQLite and PostgreSQL: produce, load, check the reconciliation.

Most steps run the real CLI in a subprocess (the ``warehouse`` fixture exports the test's settings), and the
counts the status reports are checked against the topic (read back independently) and the warehouse
(queried directly). The consistent cut is checked in-process: rows and offsets committed between the
snapshot and the topic scan, and a loader running while status is asked 20 times, must read as lag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn import reconciliation
from mbyn.local.supervisor import Copy, Supervisor
from mbyn.settings import Settings
from tests.helpers.kafka import read_all
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration

warehouse = warehouse_fixture()

MBYN = str(Path(sys.executable).parent / "mbyn")


def mbyn(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MBYN, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)


def run_ok(*args: str) -> str:
    result = mbyn(*args)
    assert result.returncode == 0, f"mbyn {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def status(expect_exit: int, *extra: str) -> dict[str, Any]:
    result = mbyn("status", "--json", *extra)
    assert result.returncode == expect_exit, (
        f"mbyn status exited {result.returncode}, expected {expect_exit}:\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["schema"] == "mbyn.status/1"
    return doc


def sql(settings: Settings, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the test's warehouse (committed); the rows it returns, if any."""
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def table_count(settings: Settings, table: str) -> int:
    return int(sql(settings, f"SELECT count(*) FROM {table}")[0][0])


#: Exits at once with an error line among ordinary ones (what a worker failing at start looks like).
FAILING_WORKER = [sys.executable, "-c", "import sys; print('INFO starting', flush=True); "
                  "print('RuntimeError: cannot reach the warehouse', file=sys.stderr, flush=True); sys.exit(3)"]


@contextmanager
def crash_looping_worker(settings: Settings) -> Iterator[Supervisor]:
    """A supervisor (in this process) whose one copy, ``warehouse-loader#0``, has exited 3 times; stopped after."""
    sup = Supervisor(settings, scale={}, grace=5.0, backoff_s=0.01, poll_s=0.02)
    sup.copies.append(Copy("consume:warehouse-loader", 0, FAILING_WORKER,
                           settings.logs_dir / "workers" / "warehouse-loader-0.log"))
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while len(sup.copies[0].exits) < 3:
            assert time.monotonic() < deadline, "the failing copy did not exit 3 times"
            sup._watch()
            time.sleep(sup.poll_s)
        yield sup
    finally:
        sup.stop_all()


def test_status_before_and_after_loading(warehouse: Settings) -> None:
    topics = warehouse
    run_ok("produce", "clickstream", "--count", "1500", "--seed", "7")
    clicks = read_all(topics.bootstrap(), topics.topic_prefix + "clickstream", timeout=30)
    orders = read_all(topics.bootstrap(), topics.topic_prefix + "orders", timeout=30)
    assert len(clicks) + len(orders) == 1500

    before = status(expect_exit=0)
    assert before["balanced"] is False and before["verdict"] == "lagging"
    assert before["summary"] == (f"1500 record(s) not loaded yet; {topics.topic_prefix}warehouse-loader has no live "
                                 "members (start it: `mbyn consume warehouse-loader`)")
    assert before["lag"] == 1500
    loader = before["groups"][topics.topic_prefix + "warehouse-loader"]
    assert loader["state"] == "absent" and loader["lag"] >= 1500
    assert before["topics"]["clickstream"]["end_sum"] == len(clicks)
    assert any("not loaded yet" in p for p in before["problems"])

    run_ok("consume", "warehouse-loader", "--idle-exit", "5")
    after = status(expect_exit=0)
    assert after["balanced"] is True and after["verdict"] == "balanced", after["problems"]
    assert after["problems"] == [] and after["lag"] == 0
    rec = after["reconciliation"]
    assert rec["counted_by"] == "reading"
    assert rec["topics"]["clickstream"]["records"] == len(clicks)
    assert rec["topics"]["orders"]["records"] == len(orders)
    assert rec["topics"]["clickstream"]["rows"] == table_count(topics, "clicks") == len(clicks)
    assert rec["topics"]["orders"]["rows"] == table_count(topics, "orders") == len(orders)
    assert after["warehouse"]["tables"]["clicks"] == len(clicks)
    loader = after["groups"][topics.topic_prefix + "warehouse-loader"]
    assert loader["lag"] == 0
    stored = {(p["topic"], p["partition"]): p["stored"] for p in loader["partitions"] if p["stored"] is not None}
    ends = {(topics.topic_prefix + "clickstream", p["partition"]): p["end"]
            for p in after["topics"]["clickstream"]["partitions"]}
    assert all(stored.get(k, 0) == end for k, end in ends.items() if end), "stored offsets must equal end offsets"

    human = mbyn("status")
    assert human.returncode == 0
    assert "VERDICT: BALANCED" in human.stdout and "RECONCILIATION" in human.stdout


def test_poison_records_balance_through_quarantine_and_deleted_rows_are_named(warehouse: Settings) -> None:
    topics = warehouse
    run_ok("produce", "clickstream", "--count", "1200", "--seed", "11", "--invalid-ratio", "0.05")
    run_ok("consume", "warehouse-loader", "--idle-exit", "5")
    dead = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", timeout=30)
    assert dead, "the generator's poison records must have been dead-lettered"

    waiting = status(expect_exit=0)
    assert waiting["verdict"] == "lagging", waiting["problems"]
    awaiting = sum(t["awaiting_quarantine"] for t in waiting["reconciliation"]["topics"].values())
    assert awaiting == len(dead)
    assert waiting["reconciliation"]["dead_letters"]["pending"] == len(dead)

    run_ok("consume", "dead-letters", "--idle-exit", "5")
    done = status(expect_exit=0)
    assert done["balanced"] is True, done["problems"]
    rec = done["reconciliation"]["topics"]
    quarantined = sum(t["quarantined"] for t in rec.values())
    assert quarantined == len(dead) == table_count(topics, "quarantine") == done["warehouse"]["quarantined"]
    for name, table in (("clickstream", "clicks"), ("orders", "orders")):
        records = len(read_all(topics.bootstrap(), topics.topic_prefix + name, timeout=30))
        assert rec[name]["records"] == records
        assert rec[name]["loaded"] + rec[name]["quarantined"] == records
        assert rec[name]["rows"] == table_count(topics, table) == rec[name]["loaded"]
    notes = " ".join(n for t in rec.values() for n in t["notes"])
    assert "quarantined" in notes
    reasons = {q["reason"] for q in done["warehouse"]["quarantine"]}
    assert reasons <= {"not_json", "schema_violation", "unknown_schema_version"} and reasons

    # Past the scan limit rows are not compared: never balanced.
    unchecked = status(5, "--scan-limit", "10")
    assert unchecked["verdict"] == "not checked" and unchecked["balanced"] is False
    assert unchecked["reconciliation"]["counted_by"] == "offsets"
    assert any("--scan-limit" in p for p in unchecked["problems"])

    # A deleted quarantine row is named by the coordinates of its record.
    topic, partition, offset = sql(topics, 'SELECT topic, "partition", "offset" FROM quarantine '
                                   "ORDER BY topic, \"partition\", \"offset\" LIMIT 1")[0]
    sql(topics, 'DELETE FROM quarantine WHERE topic = :t AND "partition" = :p AND "offset" = :o',
        t=topic, p=partition, o=offset)
    gone = status(4)
    assert gone["verdict"] == "not balanced"
    logical = topic[len(topics.topic_prefix):]
    assert f"{topic}[{partition}]@{offset}" in gone["reconciliation"]["topics"][logical]["missing_quarantine"]
    assert any(f"quarantine row(s) missing for dead-lettered record(s) {topic}[{partition}]@{offset}" in p
               for p in gone["problems"]), gone["problems"]

    # A deleted warehouse row is named by its key.
    event_id = sql(topics, "SELECT event_id FROM clicks ORDER BY event_id LIMIT 1")[0][0]
    sql(topics, "DELETE FROM clicks WHERE event_id = :e", e=event_id)
    missing = status(4)
    assert missing["reconciliation"]["topics"]["clickstream"]["missing_keys"] == [event_id]
    assert any(p.startswith("clickstream: ") and f"missing event_id {event_id} (no row in clicks)" in p
               for p in missing["problems"]), missing["problems"]
    human = mbyn("status")
    assert human.returncode == 4 and "VERDICT: NOT BALANCED — " in human.stdout
    assert f"missing event_id {event_id}" in human.stdout


def test_rows_committed_after_the_snapshot_are_lag_not_extra(warehouse: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader commits rows + offsets between the warehouse snapshot and the topic scan: only lag."""
    from mbyn.consumers.runtime import run_consumer
    from mbyn.consumers.warehouse_loader import WarehouseLoader
    from mbyn.status import collect_status

    run_ok("produce", "clickstream", "--count", "300", "--seed", "3")
    run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=2)
    run_ok("produce", "clickstream", "--count", "300", "--seed", "4")
    read_snapshot = reconciliation.read_warehouse
    loaded_between: list[int] = []

    def snapshot_then_load(*args: Any, **kwargs: Any) -> reconciliation.WarehouseFacts:
        facts = read_snapshot(*args, **kwargs)
        before = table_count(warehouse, "clicks") + table_count(warehouse, "orders")
        run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=2)
        loaded_between.append(table_count(warehouse, "clicks") + table_count(warehouse, "orders") - before)
        return facts

    monkeypatch.setattr(reconciliation, "read_warehouse", snapshot_then_load)
    doc = collect_status(warehouse)
    assert loaded_between[0] > 0, "the loader must have written rows between the snapshot and the scan"
    assert doc["verdict"] == "lagging", doc["problems"]
    assert doc["lag"] == 300 and not any("extra" in p for p in doc["problems"])
    monkeypatch.undo()
    assert collect_status(warehouse)["verdict"] == "balanced"


def test_status_while_a_loader_runs_is_balanced_or_lagging_20_times(warehouse: Settings) -> None:
    from mbyn.status import collect_status

    run_ok("produce", "clickstream", "--count", "200", "--seed", "5")
    producer = subprocess.Popen([MBYN, "produce", "clickstream", "--rate", "150", "--count", "100000", "--seed", "6",
                                 "--invalid-ratio", "0.02"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loader = subprocess.Popen([MBYN, "consume", "warehouse-loader"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    sink = subprocess.Popen([MBYN, "consume", "dead-letters"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    verdicts = []
    try:
        while table_count_or_zero(warehouse, "clicks") == 0:  # the loader is writing
            assert loader.poll() is None, "the loader exited"
            time.sleep(0.2)
        for _ in range(20):
            doc = collect_status(warehouse, timeout_s=30)
            verdicts.append(doc["verdict"])
            assert doc["verdict"] in ("balanced", "lagging"), doc["problems"]
        assert loader.poll() is None and producer.poll() is None, "the loader and producer must run throughout"
    finally:
        for proc in (producer, loader, sink):
            proc.terminate()
        for proc in (producer, loader, sink):
            proc.wait(60)
    assert table_count(warehouse, "clicks") > 200, "rows were loaded while status ran"


def table_count_or_zero(settings: Settings, table: str) -> int:
    try:
        return table_count(settings, table)
    except sa.exc.SQLAlchemyError:  # the loader has not created the schema yet
        return 0


def test_a_crash_looping_worker_is_shown_with_its_last_error_line(warehouse: Settings) -> None:
    with crash_looping_worker(warehouse):
        doc = status(0)
        workers = doc["workers"]
        assert workers["supervisor"]["running"] is True
        assert workers["crash_looping"] == ["warehouse-loader#0"]
        (copy,) = workers["copies"]
        assert copy["state"] == "crash-looping" and copy["recent_restarts"] >= 3 and copy["last_exit_code"] == 3
        assert copy["last_error"] == "RuntimeError: cannot reach the warehouse"
        human = mbyn("status")
        assert "WORKER CRASH-LOOPING: warehouse-loader#0" in human.stdout
        assert "last error: RuntimeError: cannot reach the warehouse" in human.stdout
    assert status(0)["workers"]["copies"] == [], "a stopped run leaves no state behind"
