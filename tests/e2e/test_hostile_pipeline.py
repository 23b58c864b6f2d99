"""End to end: hostile records sent with kcat to a running pipeline — on SQLite and on PostgreSQL.

Every worker that reads a raw topic runs as its own process, as ``mbyn run`` starts it: the seven Python
consumer groups as ``mbyn consume <name>`` (warehouse-loader, order-enricher, sales-aggregator, fraud-detector,
lake-archiver, dead-letters, lag-monitor), the Java payments service as ``mbyn produce payments`` (group
``payments-service``: orders → payments) and the Go shipment tracker as ``mbyn produce shipments`` with the
supervisor's arguments (group ``shipment-tracker``: payments → shipments). Then **kcat** — an independent
client, nothing of mbyn's validation in the way — writes to every raw topic the records of
``tests/integration/test_bad_input.py`` plus more hostile kinds (byte-order mark, NaN/Infinity, nesting past
the limit, numbers past float64 and past 4300 digits, lone surrogates, raw control characters, U+0000,
trailing bytes, duplicate keys, an over-long multi-byte string, a pattern with a trailing newline, impossible
and non-UTC times, JSON null and strings, booleans as versions — 30+ kinds), interleaved with valid records;
one valid and one hostile record per raw topic with a header whose *name* is not UTF-8; and hand-made records
to ``dead-letters`` itself (no headers, garbage headers, out-of-range coordinates).

Checks: no worker exits while the records flow (zero restarts; each stops with status 0 on SIGTERM — the two
services first, then the consumers); each hostile record is quarantined exactly once per consumer group that
reads its topic — the Java and Go groups included — with its reason; each record sent to ``dead-letters`` is
one quarantine row; the services turn the valid orders into payments and the valid authorized payments into
four shipment stages, and write nothing the codec refuses; every valid record — sent with kcat or written by
the services (read back from the topic after they stopped) — is a warehouse row; and ``mbyn status --json``
answers with JSON (no traceback) while the whole pipeline runs.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from mbyn.catalog import load_catalog
from mbyn.contracts.codec import verdict
from mbyn.contracts.envelope import encode, validate
from mbyn.settings import Settings, get_settings, load_settings
from mbyn.workers import WORKERS
from tests.integration.test_bad_input import (
    KCAT,
    RAW_TOPICS,
    TABLES,
    Sent,
    kcat_produce,
    mbyn,
    query,
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


@dataclass(frozen=True)
class Service:
    """A producer in another language that reads a raw topic: ``mbyn produce <worker>``."""

    worker: str
    group: str  # its consumer group, without the topic prefix
    reads: str
    writes: str


SERVICES = (Service("payments", "payments-service", "orders", "payments"),
            Service("shipments", "shipment-tracker", "payments", "shipments"))
STAGES = ("created", "picked", "in_transit", "delivered")
#: A header whose name is not UTF-8 (kcat passes the bytes as they are).
BAD_HEADER_NAME = b"\xff\xfename=v"
#: A condition on the warehouse that the test waits for.
Check = Callable[[sa.Connection], bool]


def readers() -> dict[str, list[str]]:
    """Raw topic → the consumer groups started here that read it (each dead-letters what it cannot read)."""
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
    for service in SERVICES:
        out[service.reads].append(service.group)
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


def bad_header_name_records(topic: str, tag: str) -> list[Sent]:
    """One valid and one hostile record for ``topic``, to be sent with a header whose name is not UTF-8."""
    key, env = valid_envelope(topic, 1 if topic == "fx-rates" else 4, tag)
    if topic == "fx-rates":  # valid_envelope knows three currencies, all taken: a rate of another day
        env = {**env, "payload": {**env["payload"], "rate_date": "2026-11-23"}}
        validate(topic, env)
    return [Sent(topic, "valid_bad_header_name", key.encode(), encode(env), None, env["event_id"]),
            Sent(topic, "bad_header_name", b"hostile-bad_header_name", encode({**env, "payload": "not an object"}),
                 "schema_violation")]


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


def kcat_with_headers(bootstrap: str, physical: str, header_args: Sequence[str | bytes],
                      records: list[Sent]) -> subprocess.CompletedProcess[bytes]:
    """``kcat_produce`` with ``-H name=value`` headers (text or raw bytes) on every record of the run."""
    assert KCAT is not None
    data = b"".join((r.key or b"") + b"\x1f" + (r.value or b"") + b"\x1e" for r in records)
    flags = [arg for header in header_args for arg in ("-H", header)]
    return subprocess.run([KCAT, "-P", "-b", bootstrap, "-t", physical, "-K", r"\x1f", "-D", r"\x1e", "-Z",
                           *flags], input=data, capture_output=True, timeout=60, check=False)


def read_topic(bootstrap: str, physical: str, timeout: float = 60) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record on a physical topic up to its end offsets now.

    Headers are never read: confluent-kafka's ``Message.headers()`` breaks on a name that is not UTF-8.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hostile-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(physical, timeout=10).topics[physical].partitions
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(physical, p, low))
        consumer.assign(starts)
        out: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), msg.value()))
            for tp in consumer.position([TopicPartition(physical, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        assert not ends, f"{physical}: partitions {sorted(ends)} not read to their end within {timeout}s"
        return out
    finally:
        consumer.close()


def payload_of(value: bytes | None) -> dict[str, Any]:
    """The envelope's payload (the value must be an envelope)."""
    return json.loads(value or b"null")["payload"]  # type: ignore[no-any-return]


def event_id_of(value: bytes | None) -> str | None:
    """The record's event id; None when it has none (which no table holds)."""
    try:
        return str(json.loads(value or b"null")["event_id"])
    except (ValueError, TypeError, KeyError):
        return None


# The pipeline ----------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    settings: Settings
    sent: list[Sent]
    letters: list[Sent]
    #: Written topic → (key, value) of every record a service wrote to it (what kcat did not send).
    produced: dict[str, list[tuple[bytes | None, bytes | None]]]
    exits: dict[str, int | None]
    codes: dict[str, int]
    status: subprocess.CompletedProcess[str]
    logs: Path

    def query(self, sql: str, **params: Any) -> list[Any]:
        return query(self.settings, sql, **params)

    def log_tail(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}"
                         for path in sorted(self.logs.glob("*.log")))


def expected_quarantine(sent: list[Sent], letters: list[Sent]) -> int:
    groups = readers()
    return sum(len(groups[s.topic]) for s in sent if s.reason) + len(letters)


def valid_order_ids(sent: list[Sent], topic: str, status: str | None = None) -> set[str]:
    """Order ids of the valid ``topic`` records sent (payments: only those with ``status``)."""
    return {payload_of(s.value)["order_id"] for s in sent if s.topic == topic and s.reason is None
            and (status is None or payload_of(s.value)["status"] == status)}


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """``mbyn <argv>`` in its own process group (as the supervisor starts a copy), output in ``<name>.log``."""
    with open(logs / f"{name}.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mbyn.cli", *argv], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    """SIGTERM each process group, wait for the exit codes (SIGKILL after 60 s)."""
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
    return codes


def run_pipeline(bootstrap: str, var: Path, warehouse_url: str) -> Outcome:
    from mbyn.kafka.admin import apply_topics

    prefix = f"h{uuid.uuid4().hex[:10]}-"
    env = {**os.environ, "MBYN_BOOTSTRAP_SERVERS": bootstrap, "MBYN_TOPIC_PREFIX": prefix, "MBYN_VAR_DIR": str(var),
           "MBYN_WAREHOUSE_URL": warehouse_url, "MBYN_CONSUMER_SESSION_TIMEOUT_S": "6", "PYTHONUNBUFFERED": "1"}
    settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix, var_dir=var, warehouse_url=warehouse_url)
    apply_topics(settings)
    rng = random.Random(12)
    corpus = {t: records_for(t, prefix, rng) + more_hostile(t, prefix) for t in RAW_TOPICS}
    headed = {t: bad_header_name_records(t, prefix) for t in RAW_TOPICS}
    # The rates first, so the enricher and the aggregator have them (EUR needs none; the valid orders are EUR).
    rates = corpus.pop("fx-rates")
    assert kcat_produce(bootstrap, prefix + "fx-rates", rates).returncode == 0
    logs = var / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    letters: list[Sent] = []
    sent = [s for records in [*corpus.values(), *headed.values()] for s in records] + rates
    by_kcat = {topic: {(s.key, s.value) for s in sent if s.topic == topic} for topic in RAW_TOPICS}
    consumers = {name: start(name, ["consume", name, *args], env, logs) for name, args in CONSUMERS.items()}
    services = {s.group: start(s.group, ["produce", s.worker, *WORKERS[s.worker].args], env, logs)
                for s in SERVICES}
    exits: dict[str, int | None] = {}
    codes: dict[str, int] = {}
    try:
        for topic, records in corpus.items():
            result = kcat_produce(bootstrap, prefix + topic, records)
            assert result.returncode == 0, f"kcat on {topic}: {result.stderr.decode(errors='replace')[-2000:]}"
        for topic, records in headed.items():
            result = kcat_with_headers(bootstrap, prefix + topic, [BAD_HEADER_NAME], records)
            assert result.returncode == 0, f"kcat on {topic}: {result.stderr.decode(errors='replace')[-2000:]}"
        for header_args, records in dead_letter_runs():
            result = kcat_with_headers(bootstrap, prefix + "dead-letters", header_args, records)
            assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
            letters += records
        _wait_until(settings, {**consumers, **services}, _everything_arrived(sent, letters))
        status = mbyn(env, "status", "--json", timeout=120)
        exits.update({name: proc.poll() for name, proc in services.items()})
        # Stopped first (as nothing feeds them any more): they send what they hold, flush and commit.
        codes.update(stop(services))
        produced = {s.writes: [r for r in read_topic(bootstrap, prefix + s.writes) if r not in by_kcat[s.writes]]
                    for s in SERVICES}
        _wait_until(settings, consumers, _all_loaded({s.writes: produced[s.writes] for s in SERVICES}))
        exits.update({name: proc.poll() for name, proc in consumers.items()})
    finally:
        codes.update(stop({name: proc for name, proc in {**services, **consumers}.items() if name not in codes}))
    return Outcome(settings, sent, letters, produced, exits, codes, status, logs)


def _event_ids(conn: sa.Connection, table: str) -> set[str]:
    return {r[0] for r in conn.execute(sa.text(f"SELECT event_id FROM {table}"))}


def _everything_arrived(sent: list[Sent], letters: list[Sent]) -> Check:
    """The quarantine holds a row per hostile record and group, every valid record is a row, and the services
    have written (and the loader loaded) a payment for each valid order and a shipment for each authorized
    payment sent."""
    quarantined = expected_quarantine(sent, letters)
    wanted: dict[str, set[str]] = {TABLES[s.topic]: set() for s in sent}
    for s in sent:
        if s.reason is None and s.event_id:
            wanted[TABLES[s.topic]].add(str(s.event_id))
    ours = set().union(*wanted.values())
    made = {"payments": valid_order_ids(sent, "orders"), "shipments": valid_order_ids(sent, "payments", "authorized")}

    def check(conn: sa.Connection) -> bool:
        if conn.execute(sa.text("SELECT count(*) FROM quarantine")).scalar_one() < quarantined:
            return False
        if not all(ids <= _event_ids(conn, table) for table, ids in wanted.items()):
            return False
        return all(orders <= {r.order_id for r in conn.execute(sa.text(f"SELECT event_id, order_id FROM {table}"))
                              if r.event_id not in ours} for table, orders in made.items())
    return check


def _all_loaded(produced: dict[str, list[tuple[bytes | None, bytes | None]]]) -> Check:
    """Every record the services wrote is a row."""
    wanted = {TABLES[topic]: {event_id_of(v) for _, v in records} for topic, records in produced.items()}
    return lambda conn: all(ids <= _event_ids(conn, table) for table, ids in wanted.items())


def _wait_until(settings: Settings, procs: dict[str, subprocess.Popen[bytes]], done: Check,
                timeout: float = 150) -> None:
    """Until ``done`` holds in the warehouse, a worker exits or ``timeout`` passes (the tests say which)."""
    engine = sa.create_engine(settings.warehouse())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs.values()):
            try:
                with engine.connect() as conn:
                    finished = done(conn)
            except sa.exc.SQLAlchemyError:  # tables not created yet
                finished = False
            if finished:
                time.sleep(2)  # a few more seconds: a second quarantine of the same record would show now
                return
            time.sleep(1)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def services_built() -> None:
    """The jar and the binary, built once (a no-op when up to date) so no build runs inside the pipeline."""
    from mbyn.sources import payments, shipments

    payments.build(get_settings())
    shipments.build(get_settings())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def outcome(request: pytest.FixtureRequest, kafka_bootstrap: str, services_built: None,
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
    assert set(outcome.exits) == set(CONSUMERS) | {s.group for s in SERVICES}, outcome.exits
    assert all(code is None for code in outcome.exits.values()), f"exited: {outcome.exits}\n{outcome.log_tail()}"
    assert all(code == 0 for code in outcome.codes.values()), f"exit codes {outcome.codes}\n{outcome.log_tail()}"


def test_there_are_at_least_25_kinds_of_hostile_records(outcome: Outcome) -> None:
    kinds = {s.label for s in outcome.sent if s.reason}
    assert len(kinds) >= 25, sorted(kinds)
    assert {s.topic for s in outcome.sent if s.reason} == set(RAW_TOPICS)
    assert {s.topic for s in outcome.sent if s.label == "bad_header_name"} == set(RAW_TOPICS)


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


def test_the_services_turn_valid_input_into_valid_records(outcome: Outcome) -> None:
    """A payment for every valid order, the four stages for every authorized payment sent; nothing refused."""
    payments, shipments = outcome.produced["payments"], outcome.produced["shipments"]
    refused = [(topic, key, verdict(topic, key, value)) for topic in ("payments", "shipments")
               for key, value in outcome.produced[topic] if verdict(topic, key, value) != "ok"]
    assert not refused
    assert valid_order_ids(outcome.sent, "orders") <= {payload_of(v)["order_id"] for _, v in payments}
    stages: dict[str, set[str]] = {}
    for _, value in shipments:
        stages.setdefault(payload_of(value)["order_id"], set()).add(payload_of(value)["status"])
    for order_id in valid_order_ids(outcome.sent, "payments", "authorized"):
        assert stages.get(order_id) == set(STAGES), f"{order_id}: stages {stages.get(order_id)}"


@pytest.mark.parametrize("topic", RAW_TOPICS)
def test_every_valid_record_is_loaded(outcome: Outcome, topic: str) -> None:
    valid: set[str | None] = {str(s.event_id) for s in outcome.sent if s.topic == topic and s.reason is None}
    valid |= {event_id_of(v) for _, v in outcome.produced.get(topic, [])}  # the services' records too
    rows = {r[0] for r in outcome.query(f"SELECT event_id FROM {TABLES[topic]}")}
    assert valid <= rows, f"{topic}: not loaded {valid - rows}"


def test_status_answers_while_the_pipeline_runs(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.status.stderr, outcome.status.stderr[-3000:]
    assert outcome.status.returncode in (0, 1), (outcome.status.returncode, outcome.status.stderr[-3000:])
    doc = json.loads(outcome.status.stdout)
    assert set(RAW_TOPICS) <= set(doc["reconciliation"]["topics"])


def test_the_catalog_still_names_the_topics_this_test_feeds() -> None:
    assert set(RAW_TOPICS) <= set(load_catalog().topics)
