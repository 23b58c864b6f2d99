"""``mbyn.warehouse.rows``: every loaded topic's declaration fits the schema and the catalog, a real envelope of
each topic becomes its row in a SQLite warehouse, and no other module declares a topic → table mapping."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.catalog import load_catalog
from mbyn.contracts.codec import decode_record
from mbyn.contracts.envelope import make_envelope
from mbyn.reconciliation import row_key
from mbyn.settings import PROJECT_ROOT
from mbyn.sources.generator import shop_events
from mbyn.warehouse.engine import init_schema, make_engine, parse_time
from mbyn.warehouse.rows import MARK_DELETED, ROWS, SKIP, TableRows, upsert_records
from mbyn.warehouse.schema import metadata

CATALOG = load_catalog()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROWS_FILE = PROJECT_ROOT / "include" / "mbyn" / "warehouse" / "rows.py"
#: Where a second topic → table mapping would hide (this file holds none: its samples are strings).
SCANNED = ("include", "dags", "plugins", "bench", "tests")


@dataclass
class Decoded:
    """A decoded record as the loader holds it (``rows.DecodedRecord``)."""

    data: dict[str, Any] | None
    key_str: str | None


def _payloads() -> dict[str, tuple[str, dict[str, Any]]]:
    """(event type, payload) of one record per topic the generator does not write."""
    return {
        "payments": ("payment_authorized", {"payment_id": "P-1", "order_id": "O-1", "amount": 12.5,
                                            "currency": "EUR", "status": "authorized", "method": "card"}),
        "customers": ("customer_upserted", {"customer_id": "C000001", "name": "Ada", "email": "ada@example.com",
                                            "country": "DE", "segment": "consumer",
                                            "updated_at": "2026-11-25T10:00:00Z"}),
        "inventory": ("stock_level", {"sku": "SKU-00001", "category": "books", "quantity": 5, "unit_price": 9.5,
                                      "location": "DE-1", "updated_at": "2026-11-25T10:00:00+01:00"}),
        "fx-rates": ("fx_rate", {"currency": "USD", "rate_date": "2026-11-24", "rate_per_eur": 1.08}),
        "shipments": ("shipment_created", {"shipment_id": "S-1", "order_id": "O-1", "status": "created",
                                           "carrier": "DHL"}),
        "alerts": ("fraud_alert", {"alert_id": "A-1", "kind": "order_velocity", "severity": "high",
                                   "customer_id": "C000001", "details": "5 orders in 1 minute"}),
    }


def real_record(topic: str) -> Decoded:
    """One record of ``topic`` as a producer writes it (the generator for clicks and orders), through the codec."""
    if topic in ("clickstream", "orders"):
        event = next(e for e in islice(shop_events(seed=7), 500) if e.topic == topic)
        envelope, key = event.value, event.key
    else:
        event_type, payload = _payloads()[topic]
        envelope = dict(make_envelope(event_type, payload, "test"))
        field = CATALOG.get(topic).key
        key = str(payload[field]) if field else None
    data = decode_record(topic, None if key is None else key.encode(), json.dumps(envelope).encode())
    assert data is not None
    return Decoded(data, key)


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    engine = make_engine("sqlite://")
    init_schema(engine)
    with engine.connect() as connection, connection.begin():
        yield connection
    engine.dispose()


def stored(conn: sa.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(sa.select(metadata.tables[table]))]


def same(stored_value: Any, expected: Any) -> bool:
    """A value read back from SQLite equals the one written (SQLite drops the time zone of a timestamp)."""
    if isinstance(expected, datetime) and isinstance(stored_value, datetime):
        return stored_value.replace(tzinfo=UTC) == expected.astimezone(UTC)
    return bool(stored_value == expected)


# The declarations fit the schema and the catalog ----------------------------------------------------------

@pytest.mark.parametrize("topic", sorted(ROWS))
def test_a_declaration_fits_its_table_and_its_topic(topic: str) -> None:
    spec = ROWS[topic]
    assert spec.topic == topic and topic in CATALOG.topics
    assert spec.tombstones is (MARK_DELETED if topic in ("customers", "inventory") else SKIP if
                               topic == "fx-rates" else None)
    assert (spec.tombstones is not None) == CATALOG.get(topic).compacted, \
        f"{topic}: tombstones are declared exactly for compacted topics"
    tables = [(spec.table, spec.key_columns, spec.columns)]
    if spec.lines is not None:
        tables.append((spec.lines.table, spec.lines.key_columns, spec.lines.columns))
    for name, key, columns in tables:
        table = metadata.tables[name]
        unknown = set(columns) - set(table.columns.keys())
        assert not unknown, f"{name}: unknown column(s) {unknown}"
        assert len(set(columns)) == len(columns), f"{name}: a column twice"
        assert key == tuple(c.name for c in table.primary_key.columns), f"{name}: the key is the primary key"
        required = {c.name for c in table.columns if not c.nullable and c.default is None and not c.autoincrement}
        assert required <= set(columns), f"{name}: NOT NULL column(s) without a value: {required - set(columns)}"


def test_every_loaded_table_is_declared_once() -> None:
    tables = [t for spec in ROWS.values() for t in spec.tables]
    assert len(tables) == len(set(tables))
    assert set(tables) == {"clicks", "orders", "order_items", "payments", "customers", "inventory", "fx_rates",
                           "shipments", "alerts"}


# A real envelope of each topic becomes its row ----------------------------------------------------------

@pytest.mark.parametrize("topic", sorted(ROWS))
def test_a_real_record_becomes_one_row_holding_its_fields(conn: sa.Connection, topic: str) -> None:
    spec = ROWS[topic]
    record = real_record(topic)
    envelope = record.data
    assert envelope is not None
    loaded = upsert_records(conn, spec, [record], NOW)
    items = envelope["payload"].get("items", []) if spec.lines is not None else []
    assert loaded.rows == {spec.table: 1, **({spec.lines.table: len(items)} if spec.lines else {})}
    [row] = stored(conn, spec.table)
    fields = {**{k: v for k, v in envelope.items() if k != "payload"}, **envelope["payload"]}
    for column in spec.columns:
        expected = {"loaded_at": NOW, "deleted": False, "status": "open" if topic == "alerts" else fields.get("status"),
                    "item_count": sum(i["quantity"] for i in items)}.get(column, fields.get(column))
        if column.endswith(("_time", "_at")) and isinstance(expected, str):
            expected = parse_time(expected)
        elif column == "rate_date":
            expected = date.fromisoformat(str(expected))
        assert same(row[column], expected), f"{spec.table}.{column}: {row[column]!r} != {expected!r}"
    if spec.lines is not None:
        lines = sorted(stored(conn, spec.lines.table), key=lambda r: r["line_no"])
        assert [(r["line_no"], r["sku"], r["quantity"], r["unit_price"]) for r in lines] == [
            (n, i["sku"], i["quantity"], i["unit_price"]) for n, i in enumerate(items, start=1)]
        assert {r["order_id"] for r in lines} == {envelope["payload"]["order_id"]}


@pytest.mark.parametrize("topic", sorted(ROWS))
def test_the_reconciliation_key_is_the_key_of_the_row_written(conn: sa.Connection, topic: str) -> None:
    spec = ROWS[topic]
    record = real_record(topic)
    upsert_records(conn, spec, [record], NOW)
    [row] = stored(conn, spec.table)
    written = tuple(row[c] for c in spec.key_columns)
    key = None if record.key_str is None else record.key_str.encode()
    assert row_key(spec.key_of(record.data, key)) == row_key(written if len(written) > 1 else written[0])


def test_facts_keep_the_first_version_dimensions_and_orders_the_last(conn: sa.Connection) -> None:
    click = real_record("clickstream")
    assert click.data is not None
    again = Decoded({**click.data, "payload": {**click.data["payload"], "page": "/changed"}}, click.key_str)
    upsert_records(conn, ROWS["clickstream"], [click], NOW)
    upsert_records(conn, ROWS["clickstream"], [again], NOW)
    assert [r["page"] for r in stored(conn, "clicks")] == [click.data["payload"]["page"]]
    customer = real_record("customers")
    assert customer.data is not None
    renamed = Decoded({**customer.data, "payload": {**customer.data["payload"], "name": "Grace"}}, customer.key_str)
    upsert_records(conn, ROWS["customers"], [customer, renamed], NOW)
    assert [r["name"] for r in stored(conn, "customers")] == ["Grace"]


def test_tombstones_mark_the_row_deleted_or_make_no_row(conn: sa.Connection) -> None:
    customer = real_record("customers")
    assert upsert_records(conn, ROWS["customers"], [customer], NOW).rows == {"customers": 1}
    gone = upsert_records(conn, ROWS["customers"], [Decoded(None, customer.key_str)], NOW)
    assert gone.rows == {"customers": 1} and gone.skipped_tombstones == 0
    [row] = stored(conn, "customers")
    assert row["deleted"] is True and row["name"] == "Ada", "the row keeps its last values"
    # In one batch the last record per key decides: a tombstone then a new version is live again.
    upsert_records(conn, ROWS["customers"], [Decoded(None, customer.key_str), customer], NOW)
    assert [r["deleted"] for r in stored(conn, "customers")] == [False]
    # A tombstone for a key never seen makes a row marked deleted (the record key names it).
    upsert_records(conn, ROWS["inventory"], [Decoded(None, "SKU-09999")], NOW)
    assert [(r["sku"], r["deleted"], r["category"]) for r in stored(conn, "inventory")] == [("SKU-09999", True, None)]
    # A withdrawn currency: the history of rates stays, the tombstone is counted.
    rate = real_record("fx-rates")
    skipped = upsert_records(conn, ROWS["fx-rates"], [rate, Decoded(None, "USD")], NOW)
    assert skipped.rows == {"fx_rates": 1} and skipped.skipped_tombstones == 1
    assert ROWS["fx-rates"].key_of(None, b"USD") is None and ROWS["customers"].key_of(None, b"C9") == "C9"


def test_a_tombstone_on_a_topic_that_is_not_compacted_is_refused(conn: sa.Connection) -> None:
    with pytest.raises(ValueError, match="not compacted"):
        upsert_records(conn, ROWS["shipments"], [Decoded(None, "S-1")], NOW)


def test_a_declaration_must_name_its_key_among_its_columns() -> None:
    with pytest.raises(ValueError, match="not among the columns"):
        TableRows("t", "clicks", ("event_id",), ("page",), lambda env, now: (), keep_first=True, collapse="")


# rows.py is the only topic → table mapping -------------------------------------------------------------

def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return {s for element in node.elts for s in _strings(element)}
    if isinstance(node, ast.Call) and node.args:  # LoadedTable("clicks", ...): the first argument
        return _strings(node.args[0])
    return set()


def mappings(source: str, filename: str) -> list[str]:
    """Where ``source`` maps catalog topics to warehouse tables (or back): dict literals with such an entry,
    and declarations (``TableRows(...)``, ``LineRows(...)``)."""
    topics, tables = set(CATALOG.topics), set(metadata.tables)
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                    continue
                forward = key.value in topics and _strings(value) & tables
                backward = key.value in tables and isinstance(value, ast.Constant) and value.value in topics
                if forward or backward:
                    found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:100]}")
                    break
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name in ("TableRows", "LineRows"):
                found.append(f"{filename}:{node.lineno}: {name}(...)")
    return found


def test_no_module_but_rows_maps_topics_to_tables() -> None:
    found: list[str] = []
    for folder in SCANNED:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if path == ROWS_FILE or path == Path(__file__) or ".venv" in path.parts:
                continue
            found += mappings(path.read_text(encoding="utf-8"), str(path.relative_to(PROJECT_ROOT)))
    assert not found, ("a topic → table mapping outside include/mbyn/warehouse/rows.py (read ROWS instead):\n  "
                       + "\n  ".join(found))


def test_the_scan_finds_a_mapping_and_the_declarations() -> None:
    assert mappings(ROWS_FILE.read_text(encoding="utf-8"), "rows.py"), "the declarations themselves are found"
    assert mappings('TABLES = {"clickstream": "clicks", "fx-rates": ["fx_rates"]}', "a.py")
    assert mappings('SPEC = {"orders": LoadedTable("orders", "order_id")}', "b.py")
    assert mappings('BACK = {"fx_rates": "fx-rates"}', "c.py")
    assert not mappings('COUNTS = {"orders": 3, "clicks": ids("orders")}', "d.py")
