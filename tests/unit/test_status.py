"""The reconciliation's arithmetic and wording, without a broker: one raw topic's buckets against its table."""

from __future__ import annotations

from datetime import date
from typing import Any

from mbyn.cli.status import render_text
from mbyn.reconciliation import Tally, WarehouseFacts, name_keys, row_key, topic_verdict, worst
from mbyn.warehouse.rows import ROWS

PHYS = "p-clickstream"


def verdict(tally: Tally, rows: int | None, starts: dict[Any, int] | None = None, full: bool = True,
            topic: str = "clickstream", reasons: dict[str, int] | None = None,
            keys: set[Any] | None = None, keys_read: bool = True) -> dict[str, Any]:
    """``topic_verdict`` against a table of ``rows`` rows: the loaded keys first, then made-up extra keys ``x0``…
    (or exactly ``keys``)."""
    ends = {(PHYS, 0): 60, (PHYS, 1): 40}
    table = ROWS[topic].table
    if keys is None and rows is not None:
        keys = set(sorted(tally.keys, key=str)[:rows]) | {f"x{i}" for i in range(rows - len(tally.keys))}
    facts = WarehouseFacts(reachable=True, tables={} if rows is None else {table: rows},
                           keys={} if keys is None or not keys_read else {table: keys})
    return topic_verdict(topic, tally, PHYS, starts or {(PHYS, 0): 0, (PHYS, 1): 0}, ends, facts, reasons or {},
                          full)


def loaded(n: int, distinct: int, **extra: int) -> Tally:
    tally = Tally(records=n + extra.get("quarantined", 0) + extra.get("pending", 0), loaded=n,
                   keys={f"e{i}" for i in range(distinct)})
    for name, value in extra.items():
        setattr(tally, name, value)
    return tally


def test_every_record_loaded_once_is_balanced() -> None:
    result = verdict(loaded(100, 100), rows=100)
    assert result["balanced"] and result["problems"] == [] and result["verdict"] == "balanced"
    assert result["missing_keys"] == [] and result["extra_keys"] == []
    assert result["expected_rows"] == 100 and result["collapsed"] == 0 and result["offsets_without_record"] == 0


def test_duplicates_by_event_id_collapse_and_are_explained() -> None:
    result = verdict(loaded(100, 97), rows=97)
    assert result["balanced"] and result["collapsed"] == 3
    assert "3 duplicate(s) by event_id collapsed" in result["notes"]


def test_quarantined_records_and_markers_are_explained() -> None:
    tally = loaded(90, 90, quarantined=6)
    tally.records = 96  # 100 offsets: 4 hold transaction markers
    result = verdict(tally, rows=90, reasons={"not_json": 4, "schema_violation": 2})
    assert result["balanced"]
    assert "6 record(s) quarantined (not_json 4, schema_violation 2)" in result["notes"]
    assert result["offsets_without_record"] == 4
    assert any("transaction markers" in n for n in result["notes"])


def test_lag_is_lagging_and_missing_rows_or_lost_records_are_not_balanced() -> None:
    lagging = verdict(loaded(80, 80, pending=20), rows=80)
    assert lagging["problems"] == ["20 record(s) not loaded yet (loader lag)"] and lagging["verdict"] == "lagging"
    waiting = verdict(loaded(98, 98, awaiting=2), rows=98)
    assert "not yet quarantined" in waiting["problems"][0] and waiting["verdict"] == "lagging"

    tally = loaded(100, 100)
    missing = verdict(tally, rows=99, keys=tally.keys - {"e42"})
    assert missing["verdict"] == "not balanced" and missing["missing_keys"] == ["e42"]
    assert missing["problems"] == ["missing event_id e42 (no row in clicks)"]
    lost = loaded(99, 99, unreadable=1)
    lost.lost = ["p-clickstream[1]@7"]
    result = verdict(lost, rows=99)
    assert result["verdict"] == "not balanced" and "p-clickstream[1]@7" in result["problems"][0]
    gone = loaded(99, 99, quarantined=1)
    gone.missing_quarantine = ["p-clickstream[0]@3"]
    result = verdict(gone, rows=99)
    assert result["verdict"] == "not balanced"
    assert result["problems"] == ["quarantine row(s) missing for dead-lettered record(s) p-clickstream[0]@3"]


def test_rows_written_for_records_past_the_loaders_position_are_explained_not_extra() -> None:
    # Another writer of the table (the shipments batch DAG) loaded 5 records the loader has not reached.
    tally = loaded(95, 95, pending=5)
    tally.pending_keys = {f"e{i}" for i in range(95, 100)}
    result = verdict(tally, rows=100, keys=tally.keys | tally.pending_keys)
    assert result["problems"] == ["5 record(s) not loaded yet (loader lag)"] and result["verdict"] == "lagging"
    assert "5 row(s) for record(s) past the loader's position (another writer of the table)" in result["notes"]
    # Rows no record explains are named.
    too_many = verdict(tally, rows=103, keys=tally.keys | tally.pending_keys | {"z1", "z2", "z3"})
    assert too_many["verdict"] == "not balanced" and too_many["extra_keys"] == ["z1", "z2", "z3"]
    assert "extra event_id z1, z2, z3 (row(s) in clicks without a record on the topic)" in too_many["problems"]


def test_extra_rows_are_fine_only_when_records_expired() -> None:
    extra = verdict(loaded(100, 100), rows=120)
    assert extra["verdict"] == "not balanced" and "extra event_id x0, x1, x10 … (+17)" in extra["problems"][0]
    expired = verdict(loaded(100, 100), rows=120, starts={(PHYS, 0): 20, (PHYS, 1): 0})
    assert expired["balanced"] and expired["expired"] == 20
    assert any("deleted offsets" in n for n in expired["notes"])


def test_tombstones_of_dimensions_and_fx() -> None:
    customers = Tally(records=10, loaded=10, tombstones=2, keys={f"C{i}" for i in range(6)})
    result = verdict(customers, rows=6, topic="customers")
    assert result["balanced"] and result["collapsed"] == 4
    assert "2 tombstone(s): 2 mark a row deleted" in result["notes"]
    fx = Tally(records=10, loaded=10, tombstones=1, tombstones_without_row=1,
                keys={("USD", f"d{i}") for i in range(9)})
    result = verdict(fx, rows=9, topic="fx-rates")
    assert result["balanced"] and result["collapsed"] == 0
    assert "1 tombstone(s): 1 skipped (no row)" in result["notes"]


def test_offsets_mode_checks_positions_only() -> None:
    result = verdict(Tally(), rows=3, full=False)
    assert result["verdict"] == "not checked" and not result["balanced"]
    assert result["records"] is None and result["expected_rows"] is None and result["missing_keys"] is None
    assert any("scan limit" in n for n in result["notes"])
    # A table too big to read its keys: not checked either, never balanced.
    too_big = verdict(loaded(10, 10), rows=10, keys_read=False)
    assert too_big["verdict"] == "not checked" and any("more than the scan limit" in n for n in too_big["notes"])
    no_table = verdict(loaded(10, 10), rows=None)
    assert no_table["verdict"] == "not balanced" and "(table clicks does not exist)" in no_table["problems"][0]


def test_row_keys_per_topic() -> None:
    env = {"event_id": "E1", "payload": {"order_id": "O1", "customer_id": "C1", "currency": "USD",
                                         "rate_date": "2026-11-25", "alert_id": "A1", "sku": "S1"}}
    assert ROWS["clickstream"].key_of(env, b"s") == "E1"
    assert ROWS["orders"].key_of(env, b"O1") == "O1"
    assert ROWS["customers"].key_of(None, b"C9") == "C9"  # tombstone: the key names the row
    assert ROWS["fx-rates"].key_of(env, b"USD") == ("USD", "2026-11-25")
    assert ROWS["fx-rates"].key_of(None, b"USD") is None
    # A key from a record and the same key from a DATE column compare equal.
    assert row_key(ROWS["fx-rates"].key_of(env, b"USD")) == row_key(("USD", date(2026, 11, 25)))


def test_worst_verdict_and_named_keys() -> None:
    assert worst([]) == "balanced"
    assert worst(["balanced", "lagging"]) == "lagging"
    assert worst(["lagging", "not checked"]) == "not checked"
    assert worst(["not checked", "not balanced", "balanced"]) == "not balanced"
    assert name_keys(["b", "a"]) == "a, b"
    assert name_keys([("USD", "2026-11-25")]) == "(USD, 2026-11-25)"


def test_render_text_shows_tables_and_verdict() -> None:
    rec = verdict(loaded(5, 5, pending=1), rows=5)
    rec.pop("problems")
    status = {
        "generated_at": "2026-11-25T10:00:00Z", "bootstrap_servers": "b:1", "topic_prefix": "", "warehouse_url": "w",
        "topics": {"clickstream": {"exists": True, "partitions": [{"partition": 0, "start": 0, "end": 6}],
                                   "start_sum": 0, "end_sum": 6, "span": 6}},
        "groups": {"warehouse-loader": {"state": "stable", "member_count": 2, "client_ids": ["a", "b"],
                                        "partitions": [{"committed": 5, "stored": 5}], "lag": 1}},
        "warehouse": {"reachable": True, "tables": {"clicks": 5}, "quarantine": [], "quarantined": 0},
        "reconciliation": {"loader_group": "warehouse-loader", "counted_by": "reading",
                           "topics": {"clickstream": rec},
                           "dead_letters": {"records": 0, "pending": 0}},
        "workers": {"copies": [{"label": "warehouse-loader#0", "state": "crash-looping", "restarts": 4,
                                "recent_restarts": 4, "last_exit_code": 1, "last_error": "ValueError: boom"}],
                    "crash_looping": ["warehouse-loader#0"], "window_s": 300},
        "verdict": "lagging", "summary": "1 record(s) not loaded yet; warehouse-loader has 2 live member(s)",
        "problems": ["clickstream: 1 record(s) not loaded yet (loader lag)"],
    }
    text = render_text(status)
    assert "VERDICT: LAGGING — 1 record(s) not loaded yet; warehouse-loader has 2 live member(s)" in text
    assert "clickstream | clicks" in text and "| lag" in text
    assert "WORKER CRASH-LOOPING: warehouse-loader#0 restarted 4 times in the last 5 min; last error: " \
           "ValueError: boom" in text
    assert "warehouse-loader | stable | 2" in text
