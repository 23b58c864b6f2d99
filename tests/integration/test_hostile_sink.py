"""What the codec accepts fits the warehouse — on SQLite and on PostgreSQL, which enforces column types and lengths.

Envelopes built from the catalog's JSON Schemas at their edges (strings of the longest allowed length in
2-4-byte UTF-8 characters, the smallest and largest numbers, integers written as ``100.0``, more decimals
than the money columns keep, timestamps in year 1 and 9999 with 30 fraction digits and ±23:59 offsets,
tombstones), plus envelopes from the hypothesis strategies of ``tests/unit/test_hostile_properties.py``,
go through the warehouse-loader's real write path (``process_batch`` / ``write``: row building, COPY +
INSERT … ON CONFLICT on PostgreSQL, executemany on SQLite). A ``SinkRejectedError`` here is a value the
contract lets through and the database refuses: a bug in the catalog (maxLength / maximum) or the codec.
The dead-letters sink gets records with hostile headers the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from mbyn.consumers.contract import Batch, Record
from mbyn.consumers.dead_letters import DeadLetterSink
from mbyn.consumers.warehouse_loader import WarehouseLoader
from mbyn.contracts.codec import decode_record
from mbyn.errors import SinkRejectedError
from mbyn.settings import Settings
from mbyn.warehouse import init_schema, sink_errors, warehouse_engine
from mbyn.warehouse.rows import ROWS
from tests.plugins.postgres import warehouse_fixture
from tests.unit.test_hostile_properties import (
    _HEALTH,
    CATALOG,
    accepted,
    accepted_records,
    headers,
    json_texts,
    keys,
    make_record,
    record_key,
)

pytestmark = pytest.mark.integration

warehouse = warehouse_fixture()

LOADED_TOPICS = WarehouseLoader.topics
#: Edge values per JSON type and mode (see ``extreme``).
TIMESTAMPS = {"high": "9999-12-31T23:59:59.999999999999999999999999999999Z", "low": "0001-01-01T00:00:00Z",
              "odd": "0001-01-01T23:59:59.5+23:59"}
FOUR_BYTES, TWO_BYTES, COMBINING = "😀", "é", "e\u0301"


def extreme(spec: dict[str, Any], mode: str) -> Any:
    """A value of the catalog schema ``spec`` at its edge: ``high`` (longest / largest), ``low`` (shortest /
    smallest) or ``odd`` (the awkward middle: tiny numbers, extra decimals, combining characters)."""
    if "const" in spec:
        return spec["const"]
    if "enum" in spec:
        return max(spec["enum"], key=len) if mode == "high" else spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        return extreme({**spec, "type": kind[0]}, mode)
    if kind == "object":
        return {name: extreme(sub, mode) for name, sub in spec.get("properties", {}).items()}
    if kind == "array":
        size = spec.get("maxItems", 3) if mode == "high" else spec.get("minItems", 0) or 1
        return [extreme(spec["items"], mode) for _ in range(size)]
    if kind == "string":
        pattern = spec.get("pattern", "")
        if pattern.startswith(r"^\d{4}-\d{2}-\d{2}T"):
            return TIMESTAMPS[mode]
        if pattern.startswith(r"^\d{4}-\d{2}-\d{2}"):
            return {"high": "9999-12-31", "low": "0001-01-01", "odd": "2024-02-29"}[mode]
        if pattern == "^[A-Z]{2}$":
            return {"high": "ZZ", "low": "AA", "odd": "XK"}[mode]
        if pattern.startswith("^[0-9a-f]{8}"):
            return str(uuid.uuid4())
        assert not pattern, f"no edge value for pattern {pattern!r}"
        high = spec.get("maxLength", 300)
        if mode == "high":
            return FOUR_BYTES * high
        if mode == "low":
            return "x" * spec.get("minLength", 0)
        return (COMBINING * high)[:high - 1] + TWO_BYTES
    if kind == "number":
        low = spec.get("minimum", 5e-324 if "exclusiveMinimum" in spec else -1e6)
        high = spec.get("maximum", 1e15)
        return {"high": float(high), "low": low, "odd": min(123456.78901234567, high / 3)}[mode]
    if kind == "integer":
        low, high = spec.get("minimum", -(2**63)), spec.get("maximum", 2**63 - 1)
        return {"high": float(high), "low": low, "odd": float(max(low, min(high, 7)))}[mode]
    raise AssertionError(f"no edge value for {spec}")


def edge_records(topic: str) -> list[Record]:
    """One record per edge mode, each accepted by the codec (asserted), plus a tombstone on compacted topics."""
    schema = CATALOG.value_schema(topic)
    assert schema is not None
    out = []
    for offset, mode in enumerate(("high", "low", "odd")):
        envelope = extreme(schema, mode)
        found = accepted(topic, envelope)
        assert found is not None, f"{topic} {mode}: the codec refuses the schema's own edge value: {envelope}"
        out.append(make_record(topic, found[0], found[1], key=record_key(topic, envelope), offset=offset))
    if CATALOG.get(topic).compacted:
        out.append(make_record(topic, None, None, key=FOUR_BYTES.encode() * 64, offset=3))
    return out


def rows(settings_: Settings, table: str) -> list[Any]:
    engine = warehouse_engine(settings_)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT * FROM {table}")))
    finally:
        engine.dispose()


@pytest.mark.parametrize("topic", LOADED_TOPICS)
def test_edge_values_the_codec_accepts_are_loaded(warehouse: Settings, topic: str) -> None:
    loader = WarehouseLoader(warehouse, engine=warehouse_engine(warehouse))
    init_schema(loader.engine)
    records = edge_records(topic)
    refused = []
    for record in records:  # one by one, so a failure names the value
        try:
            loader.process_batch(Batch([record], {record.partition_key: record.offset + 1}))
        except SinkRejectedError as exc:
            refused.append(f"{topic} offset {record.offset} ({record.value!r:.300}): {exc}")
    loader.close()
    assert not refused, "\n".join(refused)
    table = ROWS[topic].table
    assert len(rows(warehouse, table)) == 3, table  # one row per edge mode (the tombstone marks one deleted)


@pytest.fixture
def loader(warehouse: Settings) -> Any:
    loader = WarehouseLoader(warehouse, engine=warehouse_engine(warehouse))
    init_schema(loader.engine)
    yield loader
    loader.close()


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=_HEALTH)
@given(data=st.data(), topic=st.sampled_from(LOADED_TOPICS))
def test_generated_envelopes_the_codec_accepts_are_written(loader: WarehouseLoader, data: st.DataObject,
                                                           topic: str) -> None:
    """Each example in its own transaction, rolled back (two examples sharing a key would be a real clash)."""
    records = data.draw(accepted_records(topic))
    with sink_errors("hostile sink test"), loader.engine.connect() as conn, conn.begin() as transaction:
        loader.write(conn, Batch(records, {records[0].partition_key: len(records)}))
        transaction.rollback()


def test_any_dead_letter_is_quarantined(warehouse: Settings) -> None:
    """Records with hostile headers, keys and values on dead-letters: every one is a quarantine row."""
    sink = DeadLetterSink(warehouse, engine=warehouse_engine(warehouse))
    init_schema(sink.engine)
    batch: list[Record] = []

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=_HEALTH)
    @given(key=keys, value=st.one_of(st.none(), st.binary(max_size=200), json_texts()), head=headers)
    def collect(key: bytes | None, value: bytes | None, head: list[tuple[str, bytes | None]]) -> None:
        batch.append(make_record("dead-letters", value, key=key, headers=head, offset=len(batch)))

    collect()
    hand_written: list[tuple[str, bytes | None]] = [
        ("dlq.topic", "é".encode() * 300), ("dlq.partition", b"0"), ("dlq.offset", b"7"),
        ("dlq.consumer_group", b"g"), ("dlq.reason", b"\x00" * 100), ("dlq.timestamp", b"-5")]
    batch.append(make_record("dead-letters", b"\x00\xff", key=None, headers=hand_written, offset=len(batch)))
    # The same coordinates twice (a consumer re-sent its dead letter): quarantined once.
    batch.append(make_record("dead-letters", b"x", key=None, headers=hand_written, offset=len(batch)))
    for start in range(0, len(batch), 25):
        part = batch[start:start + 25]
        sink.process_batch(Batch(part, {part[0].partition_key: part[-1].offset + 1}))
    sink.close()
    assert len(rows(warehouse, "quarantine")) == len(batch) - 1 - _duplicates(batch)


def _duplicates(batch: list[Record]) -> int:
    """Records among ``batch[:-2]`` whose (group, topic, partition, offset) repeat an earlier one."""
    from mbyn.contracts.dead_letters import parse_headers

    seen: set[tuple[Any, ...]] = set()
    repeats = 0
    for record in batch[:-2]:
        info = parse_headers(record.headers)
        if info.topic is None:
            continue
        coordinates = (info.consumer_group, info.topic, info.partition, info.offset)
        repeats += coordinates in seen
        seen.add(coordinates)
    return repeats


def test_the_generator_agrees_with_the_codec_on_every_loaded_topic() -> None:
    """Guard for the test above: each topic's edge envelopes are accepted (else the sink test proves nothing)."""
    for topic in LOADED_TOPICS:
        for record in edge_records(topic):
            assert record.value is None or decode_record(topic, record.key, record.value) is not None
