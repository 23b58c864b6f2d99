"""`mbyn kafka tool` in the open mode, against the session broker: Kafka's own console consumer reads what a
producer wrote, the console producer writes what a consumer then reads, and the topic and offset tools answer.
(The secured mode: tests/integration/test_security.py, test_kafka_tool_reads_and_writes_in_the_secured_mode.)"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic

from mbyn.kafka.clients import admin_client, client_config
from mbyn.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`mbyn kafka tool ...` in a subprocess (the environment is ``mbyn_env``'s)."""
    return subprocess.run([sys.executable, "-m", "mbyn.cli", "kafka", "tool", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def topic(mbyn_env: Settings) -> str:
    name = f"{mbyn_env.topic_prefix}tool-{uuid.uuid4().hex[:6]}"
    admin = admin_client(mbyn_env)  # kept referenced until the futures are done (a freed client never answers)
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=60)
    return name


def test_console_consumer_reads_what_a_producer_wrote(mbyn_env: Settings, topic: str) -> None:
    values = [f"record-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    producer = Producer(client_config(mbyn_env))
    for i, value in enumerate(values):
        producer.produce(topic, key=str(i).encode(), value=value.encode())
    assert producer.flush(30) == 0

    read = tool("console-consumer", "--topic", topic, "--from-beginning", "--max-messages", "5",
                "--timeout-ms", "60000")
    assert read.returncode == 0, read.stderr[-3000:]
    assert sorted(read.stdout.split()) == sorted(values)
    assert "Processed a total of 5 messages" in read.stderr

    offsets = tool("get-offsets", "--topic", topic)
    assert offsets.returncode == 0, offsets.stderr[-3000:]
    assert sum(int(line.rsplit(":", 1)[1]) for line in offsets.stdout.split()) == 5

    listed = tool("topics", "--list")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert topic in listed.stdout.split()


def test_console_producer_writes_what_a_consumer_reads(mbyn_env: Settings, topic: str) -> None:
    values = [f"typed-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    wrote = tool("console-producer", "--topic", topic, stdin="\n".join(values) + "\n")
    assert wrote.returncode == 0, wrote.stderr[-3000:]

    consumer = Consumer({**client_config(mbyn_env), "group.id": f"probe-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        seen: list[str] = []
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen.append((msg.value() or b"").decode())
            if len(seen) == len(values):
                break
    finally:
        consumer.close()
    assert sorted(seen) == sorted(values)


def test_consumer_groups_shows_the_console_consumers_committed_offsets(mbyn_env: Settings, topic: str) -> None:
    producer = Producer(client_config(mbyn_env))
    for i in range(4):
        producer.produce(topic, key=str(i).encode(), value=b"x")
    assert producer.flush(30) == 0
    group = f"{mbyn_env.topic_prefix}tool-group"
    read = tool("console-consumer", "--topic", topic, "--group", group, "--from-beginning", "--max-messages", "4",
                "--timeout-ms", "60000")
    assert read.returncode == 0 and "Processed a total of 4 messages" in read.stderr, read.stderr[-3000:]

    listed = tool("consumer-groups", "--list")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert group in listed.stdout.split()
    described = tool("consumer-groups", "--describe", "--group", group)
    assert described.returncode == 0, described.stderr[-3000:]
    rows = [line.split() for line in described.stdout.splitlines() if topic in line.split()]
    assert len(rows) == 2 and sum(int(r[3]) for r in rows) == 4, described.stdout  # CURRENT-OFFSET per partition


def test_an_unknown_tool_is_refused_with_the_list(mbyn_env: Settings) -> None:
    unknown = tool("kcat", "-L")
    assert unknown.returncode == 2
    assert "unknown tool 'kcat'" in unknown.stderr and "console-consumer" in unknown.stderr
