"""``mbyn status`` against the real broker: produce with the generator, load, and check the reconciliation.

Every step runs the real CLI in a subprocess (the ``topics`` fixture exports the test's settings), and the
counts the status reports are checked against the topic (read back independently) and the warehouse
(queried directly).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mbyn.settings import Settings
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration

MBYN = str(Path(sys.executable).parent / "mbyn")


def mbyn(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MBYN, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)


def run_ok(*args: str) -> str:
    result = mbyn(*args)
    assert result.returncode == 0, f"mbyn {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def status(expect_exit: int) -> dict[str, Any]:
    result = mbyn("status", "--json")
    assert result.returncode == expect_exit, (
        f"mbyn status exited {result.returncode}, expected {expect_exit}:\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["schema"] == "mbyn.status/1"
    return doc


def table_count(settings: Settings, table: str) -> int:
    with sqlite3.connect(settings.var_dir / "warehouse.db") as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_status_before_and_after_loading(topics: Settings) -> None:
    run_ok("produce", "clickstream", "--count", "1500", "--seed", "7")
    clicks = read_all(topics.bootstrap(), topics.topic_prefix + "clickstream", timeout=30)
    orders = read_all(topics.bootstrap(), topics.topic_prefix + "orders", timeout=30)
    assert len(clicks) + len(orders) == 1500

    before = status(expect_exit=4)
    assert before["balanced"] is False and before["verdict"] == "not balanced"
    assert before["lag"] == 1500
    loader = before["groups"][topics.topic_prefix + "warehouse-loader"]
    assert loader["state"] == "absent" and loader["lag"] >= 1500
    assert before["topics"]["clickstream"]["end_sum"] == len(clicks)
    assert any("not loaded yet" in p for p in before["problems"])

    run_ok("consume", "warehouse-loader", "--idle-exit", "5")
    after = status(expect_exit=0)
    assert after["balanced"] is True, after["problems"]
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


def test_poison_records_balance_through_quarantine(topics: Settings) -> None:
    run_ok("produce", "clickstream", "--count", "1200", "--seed", "11", "--invalid-ratio", "0.05")
    run_ok("consume", "warehouse-loader", "--idle-exit", "5")
    dead = read_all(topics.bootstrap(), topics.topic_prefix + "dead-letters", timeout=30)
    assert dead, "the generator's poison records must have been dead-lettered"

    waiting = status(expect_exit=4)
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
