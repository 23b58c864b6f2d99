"""The one contract test: every producer, in every language, writes what the catalog says.

Runs all six producers through `mbyn produce <name>` (Python generator, FX poller against the recorded
API served over HTTP, customers DB snapshot, inventory file drop, the Java payments service, the Go
shipment tracker), then reads every raw topic back with an independent consumer and validates each record
against the catalog's JSON Schema, key field and headers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import validate
from mbyn.sources.inventory_drop import write_demo_file
from mbyn.workers import RAW_TOPICS
from tests.helpers.kafka import read_all
from tests.helpers.processes import reaped, stop

pytestmark = pytest.mark.integration

SOURCES = {"clickstream": "clickstream-generator", "orders": "clickstream-generator", "payments": "payments-service",
           "shipments": "shipment-tracker"}


def _produce(*args: str, timeout: float = 300) -> dict:
    done = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"mbyn produce {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_producer_writes_the_catalog_contract(topics):
    _produce("clickstream", "--count", "1500", "--seed", "11")
    _produce("fx-rates", "--replay")
    _produce("customers")
    demo = write_demo_file(topics, rows=25)
    os.utime(demo, (time.time() - 600, time.time() - 600))
    _produce("inventory")
    _produce("payments", "--idle-exit", "3")
    _produce("shipments", "--stage-delay", "0", "--duration", "15")

    catalog = load_catalog()
    for name in RAW_TOPICS:
        topic = catalog.get(name)
        records = read_all(topics.bootstrap(), topic.physical, timeout=60)
        assert records, f"nothing on {name}"
        for record in records:
            if record.value is None:
                assert topic.compacted, f"tombstone on non-compacted {name}"
                continue
            envelope = record.json()
            validate(name, envelope)
            assert record.key is not None and record.key.decode() == str(envelope["payload"][topic.key]), name
            assert record.headers.get("trace_id"), f"{name}: no trace_id header"
            if name in SOURCES:
                assert record.headers["source"].decode() == SOURCES[name]
            else:
                assert record.headers.get("source"), f"{name}: no source header"


def test_generator_sigterm_flushes_and_loses_nothing(topics):
    proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "produce", "clickstream", "--rate", "400",
                             "--seed", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        time.sleep(8)
        out, err = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_by"] == "SIGTERM" and summary["delivered"] == summary["sent"] > 0
    on_wire = sum(len(read_all(topics.bootstrap(), topics.topic_prefix + t)) for t in ("clickstream", "orders"))
    assert on_wire == summary["delivered"]
