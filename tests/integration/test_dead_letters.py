"""dead-letters consumer → quarantine, `mbyn dlq list` and `mbyn dlq replay`, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbyn.consumers.dead_letters import DeadLetterSink
from mbyn.consumers.lake_archiver import LakeArchiver
from mbyn.consumers.runtime import run_consumer
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.contracts.dead_letters import build_headers
from mbyn.kafka.producer import TopicProducer
from tests.helpers.crash import run_until_killed
from tests.helpers.kafka import read_all
from tests.helpers.warehouse import count_writes, row_writes
from tests.integration.test_warehouse_loader import query, warehouse  # noqa: F401 - the parametrized fixture

pytestmark = pytest.mark.integration


def mbyn(*argv: str) -> str:
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", *argv], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quarantine_once_list_and_replay_to_the_original_topic(warehouse):  # noqa: F811
    orders = warehouse.topic_prefix + "orders"
    letters_topic = warehouse.topic_prefix + "dead-letters"
    producer = TopicProducer("test", warehouse)
    producer.send_raw(orders, b"<order>not json</order>", b"O-77", [("trace_id", b"trace-77")])
    producer.flush_or_raise()

    run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=3)
    [letter] = read_all(warehouse.bootstrap(), letters_topic, expect=1)
    # The same dead letter again (its consumer crashed before moving on): quarantined once all the same.
    producer.send_raw(letters_topic, letter.value, letter.key, list(letter.headers.items()))
    producer.flush_or_raise()
    summary = run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=3)
    assert summary["consumed"] == 2
    rows = query(warehouse, 'SELECT id, topic, reason, value_text, replayed_at FROM quarantine')
    assert len(rows) == 1
    qid, topic, reason, text, replayed_at = rows[0]
    assert (topic, reason, text, replayed_at) == (orders, "not_json", "<order>not json</order>", None)

    listing = mbyn("dlq", "list")
    assert orders in listing and "not_json" in listing

    assert "replayed 1 record(s)" in mbyn("dlq", "replay", "--topic", "orders", "--since", "2000-01-01T00:00:00Z")
    back = read_all(warehouse.bootstrap(), orders, expect=2)
    replayed = [r for r in back if "mbyn.replay_of" in r.headers]
    assert len(replayed) == 1
    assert replayed[0].key == b"O-77" and replayed[0].value == b"<order>not json</order>"
    assert replayed[0].headers["trace_id"] == b"trace-77"
    assert replayed[0].headers["mbyn.replay_of"] == str(qid).encode()
    assert query(warehouse, "SELECT count(*) FROM quarantine WHERE replayed_at IS NOT NULL") == [(1,)]
    assert "replayed 0 record(s)" in mbyn("dlq", "replay"), "a record is replayed once"

    table = mbyn("sql", "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason")
    assert table.splitlines()[2].split() == ["not_json", "|", "1"] and "(1 row)" in table


def test_a_sigkill_before_the_offsets_are_stored_quarantines_no_letter_twice(warehouse, tmp_path):  # noqa: F811
    """Quarantine keeps the first row per coordinates, so only the write counter can see a batch written twice."""
    url = warehouse.warehouse()
    count_writes(url, "quarantine", ["consumer_group", "topic", "partition", "offset"])
    orders = warehouse.topic_prefix + "orders"
    producer = TopicProducer("test", warehouse)
    letters = 400
    for n in range(letters):
        producer.send_raw(warehouse.topic_prefix + "dead-letters", b"bad %d" % n, b"O-%d" % n, build_headers(
            [], reason="not_json", error_class="PoisonRecordError", error_message="not JSON", traceback_text="",
            topic=orders, partition=n % 6, offset=n, timestamp_ms=None, consumer_group="loader"))
    producer.flush_or_raise()

    run_until_killed(["--kill-before-sql", "kafka_offsets", "--after", "4"],
                     ["consume", "dead-letters", "--batch-size", "40", "--instance-id", "a", "--idle-exit", "10"],
                     tmp_path / "killed.log")
    kept = query(warehouse, "SELECT count(*) FROM quarantine")[0][0]
    assert 0 < kept < letters, "killed mid-stream"

    run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=3, instance_id="a")
    assert query(warehouse, "SELECT count(*) FROM quarantine") == [(letters,)]
    writes = row_writes(url, "quarantine")
    assert len(writes) == letters and {k: n for k, n in writes.items() if n != 1} == {}, \
        "every dead letter quarantined by exactly one committed write"


def test_a_record_two_groups_quarantined_is_replayed_once(warehouse):  # noqa: F811
    """One quarantine row per group, one record on the topic: replay sends it once and marks both rows."""
    orders = warehouse.topic_prefix + "orders"
    producer = TopicProducer("test", warehouse)
    producer.send_raw(orders, b"not json", b"O-78", [])
    producer.flush_or_raise()
    run_consumer(WarehouseLoader(warehouse), warehouse, idle_exit=3)
    run_consumer(LakeArchiver(warehouse), warehouse, idle_exit=3)
    run_consumer(DeadLetterSink(warehouse), warehouse, idle_exit=3)
    assert query(warehouse, "SELECT count(DISTINCT consumer_group) FROM quarantine") == [(2,)]

    assert "replayed 1 record(s)" in mbyn("dlq", "replay", "--topic", "orders")
    back = read_all(warehouse.bootstrap(), orders, expect=2)
    assert len([r for r in back if "mbyn.replay_of" in r.headers]) == 1
    assert query(warehouse, "SELECT count(*) FROM quarantine WHERE replayed_at IS NULL") == [(0,)]
