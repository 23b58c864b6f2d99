"""The secured mode's plan, without a broker: ACLs derived from the catalog, client configs, broker settings."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from mbyn.catalog import load_catalog
from mbyn.consumers.contract import StreamConsumer
from mbyn.contracts.dead_letters import DEAD_LETTER_TOPIC
from mbyn.errors import ConfigError
from mbyn.kafka.clients import client_config
from mbyn.kafka.security import (
    ADMIN,
    BROWSERS,
    VIEWER,
    AclRule,
    acl_plan,
    format_arguments,
    groups_of,
    local_credentials,
    principals,
)
from mbyn.local.kafka import Node, server_properties
from mbyn.settings import load_settings
from mbyn.workers import WORKERS, consumers, producers


def rights(principal: str, prefix: str = "p-") -> set[tuple[str, str, str]]:
    return {(r.operation, r.resource, r.name) for r in acl_plan(prefix=prefix) if r.principal == principal}


def test_each_producer_may_write_only_its_own_topics() -> None:
    assert {n for op, res, n in rights("clickstream") if op == "write"} == {"p-clickstream", "p-orders"}
    # the Java and Go services also consume (orders, payments): what they cannot read goes to dead-letters
    assert {n for op, res, n in rights("payments") if op == "write"} == {"p-payments", "p-dead-letters"}
    assert {n for op, res, n in rights("shipments") if op == "write"} == {"p-shipments", "p-dead-letters"}
    assert {n for op, res, n in rights("fx-rates") if op == "write"} == {"p-fx-rates"}
    assert ("idempotent_write", "cluster", "kafka-cluster") in rights("payments")
    # a pure producer reads nothing and has no group
    assert not {r for r in rights("fx-rates") if r[0] == "read"}


def test_each_group_may_read_only_its_own_topics_and_group() -> None:
    loader = rights("warehouse-loader")
    assert ("read", "group", "p-warehouse-loader") in loader
    assert {n for op, res, n in loader if res == "group"} == {"p-warehouse-loader", "p-warehouse-loader-table-"}
    assert ("read", "topic", "p-orders-enriched") not in loader
    fraud = rights("fraud-detector")
    assert {n for op, res, n in fraud if op == "read" and res == "topic"} == {"p-orders", "p-payments"}
    assert {n for op, res, n in fraud if op == "write"} == {"p-alerts", "p-dead-letters"}
    # Java and Go services read with the group ids their code uses
    assert ("read", "group", "p-payments-service") in rights("payments")
    assert ("read", "group", "p-shipment-tracker") in rights("shipments")


def test_transactional_and_monitoring_rights() -> None:
    assert ("write", "transactional_id", "p-order-enricher-") in rights("order-enricher")
    assert not any(res == "transactional_id" for _, res, _ in rights("fraud-detector"))
    assert rights("lag-monitor") == {("describe", "topic", "p-"), ("describe", "group", "p-"),  # + its lag alerts
                                     ("write", "topic", "p-ops-alerts"),
                                     ("idempotent_write", "cluster", "kafka-cluster"),
                                     # the timestamp of each group's next unread record (seconds behind)
                                     ("read", "topic", "p-"), ("describe", "group", "mbyn-probe-")}
    # Kafka refuses an empty prefix: without a prefix the monitor describes everything literally ("*")
    assert ("describe", "group", "*") in rights("lag-monitor", prefix="")
    assert rights("kafdrop") == {("read", "topic", "p-"), ("describe_configs", "topic", "p-"),
                                 ("describe", "group", "p-")}
    # the viewer (mbyn status, report) reads like kafdrop, plus its assign-only readers' unprefixed probe group
    # ... and its own console consumers' groups (`mbyn kafka tool console-consumer`: p-viewer-<hex>)
    assert rights(VIEWER) == rights("kafdrop") | {("describe", "group", "mbyn-probe-"),
                                                   ("read", "group", "p-viewer-")}
    assert not {r for r in rights(VIEWER) if r[0] in ("write", "idempotent_write")}


def test_plan_is_sorted_without_repeats_and_prefixed_patterns_are_marked() -> None:
    plan = acl_plan(prefix="p-")
    assert plan == sorted(set(plan))
    table_group = AclRule("order-enricher", "group", "p-order-enricher-table-", "prefixed", "read")
    assert table_group in plan and table_group.line().endswith("p-order-enricher-table-*")
    assert ADMIN not in {r.principal for r in plan}  # the super user needs no ACL


def test_catalog_access_matches_what_the_code_reads_and_writes() -> None:
    """The catalog's readers/writers are a declaration; the consumers' and producers' code must agree with it."""
    catalog = load_catalog()
    readers = {t.name: set(t.readers) for t in catalog.topics.values()}
    writers = {t.name: set(t.writers) for t in catalog.topics.values()}
    checked = 0
    for spec in consumers():
        module = importlib.import_module(spec.module)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            ours = cls.__module__ == spec.module and getattr(cls, "name", "") == spec.name
            if issubclass(cls, StreamConsumer) and ours:
                checked += 1
                for topic in cls.topics:
                    assert spec.name in readers[topic], f"{spec.name} reads {topic} but is not in its readers"
                assert spec.name in writers[DEAD_LETTER_TOPIC], f"{spec.name} dead-letters but may not write them"
    assert checked >= 6
    for spec in producers():
        topic = getattr(importlib.import_module(spec.module), "TOPIC", None)
        if topic is not None:
            assert spec.name in writers[topic], f"producer {spec.name} writes {topic} but is not in its writers"
    known = set(WORKERS) | {"airflow", *BROWSERS}
    assert set(principals()) - {ADMIN} <= known, "a catalog principal names no producer, consumer or airflow"
    assert {w.name for w in WORKERS.values() if w.monitor} <= {w.name for w in consumers()}
    assert groups_of("warehouse-loader") == ("warehouse-loader",)


def test_client_config_open_is_unchanged_and_secured_needs_both_credentials(tmp_path: Path) -> None:
    open_mode = load_settings(var_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    assert client_config(open_mode) == {"bootstrap.servers": "127.0.0.1:1"}
    secured = open_mode.model_copy(update={"security": "scram"})
    with pytest.raises(ConfigError, match="MBYN_KAFKA_USERNAME and MBYN_KAFKA_PASSWORD"):
        client_config(secured)
    authed = secured.model_copy(update={"kafka_username": "payments", "kafka_password": SecretStr("pw")})
    assert client_config(authed) == {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_PLAINTEXT",
                                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "payments",
                                     "sasl.password": "pw"}  # pragma: allowlist secret
    assert "pw" not in repr(authed)  # SecretStr: never printed with the settings


def test_airflow_connection_carries_sasl_when_secured(tmp_path: Path) -> None:
    from mbyn.orchestration.connections import kafka_extra

    base = load_settings(var_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    assert "sasl.username" not in kafka_extra(base)
    secured = base.model_copy(update={"security": "scram", "kafka_username": "airflow",
                                      "kafka_password": SecretStr("pw")})
    extra = kafka_extra(secured)
    assert extra["security.protocol"] == "SASL_PLAINTEXT" and extra["sasl.username"] == "airflow"
    assert extra["group.id"] == "mbyn-airflow-batch"


def test_local_store_has_one_private_password_per_principal_and_is_stable(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path, security="scram")
    with pytest.raises(ConfigError, match="kafka up --security scram"):
        local_credentials(settings)
    first = local_credentials(settings, create=True)
    store = tmp_path / "kafka" / "scram-credentials.json"
    assert store.stat().st_mode & 0o777 == 0o600
    assert set(first) == set(principals()) and len(set(first.values())) == len(first)
    assert local_credentials(settings, create=True) == first == json.loads(store.read_text())


def test_supervisor_gives_each_worker_its_own_principal(tmp_path: Path) -> None:
    from mbyn.local.supervisor import Supervisor

    settings = load_settings(var_dir=tmp_path, security="scram")
    store = local_credentials(settings, create=True)
    supervisor = Supervisor(settings, {"produce:payments": 1, "consume:warehouse-loader": 1})
    envs = {c.worker: supervisor._env(c) for c in supervisor.copies}
    assert envs["produce:payments"]["MBYN_KAFKA_USERNAME"] == "payments"
    assert envs["produce:payments"]["MBYN_KAFKA_PASSWORD"] == store["payments"]
    assert envs["consume:warehouse-loader"]["MBYN_KAFKA_USERNAME"] == "warehouse-loader"


def test_broker_settings_open_unchanged_secured_with_authorizer() -> None:
    nodes = [Node(i, 9000 + i, 19000 + i, Path(f"/x/node-{i}")) for i in (1, 2, 3)]
    plain = server_properties(nodes[0], nodes)
    assert "listeners=PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:19001\n" in plain
    assert "sasl" not in plain and "authorizer" not in plain
    secured = dict(line.split("=", 1) for line in server_properties(nodes[0], nodes, "pw").splitlines())
    assert secured["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:19001"
    assert secured["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert secured["allow.everyone.if.no.acl.found"] == "false" and secured["super.users"] == "User:admin"
    assert secured["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert format_arguments({"a": "x", "admin": "y"}) == ["--add-scram", "SCRAM-SHA-512=[name=a,password=x]",
                                                         "--add-scram", "SCRAM-SHA-512=[name=admin,password=y]"]



def test_storage_format_keeps_the_scram_passwords_off_the_command_line(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Formatting a secured cluster bootstraps every principal's password (the super user's too): any local user
    reads a process's arguments (`ps`), so they go through a 0600 java @argfile that is gone afterwards."""
    from mbyn.local import kafka as cluster

    settings = load_settings(var_dir=tmp_path / "var", security="scram")
    plan = cluster.plan_nodes(settings, 1)
    cluster.cluster_home(settings, 1).mkdir(parents=True)
    (cluster.cluster_home(settings, 1) / "cluster-id").write_text("MkU3OEVBNTcwNTJENDM2Qk")
    seen: list[tuple[list[str], dict[str, tuple[str, int]]]] = []

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        files = {a: (Path(a[1:]).read_text(), Path(a[1:]).stat().st_mode & 0o777) for a in cmd if a.startswith("@")}
        seen.append((cmd, files))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(cluster.subprocess, "run", run)
    cluster.format_storage(settings, plan, 1, {"admin": "Admin-Pw-1", "viewer": "Viewer-Pw-2"})
    [(cmd, files)] = seen
    assert not [a for a in cmd if "Pw-" in a], cmd
    [(argfile, (text, mode))] = files.items()
    assert mode == 0o600 and '"SCRAM-SHA-512=[name=admin,password=Admin-Pw-1]"' in text
    assert text.splitlines()[:2] == ['"kafka.tools.StorageTool"', '"format"']  # @files expand only before the class
    assert not Path(argfile[1:]).exists()  # removed after the format


def test_the_acl_table_in_the_docs_is_the_generated_one() -> None:
    from mbyn.kafka.security import acl_table
    from mbyn.settings import PROJECT_ROOT

    docs = (PROJECT_ROOT / "docs" / "RELIABILITY.md").read_text()
    assert acl_table(acl_plan()) in docs, "docs/RELIABILITY.md 'Secured mode': regenerate the ACL table"
