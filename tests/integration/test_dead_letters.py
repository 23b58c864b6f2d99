"""dead-letters consumer → quarantine, `mbyn dlq list` and `mbyn dlq replay`, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbyn.consumers.dead_letters import DeadLetterSink
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.kafka.consumer import run_consumer
from mbyn.kafka.producer import TopicProducer
from tests.helpers.kafka import read_all
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
