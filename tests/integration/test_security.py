"""The secured mode on a real 3-node cluster: SASL/SCRAM-SHA-512, one principal per service, ACLs from the catalog.

One secured cluster (``cluster.up(security="scram")``, free ports, tied to this test process) serves the
module; every client authenticates with the password `mbyn kafka up` generated into the local secret store.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from mbyn.kafka.admin import apply_topics
from mbyn.kafka.clients import client_config
from mbyn.kafka.security import as_principal, local_credentials
from mbyn.local import kafka as cluster
from mbyn.settings import PROJECT_ROOT, Settings, load_settings
from tests.conftest import free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFIX = "sec-"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A secured 3-node cluster with the catalog topics and ACLs for ``PREFIX``; the admin's settings."""
    var = tmp_path_factory.mktemp("secured") / "var"
    settings = load_settings(var_dir=var, kafka_port=free_port_block(3), kafka_controller_port=free_port_block(3),
                             kafka_heap="384m", kafka_lib_dir=PROJECT_ROOT / "var" / "kafka" / "lib",
                             security="scram", topic_prefix=PREFIX)
    state = cluster.up(settings, nodes=3, die_with_parent=True)
    try:
        admin = as_principal(settings.model_copy(update={"bootstrap_servers": state.bootstrap_servers}))
        apply_topics(admin)
        yield admin
    finally:
        cluster.down(settings)


def env_for(settings: Settings, principal: str | None, password: str | None = None) -> dict[str, str]:
    """A subprocess environment authenticating as ``principal`` (its real password unless one is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBYN_")}
    env.update({"MBYN_VAR_DIR": str(settings.var_dir), "MBYN_BOOTSTRAP_SERVERS": settings.bootstrap(),
                "MBYN_TOPIC_PREFIX": PREFIX, "MBYN_SECURITY": "scram", "PYTHONUNBUFFERED": "1"})
    if principal is not None:
        env["MBYN_KAFKA_USERNAME"] = principal
        env["MBYN_KAFKA_PASSWORD"] = password or local_credentials(settings)[principal]
    return env


def as_service(settings: Settings, principal: str) -> dict[str, object]:
    """librdkafka settings of ``principal`` through the project's one client-config function."""
    anonymous = settings.model_copy(update={"kafka_username": None, "kafka_password": None})
    return client_config(as_principal(anonymous, principal))


def mbyn(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def end_offsets(settings: Settings, physical: str) -> int:
    """Sum of the high watermarks of a topic, read as admin (independent of the code under test)."""
    consumer = Consumer({**client_config(settings), "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    deadline = time.monotonic() + 30
    try:
        while True:  # a freshly started cluster answers NOT_LEADER_FOR_PARTITION for a moment: retriable
            try:
                parts = consumer.list_topics(physical, timeout=10).topics[physical].partitions
                return sum(consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)[1] for p in parts)
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def warehouse_count(settings: Settings, table: str) -> int:
    engine = sa.create_engine(f"sqlite:///{settings.var_dir / 'warehouse.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_generator_to_warehouse_end_to_end_with_own_principals(secured: Settings) -> None:
    produced = mbyn(env_for(secured, "clickstream"), "produce", "clickstream", "--count", "300", "--seed", "7")
    assert produced.returncode == 0, produced.stderr[-3000:]
    clicks, orders = end_offsets(secured, PREFIX + "clickstream"), end_offsets(secured, PREFIX + "orders")
    assert clicks > 0 and orders > 0 and clicks + orders == 300

    loaded = mbyn(env_for(secured, "warehouse-loader"), "consume", "warehouse-loader", "--idle-exit", "4")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert warehouse_count(secured, "clicks") == clicks
    assert warehouse_count(secured, "orders") == orders


def test_producer_writing_a_topic_it_does_not_own_is_refused(secured: Settings) -> None:
    physical = PREFIX + "shipments"  # written by the shipment tracker only
    before = end_offsets(secured, physical)
    errors: list[KafkaError] = []
    producer = Producer({**as_service(secured, "clickstream"), "message.timeout.ms": 15000})
    producer.produce(physical, key=b"k", value=b"{}", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert end_offsets(secured, physical) == before

    # ... and through the project's producer runtime, as `mbyn produce` would: the batch fails loudly.
    from mbyn.kafka.producer import DeliveryError, TopicProducer

    service = secured.model_copy(update={"kafka_username": None, "kafka_password": None})
    runtime = TopicProducer("intruder", as_principal(service, "fx-rates"))
    runtime.send_raw(physical, b"{}", b"k")
    with pytest.raises(DeliveryError, match=r"(?i)authoriz"):
        runtime.flush_or_raise(timeout=30)
    assert end_offsets(secured, physical) == before


def test_consumer_group_reading_a_topic_it_does_not_own_is_refused(secured: Settings) -> None:
    def first_error(principal: str, group: str, topic: str) -> int | None:
        consumer = Consumer({**as_service(secured, principal), "group.id": PREFIX + group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            consumer.subscribe([PREFIX + topic])
            for _ in range(20):
                msg = consumer.poll(1.0)
                if msg is not None and msg.error() is not None:
                    return int(msg.error().code())
            return None
        finally:
            consumer.close()

    # fraud-detector may read orders and payments, not clickstream
    assert first_error("fraud-detector", "fraud-detector", "clickstream") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # ... nor use another service's consumer group on a topic it does own
    assert first_error("fraud-detector", "warehouse-loader", "orders") == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_missing_or_wrong_credentials_are_refused_with_a_clear_error(secured: Settings) -> None:
    missing = mbyn(env_for(secured, None), "produce", "clickstream", "--count", "1")
    assert missing.returncode == 2
    assert "MBYN_KAFKA_USERNAME" in missing.stderr and "MBYN_KAFKA_PASSWORD" in missing.stderr

    wrong = mbyn(env_for(secured, "clickstream", password="not-the-password"), "produce", "clickstream",
                 "--count", "1", timeout=60)
    assert wrong.returncode != 0
    assert "refused the credentials" in wrong.stderr and "MBYN_KAFKA_PASSWORD" in wrong.stderr

    # an open-mode client (no SASL at all) gets nothing from the secured listener
    probe = Consumer({"bootstrap.servers": secured.bootstrap(), "group.id": "open-probe"})
    try:
        with pytest.raises(KafkaException):  # librdkafka reports a transport failure
            probe.list_topics(timeout=5)
    finally:
        probe.close()


def test_credentials_store_is_private_and_cli_prints_one_principal(secured: Settings) -> None:
    store = secured.kafka_dir / "scram-credentials.json"
    assert store.stat().st_mode & 0o777 == 0o600
    out = mbyn(env_for(secured, None), "kafka", "credentials", "payments")
    assert out.returncode == 0, out.stderr
    assert f"export MBYN_KAFKA_PASSWORD={json.loads(store.read_text())['payments']}" in out.stdout
    for node in Path(secured.kafka_dir / "n3-scram").glob("node-*"):
        assert (node / "server.properties").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("service", "topic", "args", "expected"), [
    ("payments", "payments", ("--synthetic", "--count", "40"), 40),  # Java, kafka-clients
    ("shipments", "shipments", ("--synthetic", "--count", "3", "--stage-delay", "0", "--rate", "50"), 12),  # Go
])
def test_java_and_go_producers_authenticate_as_their_own_principal(secured: Settings, service: str, topic: str,
                                                                   args: tuple[str, ...], expected: int) -> None:
    before = end_offsets(secured, PREFIX + topic)
    run = mbyn(env_for(secured, service), "produce", service, *args, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert end_offsets(secured, PREFIX + topic) - before == expected

    refused = mbyn(env_for(secured, service, password="wrong"), "produce", service, *args, timeout=120)
    assert refused.returncode != 0
    assert "refused the credentials" in refused.stderr, refused.stderr[-2000:]
    assert end_offsets(secured, PREFIX + topic) - before == expected


def test_kafka_tool_reads_and_writes_in_the_secured_mode(secured: Settings) -> None:
    """Kafka's own Java tools authenticate with SCRAM on every machine (librdkafka < 2.6.1, e.g. Debian 12's kcat,
    cannot against Kafka 4): `mbyn kafka tool` hands them the principal's client config file."""
    from confluent_kafka.admin import NewTopic

    from mbyn.kafka.clients import admin_client

    physical = f"{PREFIX}tool-{uuid.uuid4().hex[:6]}"
    admin = admin_client(secured)  # kept referenced until the futures are done (a freed client never answers)
    for future in admin.create_topics([NewTopic(physical, 2, 3)]).values():
        future.result(timeout=60)
    env = env_for(secured, None)  # no MBYN_KAFKA_USERNAME: the tool picks the principal from the local store
    values = [f"secured-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    wrote = subprocess.run([sys.executable, "-m", "mbyn.cli", "kafka", "tool", "console-producer", "--topic", physical],
                           input="\n".join(values) + "\n", env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    assert end_offsets(secured, physical) == 3

    read = mbyn(env, "kafka", "tool", "console-consumer", "--topic", physical, "--from-beginning",
                "--max-messages", "3", "--timeout-ms", "60000")
    assert read.returncode == 0, read.stderr[-3000:]
    assert sorted(read.stdout.split()) == sorted(values), read.stderr[-3000:]
    listed = mbyn(env, "kafka", "tool", "topics", "--list")
    assert listed.returncode == 0 and physical in listed.stdout.split(), listed.stderr[-3000:]

    # a principal without rights on the topic reads nothing: the ACLs hold for the Java tools too
    refused = mbyn(env, "kafka", "tool", "--principal", "payments", "console-consumer", "--topic", physical,
                   "--from-beginning", "--max-messages", "3", "--timeout-ms", "20000")
    assert not set(values) & set(refused.stdout.split())
    assert "not authorized" in refused.stderr.lower() or "authorization" in refused.stderr.lower(), refused.stderr

    store = json.loads((secured.kafka_dir / "scram-credentials.json").read_text())
    # the client config with the password lived in a private temporary folder, removed when the tool exited
    assert not list(secured.var_dir.rglob("client-*.properties"))
    shown = wrote.stdout + wrote.stderr + read.stdout + read.stderr + listed.stdout + listed.stderr
    assert not [name for name, password in store.items() if password in shown]


def test_viewer_reads_status_and_the_view_but_cannot_write_or_delete(secured: Settings) -> None:
    """The read-only principal of `mbyn status` and the pipeline view: READ/DESCRIBE on every topic and group of
    the prefix, nothing else — tested as a client would be refused, and the effects checked as admin."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from mbyn.errors import MbynError
    from mbyn.kafka.clients import admin_client
    from mbyn.kafka.security import as_viewer, viewer_settings
    from mbyn.pipeline_view.app import create_app
    from mbyn.status import collect_status

    topic, group = PREFIX + "fx-rates", f"{PREFIX}audit-{uuid.uuid4().hex[:6]}"  # nobody else counts fx-rates
    producer = Producer(client_config(secured))
    for i in range(3):
        producer.produce(topic, key=f"k{i}".encode(), value=b"{}")
    assert producer.flush(30) == 0
    committer = Consumer({**client_config(secured), "group.id": group, "enable.auto.commit": False})
    try:
        for _ in range(60):  # a fresh cluster's group coordinator may still be loading
            try:
                committer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
                break
            except KafkaException as exc:
                loading = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                           KafkaError.NOT_COORDINATOR)
                if not exc.args[0].retriable() and exc.args[0].code() not in loading:
                    raise
                time.sleep(1)
    finally:
        committer.close()
    ends = end_offsets(secured, topic)

    # `mbyn status` as viewer: every topic and this group with its committed offset, no authorization error
    status = mbyn(env_for(secured, "viewer"), "status", "--json", "--scan-limit", "1000")
    assert status.returncode in (0, 4, 5), status.stderr[-3000:]  # the verdict's codes; 1 would be an error
    shown = json.loads(status.stdout)
    assert shown["topics"]["fx-rates"]["end_sum"] == ends and shown["topics"]["orders"]["exists"]
    assert [p["committed"] for p in shown["groups"][group]["partitions"] if p["topic"] == topic] == [1]
    assert "authoriz" not in status.stderr.lower()

    # the view runs inside Airflow as `airflow` (which may not describe other groups) and reads as viewer
    airflow = secured.model_copy(update={"kafka_username": "airflow",
                                         "kafka_password": SecretStr(local_credentials(secured)["airflow"])})
    view = as_viewer(airflow)
    assert view.kafka_username == "viewer"
    assert collect_status(view, scan_limit=1000)["groups"][group]["partitions"][0]["committed"] == 1
    app = create_app(lambda: as_viewer(airflow))  # the view's own routes, as the plugin serves them in Airflow
    app.dependency_overrides[app.state.login_required] = lambda: None  # Airflow's login: tested in e2e
    with TestClient(app) as client:
        graph, topic_view = client.get("/api/graph"), client.get("/api/topics/fx-rates")
    assert graph.status_code == 200 and topic_view.status_code == 200, (graph.text, topic_view.text)
    assert "fx-rates" in {t["name"] for t in graph.json()["topics"]}
    assert inspect.signature(create_app).parameters["settings_factory"].default is viewer_settings
    wrong = as_viewer(airflow.model_copy(update={"viewer_kafka_password": SecretStr("not-the-password")}))
    with pytest.raises(MbynError, match=r"(?i)refused the credentials"):
        admin_client(wrong, timeout_s=10)

    # ... and cannot write, delete, create, or move a group
    viewer = as_service(secured, "viewer")
    errors: list[KafkaError] = []
    intruder = Producer({**viewer, "message.timeout.ms": 15000})
    intruder.produce(topic, value=b"{}", on_delivery=lambda err, _msg: errors.append(err))
    assert intruder.flush(30) == 0
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    admin = admin_client(as_principal(secured.model_copy(update={"kafka_username": None, "kafka_password": None}),
                                      "viewer"))
    attempts = {
        "delete topic": admin.delete_topics([topic], request_timeout=15)[topic],
        "delete records": next(iter(admin.delete_records([TopicPartition(topic, 0, 1)],
                                                         request_timeout=15).values())),
        "create topic": admin.create_topics([NewTopic(f"{PREFIX}viewer-made", 1, 3)],
                                            request_timeout=15)[f"{PREFIX}viewer-made"],
        "delete group": admin.delete_consumer_groups([group], request_timeout=15)[group],
        "alter config": next(iter(admin.incremental_alter_configs([ConfigResource(
            "topic", topic, incremental_configs=[ConfigEntry("retention.ms", "1000",
                                                             incremental_operation=AlterConfigOpType.SET)])],
            request_timeout=15).values())),
        "add partitions": admin.create_partitions([NewPartitions(topic, 9)], request_timeout=15)[topic],
    }
    for action, future in attempts.items():
        with pytest.raises(KafkaException, match=r"(?i)authoriz") as refused:
            future.result(timeout=30)
        assert refused.value.args[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                KafkaError.CLUSTER_AUTHORIZATION_FAILED), action
    moved = Consumer({**viewer, "group.id": group, "enable.auto.commit": False})
    try:
        with pytest.raises(KafkaException, match=r"(?i)authoriz"):
            moved.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        moved.close()
    assert end_offsets(secured, topic) == ends  # nothing written, nothing deleted
    check = Consumer({**client_config(secured), "group.id": group})
    try:
        assert check.committed([TopicPartition(topic, 0)], timeout=15)[0].offset == 1
        assert f"{PREFIX}viewer-made" not in check.list_topics(timeout=15).topics
    finally:
        check.close()
