"""The reconciliation's arithmetic and wording, without a broker: one raw topic's buckets against its table."""

from __future__ import annotations

from typing import Any

from mbyn.status import LOADED_TABLES, WarehouseFacts, _Tally, _topic_verdict, render_text

PHYS = "p-clickstream"


def verdict(tally: _Tally, rows: int | None, starts: dict[Any, int] | None = None, full: bool = True,
            topic: str = "clickstream", reasons: dict[str, int] | None = None) -> dict[str, Any]:
    ends = {(PHYS, 0): 60, (PHYS, 1): 40}
    facts = WarehouseFacts(reachable=True, tables={} if rows is None else {LOADED_TABLES[topic].table: rows})
    return _topic_verdict(topic, tally, PHYS, starts or {(PHYS, 0): 0, (PHYS, 1): 0}, ends, facts, reasons or {},
                          full)


def loaded(n: int, distinct: int, **extra: int) -> _Tally:
    tally = _Tally(records=n + extra.get("quarantined", 0) + extra.get("pending", 0), loaded=n,
                   keys={f"e{i}" for i in range(distinct)})
    for name, value in extra.items():
        setattr(tally, name, value)
    return tally


def test_every_record_loaded_once_is_balanced() -> None:
    result = verdict(loaded(100, 100), rows=100)
    assert result["balanced"] and result["problems"] == []
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


def test_pending_missing_rows_and_lost_records_are_problems() -> None:
    assert verdict(loaded(80, 80, pending=20), rows=80)["problems"] == ["20 record(s) not loaded yet (loader lag)"]
    missing = verdict(loaded(100, 100), rows=95)
    assert not missing["balanced"] and "5 fewer" in missing["problems"][0]
    lost = loaded(99, 99, unreadable=1)
    assert not verdict(lost, rows=99)["balanced"]
    waiting = loaded(98, 98, awaiting=2)
    assert "dead-lettered but not yet in quarantine" in verdict(waiting, rows=98)["problems"][0]


def test_rows_written_for_records_past_the_loaders_position_are_explained_not_extra() -> None:
    # Another writer of the table (the shipments batch DAG) loaded 5 records the loader has not reached.
    tally = loaded(95, 95, pending=5)
    tally.pending_keys = {f"e{i}" for i in range(95, 100)}
    result = verdict(tally, rows=100)
    assert result["problems"] == ["5 record(s) not loaded yet (loader lag)"]
    assert any("past the loader's position" in n for n in result["notes"])
    # More extra rows than pending records can explain is still a problem.
    too_many = verdict(tally, rows=103)
    assert any("8 row(s) more than the 95" in p for p in too_many["problems"])


def test_extra_rows_are_fine_only_when_records_expired() -> None:
    assert not verdict(loaded(100, 100), rows=120)["balanced"]
    expired = verdict(loaded(100, 100), rows=120, starts={(PHYS, 0): 20, (PHYS, 1): 0})
    assert expired["balanced"] and expired["expired"] == 20
    assert any("deleted offsets" in n for n in expired["notes"])


def test_tombstones_of_dimensions_and_fx() -> None:
    customers = _Tally(records=10, loaded=10, tombstones=2, keys={f"C{i}" for i in range(6)})
    result = verdict(customers, rows=6, topic="customers")
    assert result["balanced"] and result["collapsed"] == 4
    assert "2 tombstone(s): 2 mark a row deleted" in result["notes"]
    fx = _Tally(records=10, loaded=10, tombstones=1, tombstones_without_row=1,
                keys={("USD", f"d{i}") for i in range(9)})
    result = verdict(fx, rows=9, topic="fx-rates")
    assert result["balanced"] and result["collapsed"] == 0
    assert "1 tombstone(s): 1 skipped (no row)" in result["notes"]


def test_offsets_mode_checks_positions_only() -> None:
    result = verdict(_Tally(), rows=3, full=False)
    assert result["balanced"] and result["records"] is None and result["expected_rows"] is None
    assert any("scan limit" in n for n in result["notes"])


def test_row_keys_per_topic() -> None:
    env = {"event_id": "E1", "payload": {"order_id": "O1", "customer_id": "C1", "currency": "USD",
                                         "rate_date": "2026-11-25", "alert_id": "A1", "sku": "S1"}}
    assert LOADED_TABLES["clickstream"].key_of(env, b"s") == "E1"
    assert LOADED_TABLES["orders"].key_of(env, b"O1") == "O1"
    assert LOADED_TABLES["customers"].key_of(None, b"C9") == "C9"  # tombstone: the key names the row
    assert LOADED_TABLES["fx-rates"].key_of(env, b"USD") == ("USD", "2026-11-25")
    assert LOADED_TABLES["fx-rates"].key_of(None, b"USD") is None


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
        "verdict": "not balanced", "problems": ["clickstream: 1 record(s) not loaded yet (loader lag)"],
    }
    text = render_text(status)
    assert "VERDICT: NOT BALANCED" in text and "1 record(s) not loaded yet" in text
    assert "warehouse-loader | stable | 2" in text
