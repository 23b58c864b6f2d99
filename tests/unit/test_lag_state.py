"""What a group's lag means (ok | lagging | held | stuck) and how a consumer says how many records it holds."""

from __future__ import annotations

import pytest

from mbyn.consumers.lag_state import OK_SECONDS, STUCK_AFTER_S, GroupLag, group_state, stalled_for, summarise
from mbyn.kafka.consumer import held_from_metadata, held_metadata
from mbyn.workers import WORKERS


def lag(lag: int = 0, held: int = 0, seconds: float | None = 0.0, members: int = 1, position: int = 100) -> GroupLag:
    return GroupLag("p-g", lag, held, seconds, members, position, 1)


@pytest.mark.parametrize(("now", "stalled", "objective", "state"), [
    (lag(), None, None, "ok"),  # caught up
    (lag(lag=3, seconds=1.5), 0.0, None, "ok"),  # a few records in flight, fresh
    (lag(lag=3, seconds=OK_SECONDS + 1), 5.0, None, "lagging"),
    (lag(lag=3, seconds=20.0), 5.0, 30.0, "ok"),  # within the group's own objective
    (lag(lag=3, seconds=31.0), 5.0, 30.0, "lagging"),
    (lag(lag=3, seconds=None), None, None, "lagging"),  # waiting, time unknown: never "ok"
    (lag(lag=240, held=240, seconds=0.0), None, None, "held"),  # a join window, nothing waiting
    (lag(lag=240, held=240, seconds=0.0, members=0), None, None, "held"),  # stopped, but nothing to read
    (lag(lag=250, held=240, seconds=1.0), 0.0, None, "ok"),  # holds 240, 10 fresh records in flight
    (lag(lag=3, seconds=1.0, members=0), None, None, "stuck"),  # records wait, nobody reads
    (lag(lag=3, seconds=1.0), STUCK_AFTER_S, None, "stuck"),  # members, but the position stands still
    (lag(lag=3, seconds=1.0), STUCK_AFTER_S - 1, None, "ok"),
])
def test_group_state(now: GroupLag, stalled: float | None, objective: float | None, state: str) -> None:
    found, why = group_state(now, stalled, objective)
    assert found == state, why
    assert why


def test_the_reason_names_what_was_seen() -> None:
    assert group_state(lag(lag=7, members=0))[1] == "7 record(s) waiting and no live member"
    assert "has not moved for 45 s" in group_state(lag(lag=7, seconds=3.0), 45.0)[1]
    assert group_state(lag(lag=9, held=9))[1].startswith("9 record(s) read but held back from the commit by design")


def test_summarise_adds_partitions_up_per_group() -> None:
    rows = [
        {"consumer_group": "a", "end_offset": 10, "lag": 4, "held": 0, "lag_seconds": 12.5, "members": 2},
        {"consumer_group": "a", "end_offset": 20, "lag": 0, "held": 0, "lag_seconds": 0.0, "members": 2},
        {"consumer_group": "b", "end_offset": 50, "lag": 30, "held": 30, "lag_seconds": 0.0, "members": 1},
        {"consumer_group": "c", "end_offset": 5, "lag": 5, "held": None, "lag_seconds": None, "members": None},
        {"consumer_group": "d", "end_offset": 5, "lag": 5, "lag_seconds": None},  # an older row: no held/members
        {"consumer_group": "d", "end_offset": 9, "lag": 2, "lag_seconds": 3.0},
    ]
    got = summarise(rows)
    assert got["a"] == GroupLag("a", 4, 0, 12.5, 2, 26, 2) and got["a"].waiting == 4
    assert got["b"].waiting == 0 and got["b"].held == 30 and got["b"].position == 50
    assert got["c"].lag_seconds is None and got["c"].members == 0, "waiting for an unknown time"
    assert got["d"].lag_seconds == 3.0, "the largest known wait"
    assert summarise([]) == {}


def test_stalled_for_counts_how_long_the_position_stood_still_with_records_waiting() -> None:
    moving = [(0.0, lag(lag=5, position=100)), (10.0, lag(lag=5, position=110)), (20.0, lag(lag=5, position=120))]
    assert stalled_for(moving) == 0.0
    still = [(0.0, lag(lag=5, position=90)), (10.0, lag(lag=5, position=100)), (50.0, lag(lag=9, position=100))]
    assert stalled_for(still) == 40.0
    caught_up = [(0.0, lag(lag=5, position=100)), (60.0, lag(lag=0, position=100))]
    assert stalled_for(caught_up) == 0.0
    assert stalled_for([(5.0, lag(lag=5))]) == 0.0
    assert stalled_for([]) is None


@pytest.mark.parametrize(("metadata", "committed", "held"), [
    ("mbyn:next=120", 100, 20),
    ("mbyn:next=100", 100, 0),
    ("mbyn:next=50", 100, 0),  # behind the commit: nothing held
    ("mbyn:next=", 100, 0),
    ("mbyn:next=-5", 100, 0),
    ("mbyn:next=1e9", 100, 0),
    ("mbyn:next=１２０", 100, 0),  # non-ASCII digits
    ("mbyn:next=99999999999999999999999", 100, 0),
    ("some other client's metadata", 100, 0),
    ("", 100, 0),
    (None, 100, 0),
    ("mbyn:next=120", None, 0),  # nothing committed
    ("mbyn:next=120", -1001, 0),
])
def test_held_from_metadata_trusts_only_its_own_well_formed_metadata(metadata: str | None, committed: int | None,
                                                                     held: int) -> None:
    assert held_from_metadata(metadata, committed) == held


def test_held_metadata_only_when_the_commit_stays_behind_what_was_processed() -> None:
    assert held_metadata(100, 130) == "mbyn:next=130"
    assert held_from_metadata(held_metadata(100, 130), 100) == 30
    assert held_metadata(100, 100) == "" and held_metadata(100, None) == ""


def test_the_fraud_detector_says_why_it_holds_records() -> None:
    assert "join window" in WORKERS["fraud-detector"].holds
    assert not WORKERS["warehouse-loader"].holds


def test_a_long_window_is_thinned_to_the_chart_keeping_peaks_and_the_newest_sample() -> None:
    from mbyn.pipeline_view.lag import MAX_POINTS, _thin

    points = [(float(i), lag(lag=1000 if i == 777 else i % 5)) for i in range(5000)]
    thin = _thin(points)
    assert len(thin) <= MAX_POINTS and thin[-1] == points[-1]
    assert [t for t, _ in thin] == sorted(t for t, _ in thin)
    assert (777.0, points[777][1]) in thin, "a peak survives"
    assert _thin(points[:10]) == points[:10]


def test_commit_metadata_that_is_not_utf8_counts_as_no_metadata() -> None:
    """Any client may commit any bytes as metadata; confluent-kafka raises UnicodeDecodeError reading them (a
    hostile client's commit crashed the lag-monitor's round): read as no metadata, nothing held."""
    from mbyn.kafka.inspect import _metadata

    class Hostile:
        @property
        def metadata(self) -> str:
            raise UnicodeDecodeError("utf-8", b"\x9c", 0, 1, "invalid start byte")

    class Plain:
        metadata = "mbyn:next=7"

    assert _metadata(Hostile()) is None  # type: ignore[arg-type]
    assert _metadata(Plain()) == "mbyn:next=7"  # type: ignore[arg-type]
