"""An independent client (kcat, librdkafka's CLI from Debian) and mbyn agree on what is on the wire."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import text

from mbyn.contracts.envelope import encode, make_envelope, validate
from mbyn.warehouse.engine import warehouse_engine

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat")  # a missing kcat fails the tests (make installs it), never skips them


def test_kcat_writes_mbyn_loads(topics):
    assert KCAT is not None, "kcat is not installed: `make system-deps` installs it (Debian package kcat)"
    order = make_envelope("order_placed", {
        "order_id": "O-kcat-1", "customer_id": "C000001", "session_id": "s-kcat", "country": "DE",
        "currency": "EUR", "amount": 12.5,
        "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": 12.5}]}, "kcat")
    subprocess.run([KCAT, "-P", "-b", topics.bootstrap(), "-t", topics.topic_prefix + "orders", "-K", "\t",
                    "-H", "source=kcat"], input=b"O-kcat-1\t" + encode(order) + b"\n", check=True, timeout=60)
    loaded = subprocess.run([sys.executable, "-m", "mbyn.cli", "consume", "warehouse-loader", "--idle-exit", "4"],
                            capture_output=True, text=True, timeout=180, check=False)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    with warehouse_engine(topics).connect() as conn:
        row = conn.execute(text("SELECT order_id, amount FROM orders WHERE event_id = :e"),
                           {"e": order["event_id"]}).one()
    assert row.order_id == "O-kcat-1" and float(row.amount) == 12.5


def test_mbyn_writes_kcat_reads(topics):
    assert KCAT is not None, "kcat is not installed: `make system-deps` installs it (Debian package kcat)"
    produced = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "clickstream", "--count", "300",
                               "--seed", "5"], capture_output=True, text=True, timeout=120, check=False)
    assert produced.returncode == 0, produced.stderr[-2000:]
    summary = json.loads(produced.stdout.strip().splitlines()[-1])
    lines = []
    for topic in ("clickstream", "orders"):
        out = subprocess.run([KCAT, "-C", "-b", topics.bootstrap(), "-t", topics.topic_prefix + topic, "-e",
                              "-q", "-f", "%k\t%h\t%s\n"], capture_output=True, check=True, timeout=60)
        lines += [(topic, line) for line in out.stdout.decode().splitlines() if line]
    assert len(lines) == summary["delivered"] == 300
    for topic, line in lines:
        key, headers, value = line.split("\t", 2)
        envelope = json.loads(value)
        validate(topic, envelope)
        assert "source=clickstream-generator" in headers
        assert key == envelope["payload"]["session_id" if topic == "clickstream" else "order_id"]
