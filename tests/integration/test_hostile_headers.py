"""Records whose header *names* are not UTF-8, written with kcat: every reader survives them.

confluent-kafka leaves a decode error pending and hands back a list with a NULL slot for such a header
(``mbyn.kafka.consumer.message_headers`` explains); touching it crashes the interpreter. Each reader runs in
its own process here, so a crash is an exit code, not a lost test session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.contracts.envelope import encode, make_envelope
from mbyn.settings import Settings

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat")
BAD_NAME = b"\xff\xfename=v"


def order(n: int) -> tuple[bytes, bytes]:
    payload = {"order_id": f"O-H{n:04d}", "customer_id": "C000001", "session_id": "s1", "country": "DE",
               "currency": "EUR", "amount": 10.0,
               "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": 10.0}]}
    return payload["order_id"].encode(), encode(make_envelope("order_placed", payload, "kcat"))


def kcat(settings: Settings, topic: str, key: bytes, value: bytes, *headers: bytes) -> None:
    assert KCAT is not None, "kcat is required (make system-deps installs it)"
    args: list[str | bytes] = [KCAT, "-P", "-b", settings.bootstrap(), "-t", settings.topic_prefix + topic,
                               "-k", key]
    for header in headers:
        args += ["-H", header]
    result = subprocess.run(args, input=value, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def mbyn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], capture_output=True, text=True, timeout=300,
                          check=False, env=os.environ.copy())


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_header_names_that_are_not_utf8_crash_no_reader(topics: Settings) -> None:
    good_key, good_value = order(1)
    kcat(topics, "orders", good_key, good_value, BAD_NAME, b"trace=t-1")  # valid, with a hostile header name
    kcat(topics, "orders", b"O-H0002", b"not json at all", BAD_NAME)  # dead-lettered: its headers are read
    plain_key, plain_value = order(3)
    kcat(topics, "orders", plain_key, plain_value, b"trace=t-3")

    loader = summary(mbyn("consume", "warehouse-loader", "--idle-exit", "5"))
    assert loader["processed"] == 2 and loader["dead_letter_reasons"] == {"not_json": 1}
    archiver = summary(mbyn("consume", "lake-archiver", "--idle-exit", "5"))  # reads every record's headers
    assert archiver["rows"] == 2 and archiver["dead_letter_reasons"] == {"not_json": 1}
    letters = summary(mbyn("consume", "dead-letters", "--idle-exit", "5"))
    assert letters["processed"] >= 1

    engine = sa.create_engine(topics.warehouse())
    try:
        with engine.connect() as conn:
            orders = set(conn.execute(sa.text("SELECT order_id FROM orders")).scalars())
            quarantined = list(conn.execute(sa.text("SELECT reason, headers, consumer_group FROM quarantine")))
    finally:
        engine.dispose()
    assert orders == {"O-H0001", "O-H0003"}
    assert sorted((row.consumer_group, row.reason) for row in quarantined) == [
        (topics.topic_prefix + "lake-archiver", "not_json"), (topics.topic_prefix + "warehouse-loader", "not_json")]
    assert all(json.loads(row.headers) == [] for row in quarantined), "unreadable headers are dropped, not half-read"

    status = mbyn("status", "--json")
    assert status.returncode in (0, 4, 5), status.stderr[-3000:]
    assert json.loads(status.stdout)["reconciliation"]["topics"]["orders"]["quarantined"] == 1

    view = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json
        from mbyn.pipeline_view import browse
        from mbyn.settings import get_settings
        shown = browse.messages(get_settings(), "orders", limit=10)
        print(json.dumps(len(shown["messages"])))
        """)], capture_output=True, text=True, timeout=120, check=False, env=os.environ.copy())
    assert view.returncode == 0, view.stderr[-3000:]
    assert json.loads(view.stdout.strip().splitlines()[-1]) == 3
