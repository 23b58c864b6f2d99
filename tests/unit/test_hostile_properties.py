"""Hostile input, property-based: whatever the bytes, nothing but a verdict comes out.

Hypothesis feeds arbitrary bytes, adversarial JSON texts (deep nesting, huge and tiny numbers, NaN/Infinity,
duplicate keys, byte-order marks, lone surrogates, control characters, over-long strings, U+0000) and
envelopes generated from the catalog's own JSON Schemas with boundary values (maximum-length strings of
multi-byte characters, the smallest and largest numbers, integers written as ``1.0``, timestamps at the
edges of the calendar) through:

* ``decode_record`` for every catalog topic — only ``PoisonRecordError`` may come out;
* every consumer's ``decode`` — only ``PoisonRecordError`` (the dead-letters sink: never anything);
* what the consumers do with a record the codec accepted, without a broker: the warehouse-loader's rows
  (written to an in-memory SQLite warehouse), the fraud rules (every alert they raise must pass the
  ``alerts`` contract), the order-enricher's output (must pass ``orders-enriched``), the sales-aggregator's
  windows, the lake archiver's rows and Parquet files, and the dead-letters sink's quarantine rows;
* ``parse_headers`` with arbitrary headers — never raises, and every field fits its quarantine column.

The strategies ``valid_envelope(topic)`` and ``hostile_value()`` are shared with
``tests/integration/test_hostile_sink.py`` (the same envelopes written to SQLite and PostgreSQL).
The budget is small (a few hundred examples per test, ``deadline=None``): the file runs in about 20 s.
"""

from __future__ import annotations

import json
import math
import string
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from mbyn.catalog import load_catalog
from mbyn.consumers.contract import Batch, Record, StreamConsumer
from mbyn.consumers.dead_letters import DeadLetterSink, quarantine_row
from mbyn.consumers.fraud_detector import FraudDetector
from mbyn.consumers.lake_archiver import LakeArchiver, write_run
from mbyn.consumers.order_enricher import OUTPUT, OrderEnricher, enrich
from mbyn.consumers.sales_aggregator import OrderFacts as SalesOrder
from mbyn.consumers.sales_aggregator import SalesAggregator, fold_orders, revenue_by_category
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.contracts.codec import MAX_DEPTH, REASONS, decode_record
from mbyn.contracts.dead_letters import (
    MAX_ERROR_CLASS,
    MAX_ERROR_MESSAGE,
    MAX_NAME,
    MAX_REASON,
    MAX_TRACEBACK,
    parse_headers,
)
from mbyn.contracts.envelope import MAX_VALUE_BYTES, encode
from mbyn.errors import PoisonRecordError
from mbyn.settings import Settings, load_settings
from mbyn.warehouse import init_schema, parse_time
from mbyn.warehouse import schema as warehouse_schema
from mbyn.warehouse.engine import make_engine

CATALOG = load_catalog()
TOPICS = tuple(CATALOG.topics)
#: Topics whose values are envelopes (every topic but dead-letters).
ENVELOPE_TOPICS = tuple(t for t in TOPICS if CATALOG.value_schema(t) is not None)
_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
           HealthCheck.filter_too_much]
#: Cheap inputs (bytes, headers) get more examples than generated envelopes; no example database is written.
#: Generated envelopes are not shrunk (a failure shows the example as drawn): shrinking big envelopes takes
#: minutes, and the failure message names the field anyway.
BUDGET = settings(max_examples=300, deadline=None, database=None, suppress_health_check=_HEALTH)
ENVELOPES = settings(max_examples=60, deadline=None, database=None, suppress_health_check=_HEALTH,
                     phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)

# Strategies: schema-valid envelopes with boundary values ---------------------------------------------------

#: Characters a JSON string can carry (escaped where needed): everything but U+0000 (the codec refuses it)
#: and lone surrogates (not UTF-8), weighted towards multi-byte UTF-8 (2, 3 and 4 bytes, combining marks).
MULTIBYTE = "éß€中文ア𝄞😀\u0301\u200b\u2028\ufeff\uffff\U0010ffff"
TEXT_CHARS = st.one_of(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                       st.sampled_from(MULTIBYTE), st.sampled_from("\x01\x1f\x7f\"\\/\n\t"))

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
COUNTRY_PATTERN = "^[A-Z]{2}$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"

EDGE_DATES = st.sampled_from([date(1, 1, 1), date(1, 1, 2), date(1970, 1, 1), date(2000, 2, 29), date(2024, 2, 29),
                              date(2038, 1, 19), date(9999, 12, 30), date(9999, 12, 31)])


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Text matching the envelope's timestamp pattern: any real date/time, 0-30 fraction digits, any offset."""
    day = draw(st.one_of(st.dates(), EDGE_DATES))
    moment = draw(st.one_of(st.times(), st.sampled_from([datetime.min.time(), datetime.max.time()])))
    fraction = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30).map(lambda d: "." + d)))
    offset = draw(st.one_of(st.just("Z"), st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"),
                                                        st.integers(0, 23), st.integers(0, 59))))
    return f"{day.isoformat()}T{moment.strftime('%H:%M:%S')}{fraction}{offset}"


PATTERNS: dict[str, st.SearchStrategy[str]] = {
    UUID_PATTERN: st.uuids().map(str),
    TIMESTAMP_PATTERN: timestamps(),
    COUNTRY_PATTERN: st.text(string.ascii_uppercase, min_size=2, max_size=2),
    DATE_PATTERN: st.one_of(st.dates(), EDGE_DATES).map(date.isoformat),
}


def _strings(spec: dict[str, Any]) -> st.SearchStrategy[str]:
    if "pattern" in spec:
        if spec["pattern"] not in PATTERNS:
            raise AssertionError(f"no strategy for the catalog pattern {spec['pattern']!r}: add one to PATTERNS")
        return PATTERNS[spec["pattern"]]
    low, high = spec.get("minLength", 0), spec.get("maxLength", 300)
    return st.one_of(
        st.text(TEXT_CHARS, min_size=low, max_size=min(high, 80)),
        # Exactly the longest the schema allows, in characters that take 2-4 bytes each.
        st.text(st.sampled_from(MULTIBYTE), min_size=high, max_size=high),
        st.text(TEXT_CHARS, min_size=high, max_size=high))


def _numbers(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    low = spec.get("minimum", spec.get("exclusiveMinimum"))
    high = spec.get("maximum", spec.get("exclusiveMaximum"))
    exclude_low = "exclusiveMinimum" in spec
    edges = [x for x in (0, 0.0, 5e-324, 1e-300, 1e-5, 0.00005, 0.5, 1, 123456.789012345678, 999999.99995,
                         1e6, 1e5, 99999.99999, 2.0**53, 1e15, 1e300, 1.7976931348623157e308)
             if (low is None or x > low or (x == low and not exclude_low)) and (high is None or x <= high)]
    edges += [low] if low is not None and not exclude_low else []
    edges += [high] if high is not None else []
    return st.one_of(st.floats(min_value=low, max_value=high, exclude_min=exclude_low, allow_nan=False,
                               allow_infinity=False), st.sampled_from(edges))


def _integers(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high = spec.get("minimum", -(2**63)), spec.get("maximum", 2**63 - 1)
    ints = st.one_of(st.integers(low, high), st.sampled_from([low, high]))
    # JSON Schema counts 1.0 as an integer, so a producer may write it: the warehouse must take it too.
    return st.one_of(ints, ints.filter(lambda n: abs(n) <= 2**53).map(float))


def from_schema(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for the subset of JSON Schema the catalog uses (an unknown keyword fails loudly)."""
    if "const" in spec:
        return st.just(spec["const"])
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    kind = spec.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**spec, "type": k}) for k in kind])
    if kind == "object":
        props = spec.get("properties", {})
        required = set(spec.get("required", ()))
        return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v) for k, v in props.items() if k not in required})
    if kind == "array":
        return st.lists(from_schema(spec["items"]), min_size=spec.get("minItems", 0),
                        max_size=min(spec.get("maxItems", 10), 50))
    if kind == "string":
        return _strings(spec)
    if kind == "number":
        return _numbers(spec)
    if kind == "integer":
        return _integers(spec)
    if kind == "null":
        return st.none()
    raise AssertionError(f"no strategy for schema {spec}")


def valid_envelope(topic: str) -> st.SearchStrategy[dict[str, Any]]:
    """Envelopes the topic's JSON Schema allows (the codec may still refuse a few: see ``accepted``)."""
    schema = CATALOG.value_schema(topic)
    assert schema is not None, topic
    return from_schema(schema)  # type: ignore[no-any-return]


def record_key(topic: str, envelope: dict[str, Any]) -> bytes:
    """The record key a producer would use (the payload field named by the catalog)."""
    field = CATALOG.get(topic).key
    return str(envelope["payload"][field]).encode() if field else b""


def accepted(topic: str, envelope: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """(value bytes, decoded envelope) when the codec accepts ``envelope`` as a record of ``topic``, else None."""
    value = json.dumps(envelope, ensure_ascii=False).encode()
    if len(value) > MAX_VALUE_BYTES:
        return None
    try:
        decoded = decode_record(topic, record_key(topic, envelope), value)
    except PoisonRecordError:
        return None
    assert decoded is not None
    return value, decoded


def make_record(topic: str, value: bytes | None, data: Any = None, *, key: bytes | None = b"k", offset: int = 0,
                partition: int = 0, headers: list[tuple[str, bytes | None]] | None = None,
                timestamp_ms: int | None = 1_764_000_000_000) -> Record:
    return Record(topic, CATALOG.get(topic).physical, partition, offset, key, value, headers or [], timestamp_ms,
                  data)


# Strategies: hostile bytes -------------------------------------------------------------------------------

def hostile_value() -> st.SearchStrategy[Any]:
    """JSON values that break naive code: huge/tiny/non-finite numbers, odd strings, wrong shapes, deep nesting."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, -0.0, 2**63, -(2**63) - 1, 10**400, 1e308, 5e-324, -1.0, 1.0]),
        st.text(TEXT_CHARS, max_size=30), st.sampled_from(["", "\x00", "a\x00b", "\ufeff", "DE\n", " 1 ", "NaN",
                                                           "2026-02-30T10:00:00Z", "x" * 5000, "€" * 201]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)


def json_texts() -> st.SearchStrategy[bytes]:
    """Byte strings that are almost JSON, or JSON that strict parsers must refuse."""
    nesting = st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2).flatmap(lambda n: st.sampled_from([
        b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n, b"[" * 100_000 + b"]" * 100_000]))
    fragments = st.sampled_from([
        b"NaN", b"Infinity", b"-Infinity", b"[NaN]", b'{"a": Infinity}', b"1e400", b"-1e400", b"1e-400",
        b"9" * 5000, b"-" + b"9" * 20, b"0x10", b"01", b"1.", b".5", b"+1", b"\xef\xbb\xbf{}", b'"\\ud800"',
        b'"\\udc00\\ud800"', b'"a\x01b"', b'"\\u0000"', b'{"a":1,"a":2}', b"{}garbage", b"{} {}", b"\x00",
        b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff\xfe{\x00}\x00", b"{'a': 1}", b"[1,]", b'{"a":}',
        b"true", b"null", b"\"", b"", b" ", b"\t\n\r {} \r\n", b'{"schema_version": 1}', b"\x1e{}", b"\\"])
    dumped = hostile_value().map(lambda v: json.dumps(v, allow_nan=True).encode())
    return st.one_of(nesting, fragments, dumped, st.lists(fragments, min_size=2, max_size=4).map(b"".join))


@st.composite
def mutated_envelope(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid envelope of some topic with one field (envelope or payload) replaced by a hostile value."""
    topic = draw(st.sampled_from(ENVELOPE_TOPICS))
    envelope = draw(valid_envelope(topic))
    target = envelope if draw(st.booleans()) else envelope["payload"]
    name = draw(st.sampled_from([*sorted(target), "extra"]))
    target[name] = draw(hostile_value())
    encoded = json.dumps(envelope, allow_nan=True, ensure_ascii=draw(st.booleans())).encode()
    return topic, encoded


keys = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=20).map(lambda t: t.encode()))
header_names = st.one_of(st.text(max_size=20), st.sampled_from(
    ["dlq.reason", "dlq.error_class", "dlq.error_message", "dlq.traceback", "dlq.topic", "dlq.partition",
     "dlq.offset", "dlq.timestamp", "dlq.consumer_group", "dlq.", "DLQ.reason", "mbyn.replay_of"]))
header_values = st.one_of(
    st.none(), st.binary(max_size=64), st.text(TEXT_CHARS, max_size=64).map(lambda t: t.encode()),
    st.sampled_from([b"", b"\x00", b"-1", b"0", b"2147483648", b"9223372036854775808", b"99999999999999999999",
                     b"253402300800000", b"\xd9\xa3", b"1_000", b" 7", b"+7", b"\xff" * 5000, "é".encode() * 3000,
                     b"x" * 300, b"unexpected_error"]))
headers = st.lists(st.tuples(header_names, header_values), max_size=12)


# The codec -------------------------------------------------------------------------------------------------

def assert_poison_or_value(topic: str, key: bytes | None, value: bytes | None) -> Any:
    """``decode_record`` returns, or raises PoisonRecordError with a known reason — nothing else."""
    try:
        return decode_record(topic, key, value)
    except PoisonRecordError as exc:
        assert exc.reason in REASONS, exc.reason
        str(exc)  # the message itself must be printable
        return None


@BUDGET
@given(topic=st.sampled_from(TOPICS), key=keys, value=st.one_of(st.none(), st.binary(max_size=600)))
def test_arbitrary_bytes_get_a_verdict(topic: str, key: bytes | None, value: bytes | None) -> None:
    assert_poison_or_value(topic, key, value)


@BUDGET
@given(topic=st.sampled_from(TOPICS), value=json_texts())
def test_adversarial_json_gets_a_verdict(topic: str, value: bytes) -> None:
    result = assert_poison_or_value(topic, b"k", value)
    assert result is None or isinstance(result, dict)


@ENVELOPES
@given(case=mutated_envelope())
def test_an_envelope_with_one_hostile_field_gets_a_verdict(case: tuple[str, bytes]) -> None:
    topic, value = case
    result = assert_poison_or_value(topic, b"k", value)
    if result is not None:  # accepted: then it must be something the schema allows, e.g. a finite number
        assert encode(result)


@ENVELOPES
@given(data=st.data(), topic=st.sampled_from(ENVELOPE_TOPICS))
def test_schema_valid_envelopes_with_boundary_values_are_accepted(data: st.DataObject, topic: str) -> None:
    """The generator agrees with the codec: what the schema allows is accepted (except what cannot be UTC)."""
    envelope = data.draw(valid_envelope(topic))
    value = json.dumps(envelope, ensure_ascii=data.draw(st.booleans())).encode()
    assume(len(value) <= MAX_VALUE_BYTES)
    try:
        decoded = decode_record(topic, record_key(topic, envelope), value)
    except PoisonRecordError as exc:
        # The one refusal the schema cannot express: a local time with no UTC form (year 1 / 9999 edges).
        assert exc.reason == "schema_violation" and "not a real date/time" in str(exc), (exc.reason, str(exc))
        return
    assert decoded == envelope


# Every consumer's decode -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def settings_(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var = tmp_path_factory.mktemp("hostile") / "var"
    return load_settings(var_dir=var, warehouse_url="sqlite://")


CONSUMER_FACTORIES: dict[str, Callable[[Settings], StreamConsumer]] = {
    "warehouse-loader": WarehouseLoader, "dead-letters": DeadLetterSink, "order-enricher": OrderEnricher,
    "sales-aggregator": SalesAggregator, "fraud-detector": FraudDetector, "lake-archiver": LakeArchiver,
}


def test_every_runtime_consumer_is_covered() -> None:
    """A new consumer on the runtime must be added to CONSUMER_FACTORIES (lag-monitor polls no records)."""
    from mbyn.workers import consumers

    assert {w.name for w in consumers()} - set(CONSUMER_FACTORIES) == {"lag-monitor"}


@ENVELOPES
@given(data=st.data(), name=st.sampled_from(sorted(CONSUMER_FACTORIES)), key=keys, head=headers)
def test_every_consumer_decode_raises_only_poison(settings_: Settings, data: st.DataObject, name: str,
                                                  key: bytes | None, head: list[tuple[str, bytes | None]]) -> None:
    consumer = CONSUMER_FACTORIES[name](settings_)
    topic = data.draw(st.sampled_from(consumer.topics))
    value = data.draw(st.one_of(st.none(), st.binary(max_size=200), json_texts(),
                                mutated_envelope().map(lambda case: case[1])))
    record = make_record(topic, value, key=key, headers=head)
    try:
        consumer.decode(record)
    except PoisonRecordError as exc:
        assert consumer.dead_letters, f"{name} must decode everything (it never dead-letters)"
        assert exc.reason in REASONS


# What consumers do with accepted records ------------------------------------------------------------------

@st.composite
def accepted_records(draw: st.DrawFn, topic: str, count: int = 5) -> list[Record]:
    """1..count records of ``topic`` the codec accepts, with distinct offsets (tombstones on compacted topics)."""
    records = []
    for offset in range(draw(st.integers(1, count))):
        if CATALOG.get(topic).compacted and draw(st.integers(0, 9)) == 0:
            records.append(make_record(topic, None, None, key=draw(st.binary(max_size=70)), offset=offset))
            continue
        envelope = draw(valid_envelope(topic))
        found = accepted(topic, envelope)
        assume(found is not None)
        assert found is not None
        records.append(make_record(topic, found[0], found[1], key=record_key(topic, envelope), offset=offset))
    return records


@pytest.fixture(scope="module")
def sqlite_loader(settings_: Settings) -> WarehouseLoader:
    engine = make_engine("sqlite://")  # one in-memory database for the module (SQLAlchemy keeps one connection)
    init_schema(engine)
    return WarehouseLoader(settings_, engine=engine)


@ENVELOPES
@given(data=st.data(), topic=st.sampled_from(WarehouseLoader.topics))
def test_the_loader_builds_and_writes_rows_for_every_accepted_record(sqlite_loader: WarehouseLoader,
                                                                    data: st.DataObject, topic: str) -> None:
    """Row building + the SQLite write path: no error at all for records the codec accepted.

    Each example is written in its own transaction, rolled back: two examples sharing a key (a clash the
    database rightly refuses, e.g. one event_id for two orders) is not what this test is about.
    """
    records = data.draw(accepted_records(topic))
    with sqlite_loader.engine.connect() as conn, conn.begin() as transaction:
        sqlite_loader.write(conn, Batch(records, {records[0].partition_key: len(records)}))
        transaction.rollback()


class ContractProducer:
    """Stands in for TopicProducer: what a consumer emits must pass the codec of the topic it goes to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, topic: str, envelope: dict[str, Any], key: str | None = None, **_: Any) -> bool:
        value = encode(envelope)
        assert decode_record(topic, None if key is None else key.encode(), value) == json.loads(value), topic
        self.sent.append((topic, envelope))
        return True

    def flush_or_raise(self) -> None:
        """Nothing is queued."""


@ENVELOPES
@given(data=st.data())
def test_fraud_rules_take_any_accepted_orders_and_payments_and_raise_valid_alerts(settings_: Settings,
                                                                                 data: st.DataObject) -> None:
    detector = FraudDetector(settings_)
    producer = ContractProducer()
    detector.producer = producer  # type: ignore[assignment]
    orders = data.draw(accepted_records("orders", 4))
    payments = data.draw(accepted_records("payments", 4))
    for i, record in enumerate(orders + payments):  # one partition, so the join sees both sides
        record.offset = i
    if data.draw(st.booleans()):  # the payment of the first order, with its id: the join compares amounts
        payments[0].data["payload"]["order_id"] = orders[0].data["payload"]["order_id"]
    mixed = data.draw(st.permutations(orders + payments))
    detector.process_batch(Batch(list(mixed), {mixed[0].partition_key: len(mixed)}))
    for partition in list(detector.rules.tasks):  # caught up: the wall clock expires lone payments
        alerts = detector.rules.advance(partition, datetime.now(UTC) + timedelta(days=1))
        detector._send(alerts)
    assert all(topic == "alerts" for topic, _ in producer.sent)


@ENVELOPES
@given(data=st.data())
def test_the_enricher_turns_accepted_orders_and_rates_into_valid_enriched_orders(data: st.DataObject) -> None:
    [order] = data.draw(accepted_records("orders", 1))
    [fx] = data.draw(accepted_records("fx-rates", 1).filter(lambda rs: rs[0].data is not None))
    rate = float(fx.data["payload"]["rate_per_eur"])
    enriched = enrich(order.data, rate, fx.data["payload"]["rate_date"])
    ContractProducer().send(OUTPUT, enriched, order.key_str)


@ENVELOPES
@given(data=st.data())
def test_sales_windows_take_any_accepted_orders_and_rates(data: st.DataObject) -> None:
    orders = data.draw(accepted_records("orders", 5))
    [fx] = data.draw(accepted_records("fx-rates", 1).filter(lambda rs: rs[0].data is not None))
    rate = float(fx.data["payload"]["rate_per_eur"])
    facts = []
    for record in orders:
        when = parse_time(record.data["event_time"])
        assert when is not None
        facts.append(SalesOrder(record.partition_key, record.data["payload"]["order_id"], when,
                                record.data["payload"]["country"], revenue_by_category(record.data["payload"], rate)))
    folded = fold_orders(facts, {}, timedelta(seconds=120))
    column = warehouse_schema.sales_by_minute.c.revenue_eur.type  # NUMERIC(p, s): PostgreSQL refuses 10**(p-s)
    limit = 10 ** (column.precision - column.scale)
    for delta in folded.deltas.values():
        # 1000 such orders in one window, country and category must still fit the column.
        assert math.isfinite(delta.revenue_eur) and 0 <= delta.revenue_eur * 1000 < limit, delta


@ENVELOPES
@given(data=st.data(), topic=st.sampled_from(LakeArchiver.topics), head=headers,
       timestamp_ms=st.one_of(st.none(), st.integers(0, 2**41), st.sampled_from([0, 1, 253402300799999])))
def test_the_lake_archiver_writes_any_accepted_record(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
                                                      topic: str, head: list[tuple[str, bytes | None]],
                                                      timestamp_ms: int | None) -> None:
    records = data.draw(accepted_records(topic, 3))
    for record in records:
        record.headers = [(k, v if v is not None else b"") for k, v in head]
        record.timestamp_ms = timestamp_ms
    lake = tmp_path_factory.mktemp("lake")
    path = write_run(lake, records)
    table = pq.read_table(path).to_pylist()
    assert [row["offset"] for row in table] == [r.offset for r in records]


@BUDGET
@given(key=keys, value=st.one_of(st.none(), st.binary(max_size=300), json_texts()), head=headers)
def test_any_record_on_dead_letters_becomes_a_quarantine_row_that_fits(key: bytes | None, value: bytes | None,
                                                                       head: list[tuple[str, bytes | None]]) -> None:
    row = quarantine_row(make_record("dead-letters", value, key=key, headers=head), datetime.now(UTC))
    assert row["reason"] and len(row["reason"]) <= 64
    for column, limit in (("error_class", 128), ("topic", 255), ("consumer_group", 255)):
        assert row[column] is None or len(row[column]) <= limit, column
    for column in ("value_text", "headers", "reason", "error_class", "error_message", "error_traceback", "topic",
                   "consumer_group"):
        assert row[column] is None or "\x00" not in row[column], column
    assert row["partition"] is None or 0 <= row["partition"] < 2**31
    assert row["offset"] is None or 0 <= row["offset"] < 2**63
    json.loads(row["headers"])


@BUDGET
@given(head=st.one_of(st.none(), headers, st.lists(st.tuples(
    st.one_of(header_names, st.integers(), st.none()),
    st.one_of(header_values, st.text(TEXT_CHARS, max_size=30))), max_size=8)))
def test_parse_headers_never_raises_and_every_field_fits(head: Any) -> None:
    info = parse_headers(head)
    assert info.reason and len(info.reason) <= MAX_REASON
    for text, limit in ((info.error_class, MAX_ERROR_CLASS), (info.error_message, MAX_ERROR_MESSAGE),
                        (info.traceback, MAX_TRACEBACK), (info.topic, MAX_NAME), (info.consumer_group, MAX_NAME)):
        assert text is None or (len(text) <= limit and "\x00" not in text)
    assert info.partition is None or 0 <= info.partition < 2**31
    assert info.offset is None or 0 <= info.offset < 2**63
    if info.timestamp_ms is not None:
        datetime.fromtimestamp(info.timestamp_ms / 1000, UTC)


# A few fixed cases the strategies above reach only by luck --------------------------------------------------

FIXED = [
    (b"\xef\xbb\xbf" + b'{"a":1}', "not_json"), (b'{"a": NaN}', "not_json"), (b"[" * (MAX_DEPTH + 1) + b"]" *
                                                                              (MAX_DEPTH + 1), "not_json"),
    (b'"\\ud800"', "not_json"), (b"1e400", "not_json"), (b'"a\tb"', "not_json"), (b"{} x", "not_json"),
    (b"[]", "schema_violation"), (b'{"schema_version": 2}', "unknown_schema_version"),
    (b" " * (MAX_VALUE_BYTES + 1), "oversize"),
]


@pytest.mark.parametrize(("value", "reason"), FIXED)
@pytest.mark.parametrize("topic", ["orders", "fx-rates"])
def test_fixed_hostile_values_get_their_reason(topic: str, value: bytes, reason: str) -> None:
    with pytest.raises(PoisonRecordError) as caught:
        decode_record(topic, b"k", value)
    assert caught.value.reason == reason


def test_an_order_id_of_max_length_in_four_byte_characters_is_one_valid_record() -> None:
    """64 characters of 4 UTF-8 bytes each: the schema counts characters, and so must the warehouse."""
    found = accepted("orders", {
        "event_id": str(uuid.uuid4()), "event_type": "order_placed", "schema_version": 1,
        "event_time": "0001-01-01T00:00:00Z", "source": "𝄞" * 64,
        "payload": {"order_id": "😀" * 64, "customer_id": "€" * 64, "session_id": "x", "country": "ZZ",
                    "currency": "JPY", "amount": 1e6, "items": [{"sku": "ß" * 64, "category": "toys",
                                                                 "quantity": 100.0, "unit_price": 5e-324}]}})
    assert found is not None and found[1]["payload"]["order_id"] == "😀" * 64
