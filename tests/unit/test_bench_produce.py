"""The produce stage reads ProducerPerformance's own output: its warm-up window is left out of the rate."""

from __future__ import annotations

import pytest
from bench.produce import pp_rate

# ProducerPerformance's output of a 2M-record run on the bench broker (two 5-s windows, then the total).
OUTPUT = """\
Reading payloads from: /tmp/payloads.txt
Number of messages read: 50000
653582 records sent, 130585.8 records/sec (50.58 MB/sec), 85.2 ms avg latency, 727.0 ms max latency.
847630 records sent, 168047.2 records/sec (65.12 MB/sec), 216.2 ms avg latency, 1498.0 ms max latency.
2000000 records sent, 162416.8 records/sec (62.92 MB/sec), 372.43 ms avg latency, 1752.00 ms max latency, \
135 ms 50th, 1319 ms 95th, 1487 ms 99th, 1745 ms 99.9th.
"""


def test_the_first_window_is_the_warm_up() -> None:
    rate = pp_rate(OUTPUT)
    assert rate["warmup_records"] == 653582 and rate["records"] == 2_000_000 - 653582
    # (2M − 653,582) records over (2M / 162,416.8 − 653,582 / 130,585.8) s
    assert rate["records_per_s"] == pytest.approx(1_346_418 / (2_000_000 / 162416.8 - 653582 / 130585.8))
    assert rate["latency_ms"]["p99"] == 1487 and rate["total_records_per_s"] == 162416.8


def test_a_run_shorter_than_a_window_is_timed_whole() -> None:
    short = OUTPUT.splitlines()[-1].replace("2000000 records", "3000 records")
    rate = pp_rate(short)
    assert rate["warmup_records"] == 0 and rate["records"] == 3000
    assert rate["records_per_s"] == pytest.approx(162416.8)


def test_no_summary_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no summary"):
        pp_rate(OUTPUT.splitlines()[2])
