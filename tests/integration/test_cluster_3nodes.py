"""`mbyn kafka up --nodes 3`: a real KRaft quorum survives SIGKILL of one node with no acknowledged record lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mbyn.kafka.admin import apply_topics
from mbyn.kafka.clients import admin_client
from mbyn.settings import PROJECT_ROOT, load_settings
from tests.conftest import free_port_block
from tests.helpers.kafka import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _mbyn(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_three_nodes_survive_sigkill_of_one(tmp_path: Path) -> None:
    env = {**os.environ, "MBYN_VAR_DIR": str(tmp_path / "var"), "MBYN_KAFKA_PORT": str(free_port_block(3)),
           "MBYN_KAFKA_CONTROLLER_PORT": str(free_port_block(3)), "MBYN_KAFKA_HEAP": "384m",
           "MBYN_KAFKA_LIB_DIR": str(PROJECT_ROOT / "var" / "kafka" / "lib"), "MBYN_TOPIC_PREFIX": "ha-"}
    env.pop("MBYN_BOOTSTRAP_SERVERS", None)
    from mbyn.local import kafka as cluster

    settings = load_settings(var_dir=tmp_path / "var", kafka_port=int(env["MBYN_KAFKA_PORT"]),
                             kafka_controller_port=int(env["MBYN_KAFKA_CONTROLLER_PORT"]), kafka_heap="384m",
                             kafka_lib_dir=PROJECT_ROOT / "var" / "kafka" / "lib", topic_prefix="ha-")
    # In-process (tied to this test process) so that even a killed test run leaves no broker behind;
    # `mbyn kafka status/down` below still exercise the CLI against the recorded cluster.
    state = cluster.up(settings, nodes=3, die_with_parent=True)
    bootstrap = state.bootstrap_servers
    assert len(bootstrap.split(",")) == 3
    settings = load_settings(var_dir=tmp_path / "var", bootstrap_servers=bootstrap, topic_prefix="ha-")
    try:
        status = json.loads(_mbyn(env, "kafka", "status", "--json").stdout)
        assert [n["ready"] for n in status["nodes"]] == [True, True, True]

        apply_topics(settings, names=["orders"])
        meta = admin_client(settings).list_topics("ha-orders", timeout=10).topics["ha-orders"]
        assert all(len(p.replicas) == 3 for p in meta.partitions.values())
        # min.insync.replicas=2 on the topic: acks=all survives one node down
        from confluent_kafka.admin import ConfigResource

        resource = ConfigResource(ConfigResource.Type.TOPIC, "ha-orders")
        admin = admin_client(settings)  # keep a reference: a collected client cancels its futures
        configs = admin.describe_configs([resource])[resource].result()
        assert configs["min.insync.replicas"].value == "2"

        acked: list[str] = []
        errors: list[str] = []
        stop = threading.Event()

        def produce() -> None:
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                 "linger.ms": 5, "message.timeout.ms": 60000})

            def on_delivery(err, msg):  # type: ignore[no-untyped-def]
                if err is None:
                    acked.append(msg.value().decode())
                else:
                    errors.append(err.str())

            i = 0
            while not stop.is_set():
                producer.produce("ha-orders", key=str(i).encode(), value=f"record-{i}".encode(),
                                 on_delivery=on_delivery)
                producer.poll(0)
                i += 1
                if i % 200 == 0:
                    time.sleep(0.02)
            assert producer.flush(90) == 0

        writer = threading.Thread(target=produce)
        writer.start()
        deadline = time.monotonic() + 30
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(acked) >= 2000, errors[:3]
        victim = status["nodes"][1]["pid"]
        os.killpg(victim, signal.SIGKILL)
        before_kill = len(acked)
        time.sleep(8)
        stop.set()
        writer.join(120)
        assert len(acked) > before_kill, f"no record acknowledged after the kill: {errors[:3]}"

        got = read_all(bootstrap, "ha-orders", timeout=60)
        values = {r.value.decode() for r in got if r.value is not None}
        missing = set(acked) - values
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    finally:
        down = _mbyn(env, "kafka", "down", timeout=120)
        assert down.returncode == 0, down.stderr
