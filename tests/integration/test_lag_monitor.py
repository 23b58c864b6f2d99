"""lag-monitor against the real broker: records and seconds behind per group, records held by design, the history
in ``lag_samples``, and the view's ``/api/lag`` telling ok, lagging, held and stuck apart.

The view's app is the real one with only Airflow's login dependency overridden (no auth manager in-process; see
``tests/integration/test_pipeline_view_api.py``, which checks the dependency is there).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mbyn.consumers.fraud_detector import FraudDetector, FraudRules
from mbyn.consumers.lag_monitor import monitor, sample_lag, write_samples
from mbyn.consumers.lag_state import group_state, summarise
from mbyn.consumers.runtime import run_consumer
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings, get_settings
from mbyn.warehouse import init_schema, make_engine, warehouse_engine
from mbyn.workers import WORKERS
from tests.helpers.kafka import commit_offsets
from tests.helpers.processes import reaped, stop
from tests.helpers.view import view_client
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration


warehouse = warehouse_fixture()


@pytest.fixture
def client(topics: Settings) -> Iterator[Any]:
    with view_client() as test_client:
        yield test_client


def produce_aged(settings: Settings, topic: str, partition: int, ages_s: Sequence[float]) -> None:
    """One record per age, each with a timestamp that many seconds ago."""
    producer = Producer({"bootstrap.servers": settings.bootstrap()})
    now_ms = int(time.time() * 1000)
    for age in ages_s:
        producer.produce(topic, b"{}", b"k", partition=partition, timestamp=now_ms - int(age * 1000))
    assert producer.flush(30) == 0


def make_lag(settings: Settings) -> tuple[str, str]:
    """10 records on partition 0 and 4 on partition 1 of clickstream; group 'g' commits 7 and nothing."""
    topic = settings.topic_prefix + "clickstream"
    producer = Producer({"bootstrap.servers": settings.bootstrap()})
    for _ in range(10):
        producer.produce(topic, b"{}", b"k", partition=0)
    for _ in range(4):
        producer.produce(topic, b"{}", b"k", partition=1)
    assert producer.flush(30) == 0
    group = settings.topic_prefix + "g"
    commit_offsets(settings.bootstrap(), group, [TopicPartition(topic, 0, 7), TopicPartition(topic, 2, 0)])
    commit_offsets(settings.bootstrap(), "not-this-prefix-" + group, [TopicPartition(topic, 0, 1)])
    return group, topic


def test_sample_lag_reports_committed_end_and_lag_per_partition(topics):
    group, topic = make_lag(topics)
    rows = sample_lag(topics)
    assert {r["consumer_group"] for r in rows} == {group}, "only this prefix's groups"
    assert [(r["topic"], r["partition"], r["end_offset"], r["committed_offset"], r["lag"], r["held"], r["members"])
            for r in rows] == [(topic, 0, 10, 7, 3, 0, 0), (topic, 2, 0, 0, 0, 0, 0)]


def test_seconds_behind_is_the_age_of_the_next_record_each_group_has_not_read(topics):
    topic, prefix, bootstrap = topics.topic_prefix + "clickstream", topics.topic_prefix, topics.bootstrap()
    produce_aged(topics, topic, 0, [600] * 5 + [60] * 5)
    produce_aged(topics, topic, 1, [300] * 3)
    commit_offsets(bootstrap, prefix + "from-start", [TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 3)])
    commit_offsets(bootstrap, prefix + "halfway", [TopicPartition(topic, 0, 5)])
    commit_offsets(bootstrap, prefix + "same-place", [TopicPartition(topic, 0, 5)])
    # read up to 7, committed 2: holds 5 (a join), so the next record it has not read is offset 7 (60 s old)
    commit_offsets(bootstrap, prefix + "holding", [TopicPartition(topic, 0, 2, metadata="mbyn:next=7")])
    commit_offsets(bootstrap, prefix + "foreign", [TopicPartition(topic, 0, 4, metadata="mbyn:next=lots")])
    rows = {(r["consumer_group"].removeprefix(prefix), r["partition"]): r for r in sample_lag(topics)}

    def got(group: str, partition: int) -> tuple[int, int, float | None]:
        row = rows[(group, partition)]
        assert row["members"] == 0
        return row["lag"], row["held"], row["lag_seconds"]

    lag, held, seconds = got("from-start", 0)
    assert (lag, held) == (10, 0) and seconds == pytest.approx(600, abs=30)
    assert got("from-start", 1) == (0, 0, 0.0), "caught up: 0 s, no lookup"
    lag, held, seconds = got("halfway", 0)
    assert (lag, held) == (5, 0) and seconds == pytest.approx(60, abs=30)
    assert got("same-place", 0) == got("halfway", 0), "one lookup serves both groups"
    lag, held, seconds = got("holding", 0)
    assert (lag, held) == (8, 5) and seconds == pytest.approx(60, abs=30), "measured at the next unread record"
    lag, held, seconds = got("foreign", 0)
    assert (lag, held) == (6, 0) and seconds == pytest.approx(600, abs=30), "metadata not ours: nothing held"


def test_a_tail_with_no_record_left_to_read_is_caught_up_not_stuck(topics):
    """After the committed offset only a transaction's commit marker (a group that read every record of a
    transactional topic commits the offset after the last record, i.e. the marker's), or only offsets
    retention deleted: nothing will ever be read there, so nothing waits — the group is ok, not stuck."""
    bootstrap, prefix = topics.bootstrap(), topics.topic_prefix
    transactional, plain = prefix + "orders-enriched", prefix + "clickstream"
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{prefix}test-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for _ in range(3):
        producer.produce(transactional, b"{}", b"k", partition=0)
    producer.commit_transaction(30)  # offsets 0-2 records, 3 the commit marker; end 4
    produce_aged(topics, plain, 0, [5] * 4)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(plain, 0, 4)]).values():  # retention took all 4
        future.result(30)
    commit_offsets(bootstrap, prefix + "after-marker", [TopicPartition(transactional, 0, 3)])
    commit_offsets(bootstrap, prefix + "after-retention", [TopicPartition(plain, 0, 2)])

    rows = sample_lag(topics)
    groups = summarise(rows)
    for name in ("after-marker", "after-retention"):
        group = groups[prefix + name]
        assert (group.waiting, group.lag_seconds) == (0, 0.0), (name, rows)
        assert group_state(group, stalled_s=600.0)[0] == "ok", (name, group_state(group, stalled_s=600.0))


def test_the_fraud_detectors_join_window_shows_as_held_not_as_lag(topics, client):
    producer = TopicProducer("test", topics)
    for i in range(4):  # orders whose payments have not come: the join keeps them for --timeout
        order_id = f"O-held-{i}"
        payload = {"order_id": order_id, "customer_id": "C000001", "session_id": "s", "country": "DE",
                   "currency": "EUR", "amount": 10.0,
                   "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": 10.0}]}
        assert producer.send("orders", dict(make_envelope("order_placed", payload, "test")), order_id)
    producer.flush_or_raise()
    producer.close()
    summary = run_consumer(FraudDetector(topics, FraudRules(timedelta(seconds=600))), topics, idle_exit=2)
    assert summary["processed"] == 4 and summary["commits"] >= 1, summary

    group = topics.topic_prefix + "fraud-detector"
    rows = [r for r in sample_lag(topics) if r["consumer_group"] == group]
    assert sum(r["lag"] for r in rows) == 4 and sum(r["held"] for r in rows) == 4, rows
    assert all(r["lag_seconds"] == 0.0 for r in rows), "nothing waits to be read"
    assert group_state(summarise(rows)[group])[0] == "held"

    response = client.get("/api/lag", params={"minutes": 5})  # no lag monitor ran: one live sample
    assert response.status_code == 200, response.text
    view = response.json()
    shown = next(g for g in view["groups"] if g["group"] == group)
    assert view["from"] == "live" and view["states"]["held"] == 1
    assert (shown["state"], shown["held"], shown["waiting"], shown["worker"]) == ("held", 4, 0, "fraud-detector")
    assert shown["holds"] == WORKERS["fraud-detector"].holds and "join window" in shown["holds"]
    assert len(shown["history"]) == 1 and sum(p["held"] for p in shown["partitions"]) == 4


def test_the_view_tells_ok_lagging_held_and_stuck_apart_from_the_history(warehouse, client):
    """Samples as the lag monitor writes them (no broker needed: the newest is fresh): per group the state, the
    reason and the trend; other prefixes' groups are not shown."""
    p = warehouse.topic_prefix
    now = datetime.now(UTC)

    def row(group: str, end: int, lag: int, seconds: float | None, members: int, held: int = 0) -> dict[str, Any]:
        return {"consumer_group": p + group, "topic": p + "orders", "partition": 0, "end_offset": end,
                "committed_offset": end - lag, "lag": lag, "held": held, "lag_seconds": seconds, "members": members}

    engine = warehouse_engine(warehouse)
    try:
        init_schema(engine)
        for i, ago in enumerate((70, 40, 2)):
            write_samples(engine, [
                row("still", 100, 5, 20.0 + ago, 1),  # a member, records waiting, position never moves
                row("reading", 100 + 10 * i, 2, 1.0, 2),  # moves, fresh
                row("slow", 1000 + 10 * i, 500, 50.0, 1),  # moves, but 50 s behind
                row("fraud-detector", 200 + i, 150, 0.0, 2, held=150),  # a join window
                row("gone", 30, 3, 5.0, 0),  # nobody left to read
                {**row("other", 10, 9, 99.0, 0), "consumer_group": "someone-else-" + p + "other"},
            ], now - timedelta(seconds=ago))
    finally:
        engine.dispose()

    response = client.get("/api/lag", params={"minutes": 5})
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["from"] == "lag_samples"
    groups = {g["consumer"]: g for g in view["groups"]}
    assert {name: g["state"] for name, g in groups.items()} == {
        "still": "stuck", "reading": "ok", "slow": "lagging", "fraud-detector": "held", "gone": "stuck"}
    assert "has not moved for 68 s" in groups["still"]["why"]
    assert groups["gone"]["why"] == "3 record(s) waiting and no live member"
    assert groups["fraud-detector"]["holds"] == WORKERS["fraud-detector"].holds
    assert view["states"] == {"ok": 1, "lagging": 1, "held": 1, "stuck": 2}
    slow = groups["slow"]
    assert [pt["lag_seconds"] for pt in slow["history"]] == [50.0, 50.0, 50.0]
    assert (slow["waiting"], slow["members"], slow["lag_seconds"]) == (500, 1, 50.0)
    assert slow["partitions"] == [{"topic": p + "orders", "partition": 0, "end_offset": 1020, "committed_offset": 520,
                                   "lag": 500, "held": 0, "lag_seconds": 50.0}]
    shorter = client.get("/api/lag", params={"minutes": 0.5}).json()
    assert all(len(g["history"]) == 1 for g in shorter["groups"]), "only the samples of the window"


def test_hostile_lag_windows_are_refused_naming_the_parameter_and_anonymous_callers_get_nothing() -> None:
    from fastapi.testclient import TestClient

    from mbyn.pipeline_view.app import create_app

    # refused before any setting, broker or warehouse is read
    with view_client(raise_server_exceptions=False) as bare:
        for minutes in ("-1", "0", "abc", "nan", "inf", "-inf", "1e309", "1441", "", "10; DROP TABLE x", "1" * 400):
            response = bare.get("/api/lag", params={"minutes": minutes})
            assert response.status_code == 422, (minutes, response.text)
            assert response.json()["detail"][0]["loc"] == ["query", "minutes"], response.text
        page = bare.get("/")
        assert 'src="static/lag.js"' in page.text and 'id="lag"' in page.text
        assert bare.get("/static/lag.js").headers["content-type"].startswith("text/javascript")
    with TestClient(create_app(get_settings), raise_server_exceptions=False) as anonymous:  # the real login check
        for path in ("/api/lag", "/api/lag?minutes=-1", "/static/lag.js"):
            assert anonymous.get(path).status_code in (401, 403), path


def test_monitor_writes_lag_samples_and_stops_on_sigterm(warehouse, tmp_path):
    group, topic = make_lag(warehouse)
    summary = monitor(warehouse, interval=0.5, duration=1.2)
    assert summary["rounds"] >= 2 and summary["failed_rounds"] == 0 and summary["groups"] == [group]
    engine = sa.create_engine(warehouse.warehouse())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text('SELECT sampled_at, consumer_group, topic, "partition", end_offset, '
                                        "committed_offset, lag, held, members, lag_seconds FROM lag_samples "
                                        "ORDER BY id")).all()
    finally:
        engine.dispose()
    assert len(rows) == 2 * summary["rounds"]
    assert len({r.sampled_at for r in rows}) == summary["rounds"], "one timestamp per round"
    assert {(r.consumer_group, r.topic, r.partition, r.end_offset, r.committed_offset, r.lag, r.held, r.members)
            for r in rows} == {(group, topic, 0, 10, 7, 3, 0, 0), (group, topic, 2, 0, 0, 0, 0, 0)}
    assert all(r.lag_seconds == 0.0 for r in rows if r.lag == 0)
    assert all(0 <= r.lag_seconds < 120 for r in rows if r.lag > 0), "the records were produced just now"

    log = tmp_path / "lag.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "consume", "lag-monitor", "--interval", "0.5"],
                                stdout=subprocess.PIPE, stderr=err)
    with reaped(proc):
        deadline = time.monotonic() + 60
        while "round 1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        out, _ = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, log.read_text()[-2000:]
    cli = json.loads(out.decode().strip().splitlines()[-1])
    assert cli["stopped_by"] == "SIGTERM" and cli["rounds"] >= 1 and cli["rows"] == 2 * cli["rounds"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_init_schema_adds_the_new_lag_columns_to_an_older_warehouse(request: pytest.FixtureRequest, tmp_path,
                                                                    backend: str) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            key = "SERIAL PRIMARY KEY" if backend == "postgres" else "INTEGER PRIMARY KEY"
            conn.exec_driver_sql(f'CREATE TABLE lag_samples (id {key}, sampled_at TIMESTAMP NOT NULL, '
                                 'consumer_group VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL, '
                                 '"partition" INTEGER NOT NULL, end_offset BIGINT NOT NULL, committed_offset BIGINT, '
                                 "lag BIGINT NOT NULL)")
            conn.exec_driver_sql('INSERT INTO lag_samples (sampled_at, consumer_group, topic, "partition", end_offset, '
                                 "committed_offset, lag) VALUES ('2026-01-01 00:00:00', 'g', 't', 0, 5, 2, 3)")
        init_schema(engine)
        with engine.connect() as conn:
            old = conn.execute(sa.text("SELECT lag, lag_seconds, held, members FROM lag_samples")).one()
        assert tuple(old) == (3, None, None, None), "older rows keep NULL: unknown"
        write_samples(engine, [{"consumer_group": "g", "topic": "t", "partition": 0, "end_offset": 9,
                                "committed_offset": 2, "lag": 7, "held": 4, "members": 1, "lag_seconds": 1.5}],
                      datetime.now(UTC))
        with engine.connect() as conn:
            new = conn.execute(sa.text("SELECT lag, lag_seconds, held, members FROM lag_samples WHERE lag = 7")).one()
        assert tuple(new) == (7, 1.5, 4, 1)
    finally:
        engine.dispose()
