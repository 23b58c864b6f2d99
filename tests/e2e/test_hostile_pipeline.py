"""End to end: hostile records sent with kcat to a running pipeline — on SQLite and on PostgreSQL.

Every Python consumer group runs as its own ``mbyn consume <name>`` process (warehouse-loader,
order-enricher, sales-aggregator, fraud-detector, lake-archiver, dead-letters, lag-monitor), as ``mbyn run``
starts them. Then **kcat** — an independent client, nothing of mbyn's validation in the way — writes to
every raw topic the records of ``tests/integration/test_bad_input.py`` plus more hostile kinds (byte-order
mark, NaN/Infinity, nesting past the limit, numbers past float64 and past 4300 digits, lone surrogates, raw
control characters, U+0000, trailing bytes, duplicate keys, an over-long multi-byte string, a pattern with
a trailing newline, impossible and non-UTC times, JSON null and strings, booleans as versions — 30+ kinds),
interleaved with valid records, and writes hand-made records to ``dead-letters`` itself (no headers,
garbage headers, out-of-range coordinates).

Checks: no worker exits while the records flow (zero restarts; each stops with status 0 on SIGTERM); each
hostile record is quarantined exactly once per consumer group that reads its topic, with its reason; each
record sent to ``dead-letters`` is one quarantine row; every valid record is a warehouse row; and
``mbyn status --json`` answers with JSON (no traceback) while the pipeline runs.

The Java payments service and the Go shipment tracker are not started here: they do not dead-letter yet
(their codec work is in progress), so hostile ``orders``/``payments`` records would be skipped silently.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import encode
from mbyn.settings import Settings, load_settings
from tests.integration.test_bad_input import (
    KCAT,
    RAW_TOPICS,
    TABLES,
    Sent,
    kcat_produce,
    mbyn,
    records_for,
    valid_envelope,
)
from tests.plugins.postgres import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Consumer group → extra arguments (short fx waits: the test sends the rates first).
CONSUMERS: dict[str, list[str]] = {
    "warehouse-loader": [], "dead-letters": [], "lake-archiver": [], "lag-monitor": ["--interval", "2"],
    "order-enricher": ["--instance-id", "a", "--fx-wait", "5"], "sales-aggregator": ["--fx-wait", "5"],
    "fraud-detector": [],
}


def readers() -> dict[str, list[str]]:
    """Raw topic → the consumer groups started here that subscribe to it (each dead-letters what it cannot read)."""
    from mbyn.consumers.fraud_detector import FraudDetector
    from mbyn.consumers.lake_archiver import LakeArchiver
    from mbyn.consumers.order_enricher import OrderEnricher
    from mbyn.consumers.sales_aggregator import SalesAggregator
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    out: dict[str, list[str]] = {t: [] for t in RAW_TOPICS}
    for consumer in (WarehouseLoader, LakeArchiver, OrderEnricher, SalesAggregator, FraudDetector):
        for topic in consumer.topics:
            if topic in out:
                out[topic].append(consumer.name)
    return out


# The corpus ------------------------------------------------------------------------------------------------

def more_hostile(topic: str, tag: str) -> list[Sent]:
    """Hostile kinds beyond test_bad_input's, for one raw topic (none contains kcat's separators 0x1e / 0x1f)."""
    _, env = valid_envelope(topic, 2, tag)
    good = encode(env)
    out: list[Sent] = []

    def bad(label: str, value: bytes, reason: str) -> None:
        out.append(Sent(topic, label, f"hostile-{label}".encode(), value, reason))

    def changed(**fields: Any) -> bytes:
        return encode({**env, **fields})

    bad("byte_order_mark", b"\xef\xbb\xbf" + good, "not_json")
    bad("nan", good.replace(b'"schema_version":1', b'"schema_version":NaN'), "not_json")
    bad("infinity", good.replace(b'"schema_version":1', b'"schema_version":-Infinity'), "not_json")
    bad("deep_nesting", b"[" * 600 + b"]" * 600, "not_json")
    bad("number_beyond_float64", good.replace(b'"schema_version":1', b'"schema_version":1e400'), "not_json")
    bad("integer_of_5000_digits", good.replace(b'"schema_version":1', b'"schema_version":' + b"9" * 5000),
        "not_json")
    bad("lone_surrogate", good.replace(b'"source":"kcat"', b'"source":"\\ud800"'), "not_json")
    bad("raw_control_character", good.replace(b'"source":"kcat"', b'"source":"k\x01cat"'), "not_json")
    bad("trailing_bytes", good + b" {}", "not_json")
    bad("json_null", b"null", "schema_violation")
    bad("json_string", b'"an envelope"', "schema_violation")
    bad("nul_in_a_string", changed(source="k\x00cat"), "schema_violation")
    bad("duplicate_key_last_wins", good[:-1] + b',"schema_version":2}', "unknown_schema_version")
    bad("boolean_version", changed(schema_version=True), "unknown_schema_version")
    bad("missing_version", encode({k: v for k, v in env.items() if k != "schema_version"}),
        "unknown_schema_version")
    bad("pattern_with_trailing_newline", changed(event_id=env["event_id"] + "\n"), "schema_violation")
    bad("over_long_multibyte_string", changed(source="€" * 65), "schema_violation")
    bad("hour_24", changed(event_time="2026-11-25T24:00:00Z"), "schema_violation")
    bad("no_utc_form", changed(event_time="0001-01-01T00:00:00+01:00"), "schema_violation")
    return out


def dead_letter_runs() -> list[tuple[list[str], list[Sent]]]:
    """Hand-made records for ``dead-letters`` itself: (kcat -H headers, records) per kcat run."""
    def letters(label: str, values: list[bytes]) -> list[Sent]:
        return [Sent("dead-letters", f"{label}-{i}", f"{label}-{i}".encode(), v, "any") for i, v in enumerate(values)]

    return [
        ([], letters("no_headers", [b"\xff\xfe\x00garbage", b"[" * 600, b"{}", b"not json at all"])),
        (["dlq.reason=" + "x" * 300, "dlq.partition=-1", "dlq.offset=99999999999999999999999", "dlq.topic=",
          "dlq.timestamp=NaN"], letters("garbage_headers", [b"one", b"two"])),
        ([f"dlq.topic=elsewhere-{uuid.uuid4().hex[:6]}", "dlq.partition=0", "dlq.offset=1",
          "dlq.consumer_group=a-stranger", "dlq.reason=hand_written"], letters("coordinates", [b"only once"])),
    ]


def kcat_with_headers(bootstrap: str, physical: str, header_args: list[str],
                      records: list[Sent]) -> subprocess.CompletedProcess[bytes]:
    """``kcat_produce`` with ``-H name=value`` headers on every record of the run."""
    assert KCAT is not None
    data = b"".join((r.key or b"") + b"\x1f" + (r.value or b"") + b"\x1e" for r in records)
    flags = [arg for header in header_args for arg in ("-H", header)]
    return subprocess.run([KCAT, "-P", "-b", bootstrap, "-t", physical, "-K", r"\x1f", "-D", r"\x1e", "-Z",
                           *flags], input=data, capture_output=True, timeout=60, check=False)


# The pipeline ----------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    settings: Settings
    sent: list[Sent]
    letters: list[Sent]
    exits: dict[str, int | None]
    codes: dict[str, int]
    status: subprocess.CompletedProcess[str]
    logs: Path

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.settings.warehouse())
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        finally:
            engine.dispose()

    def log_tail(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}"
                         for path in sorted(self.logs.glob("*.log")))


def expected_quarantine(sent: list[Sent], letters: list[Sent]) -> int:
    groups = readers()
    return sum(len(groups[s.topic]) for s in sent if s.reason) + len(letters)


def run_pipeline(bootstrap: str, var: Path, warehouse_url: str) -> Outcome:
    from mbyn.kafka.admin import apply_topics

    prefix = f"h{uuid.uuid4().hex[:10]}-"
    env = {**os.environ, "MBYN_BOOTSTRAP_SERVERS": bootstrap, "MBYN_TOPIC_PREFIX": prefix, "MBYN_VAR_DIR": str(var),
           "MBYN_WAREHOUSE_URL": warehouse_url, "MBYN_CONSUMER_SESSION_TIMEOUT_S": "6", "PYTHONUNBUFFERED": "1"}
    settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, var_dir=var, warehouse_url=warehouse_url)
    apply_topics(settings)
    rng = random.Random(12)
    corpus = {t: records_for(t, prefix, rng) + more_hostile(t, prefix) for t in RAW_TOPICS}
    # The rates first, so the enricher and the aggregator have them (EUR needs none; the valid orders are EUR).
    rates = corpus.pop("fx-rates")
    assert kcat_produce(bootstrap, prefix + "fx-rates", rates).returncode == 0
    logs = var / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    letters: list[Sent] = []
    with ExitStack() as stack:
        for name, args in CONSUMERS.items():
            out = stack.enter_context(open(logs / f"{name}.log", "wb"))
            procs[name] = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "consume", name, *args], env=env,
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for topic, records in corpus.items():
                result = kcat_produce(bootstrap, prefix + topic, records)
                assert result.returncode == 0, f"kcat on {topic}: {result.stderr.decode(errors='replace')[-2000:]}"
            for header_args, records in dead_letter_runs():
                result = kcat_with_headers(bootstrap, prefix + "dead-letters", header_args, records)
                assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
                letters += records
            sent = [s for records in corpus.values() for s in records] + rates
            _wait_for(settings, expected_quarantine(sent, letters), sent, procs)
            status = mbyn(env, "status", "--json", timeout=120)
            exits = {name: proc.poll() for name, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            codes = {}
            for name, proc in procs.items():
                try:
                    codes[name] = proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    codes[name] = proc.wait(10)
    return Outcome(settings, sent, letters, exits, codes, status, logs)


def _wait_for(settings: Settings, quarantined: int, sent: list[Sent], procs: dict[str, subprocess.Popen[bytes]],
              timeout: float = 150) -> None:
    """Until the quarantine holds ``quarantined`` rows and every valid record is a row (or a worker died)."""
    engine = sa.create_engine(settings.warehouse())
    wanted = {TABLES[s.topic]: set() for s in sent}  # type: dict[str, set[str]]
    for s in sent:
        if s.reason is None and s.event_id:
            wanted[TABLES[s.topic]].add(str(s.event_id))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs.values()):
            try:
                with engine.connect() as conn:
                    rows = conn.execute(sa.text("SELECT count(*) FROM quarantine")).scalar_one()
                    loaded = all(wanted[t] <= {r[0] for r in conn.execute(sa.text(f"SELECT event_id FROM {t}"))}
                                 for t in wanted)
            except sa.exc.SQLAlchemyError:  # tables not created yet
                rows, loaded = -1, False
            if rows >= quarantined and loaded:
                time.sleep(2)  # a few more seconds: a second quarantine of the same record would show now
                return
            time.sleep(1)
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def outcome(request: pytest.FixtureRequest, kafka_bootstrap: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    if KCAT is None:
        pytest.fail("kcat is required (make system-deps installs it)")
    with ExitStack() as stack:
        var = tmp_path_factory.mktemp("hostile") / "var"
        if request.param == "postgres":
            url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_server")))
        else:
            url = f"sqlite:///{var / 'warehouse.db'}"
        yield run_pipeline(kafka_bootstrap, var, url)


# Tests -----------------------------------------------------------------------------------------------------

def test_no_worker_exits_and_each_stops_cleanly(outcome: Outcome) -> None:
    assert all(code is None for code in outcome.exits.values()), f"exited: {outcome.exits}\n{outcome.log_tail()}"
    assert all(code == 0 for code in outcome.codes.values()), f"exit codes {outcome.codes}\n{outcome.log_tail()}"


def test_there_are_at_least_25_kinds_of_hostile_records(outcome: Outcome) -> None:
    kinds = {s.label for s in outcome.sent if s.reason}
    assert len(kinds) >= 25, sorted(kinds)
    assert {s.topic for s in outcome.sent if s.reason} == set(RAW_TOPICS)


@pytest.mark.parametrize("topic", RAW_TOPICS)
def test_each_hostile_record_is_quarantined_once_per_group_with_its_reason(outcome: Outcome, topic: str) -> None:
    prefix = outcome.settings.topic_prefix
    expected = Counter((s.key, s.value, s.reason) for s in outcome.sent if s.topic == topic and s.reason)
    labels = {(s.key, s.value): s.label for s in outcome.sent if s.topic == topic}
    for group in readers()[topic]:
        rows = outcome.query('SELECT "key", value, reason FROM quarantine WHERE topic = :t AND consumer_group = :g',
                             t=prefix + topic, g=prefix + group)
        got = Counter((r.key, None if r.value is None else bytes(r.value), r.reason) for r in rows)
        missing = {labels[(k, v)]: reason for (k, v, reason) in expected - got}
        extra = [(labels.get((k, v), "?"), reason) for (k, v, reason) in got - expected]
        assert not missing and not extra, f"{group} on {topic}: missing {missing}; unexpected {extra}"


def test_each_record_sent_to_dead_letters_is_one_quarantine_row(outcome: Outcome) -> None:
    hand_made = {s.key for s in outcome.letters}
    rows = [r for r in outcome.query('SELECT "key", value, reason FROM quarantine') if r.key is not None
            and bytes(r.key) in hand_made]
    assert Counter((bytes(r.key), bytes(r.value)) for r in rows) == Counter((s.key, s.value) for s in outcome.letters)
    by_key = {bytes(r.key): r.reason for r in rows}
    assert by_key[b"no_headers-0"] == "unknown"
    assert by_key[b"coordinates-0"] == "hand_written"
    assert len(by_key[b"garbage_headers-0"]) <= 64


@pytest.mark.parametrize("topic", RAW_TOPICS)
def test_every_valid_record_is_loaded(outcome: Outcome, topic: str) -> None:
    valid = {str(s.event_id) for s in outcome.sent if s.topic == topic and s.reason is None}
    rows = {r[0] for r in outcome.query(f"SELECT event_id FROM {TABLES[topic]}")}
    assert valid <= rows, f"{topic}: not loaded {valid - rows}"


def test_status_answers_while_the_pipeline_runs(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.status.stderr, outcome.status.stderr[-3000:]
    assert outcome.status.returncode in (0, 1), (outcome.status.returncode, outcome.status.stderr[-3000:])
    doc = json.loads(outcome.status.stdout)
    assert set(RAW_TOPICS) <= set(doc["reconciliation"]["topics"])


def test_the_catalog_still_names_the_topics_this_test_feeds() -> None:
    assert set(RAW_TOPICS) <= set(load_catalog().topics)
