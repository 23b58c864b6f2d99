"""The consume stage reads ConsumerPerformance's detailed stats: its first half second is the warm-up."""

from __future__ import annotations

import pytest
from bench.consume import cp_progress
from bench.verdicts import short_runs

HEADER = ("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, "
          "fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
# The tool's lines of a 2M-record run on the bench broker (one line after the group join, then every 100 ms).
LINES = [
    "2026-12-05 06:29:53:086, 0, 0.0004, 0.0003, 1, 0.8562, 803, 365, 0.0010, 2.7397",
    "2026-12-05 06:29:53:186, 0, 20.0000, 200.0, 50000, 500000.0, 0, 100, 200.0, 500000.0",
    "2026-12-05 06:29:53:586, 0, 110.6052, 221.2096, 294501, 589000.0000, 0, 400, 221.2096, 589000.0000",
    "2026-12-05 06:29:54:088, 0, 489.4903, 754.7512, 1302225, 2007418.3267, 0, 502, 754.7512, 2007418.3267",
]


def test_records_after_the_warm_up_over_the_time_they_took() -> None:
    rate = cp_progress("\n".join(["WARN something", HEADER, *LINES]))
    assert rate["warmup_records"] == 294501, "the first line at least 0.5 s after the first record closes the warm-up"
    assert rate["warm_records"] == 1302225 - 294501 and rate["warm_seconds"] == pytest.approx(0.502)
    assert rate["records_per_s"] == pytest.approx((1302225 - 294501) / 0.502)


def test_a_topic_shorter_than_its_warm_up_adds_no_warm_records() -> None:
    rate = cp_progress("\n".join([HEADER, *LINES[:2]]))
    assert rate["warm_records"] == 0 and rate["records_per_s"] == 0.0
    assert rate["all_records"] == 50000 and rate["all_seconds"] == pytest.approx(0.465), "its whole fetch time"


def test_no_progress_line_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no progress line"):
        cp_progress("Exception in thread main")


def _results(cp_run: dict) -> dict:
    return {"produce": {"rows": []}, "consume": {"rows": [{"key": "cp", "name": "CP", "runs": [cp_run]}]}}


def test_a_warm_consumer_performance_run_of_1m_records_is_a_baseline_and_a_cold_or_short_one_is_not() -> None:
    assert short_runs(_results({"records": 1_000_000, "seconds": 1.0, "warmup_records": 300_000})) == {}
    cold = short_runs(_results({"records": 2_000_000, "seconds": 3.0}))  # results of the older format
    assert "no warm-up left out" in cold["cp"][0]
    short = short_runs(_results({"records": 900_000, "seconds": 2.0, "warmup_records": 300_000}))
    assert "900,000 records" in short["cp"][0]
