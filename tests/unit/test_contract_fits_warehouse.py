"""What the contract accepts fits the warehouse: every text column a raw topic fills bounds what the
catalog's JSON Schema allows there, so PostgreSQL (which enforces VARCHAR lengths, unlike SQLite) never
refuses a valid record. The integration test tests/integration/test_hostile_sink.py loads such records."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import String

from mbyn.catalog import load_catalog
from mbyn.warehouse import schema
from mbyn.warehouse.rows import ROWS

#: Raw topic → the tables the warehouse-loader fills from it (``mbyn.warehouse.rows``).
TABLES = {topic: list(spec.tables) for topic, spec in ROWS.items()}


def longest(spec: dict[str, Any]) -> int | None:
    """The longest string ``spec`` admits (characters), or None when it does not say."""
    bounds = []
    if "maxLength" in spec:
        bounds.append(int(spec["maxLength"]))
    if "enum" in spec:
        bounds.append(max(len(str(v)) for v in spec["enum"]))
    pattern = spec.get("pattern", "")
    fixed = re.fullmatch(r"\^\[A-Z\]\{(\d+)\}\$", pattern)
    if fixed:
        bounds.append(int(fixed.group(1)))
    if pattern.startswith("^[0-9a-f]{8}-[0-9a-f]{4}-"):
        bounds.append(36)
    if pattern.startswith(r"^\d{4}-\d{2}-\d{2}"):
        bounds.append(64)  # dates and timestamps become DATE / TIMESTAMP columns, not text
    return min(bounds) if bounds else None


def fields(topic: str) -> dict[str, dict[str, Any]]:
    """Envelope and payload properties (payload items' properties too) by name."""
    catalog = load_catalog()
    envelope = catalog.value_schema(topic) or {}
    out = {k: v for k, v in envelope.get("properties", {}).items() if k != "payload"}
    payload = catalog.get(topic).payload_schema or {}
    out.update(payload.get("properties", {}))
    items = payload.get("properties", {}).get("items", {}).get("items", {})
    out.update(items.get("properties", {}))
    return out


@pytest.mark.parametrize("topic", sorted(TABLES))
def test_every_text_column_bounds_what_the_schema_allows(topic: str) -> None:
    props = fields(topic)
    checked = 0
    for table_name in TABLES[topic]:
        for column in schema.metadata.tables[table_name].columns:
            if not isinstance(column.type, String) or column.type.length is None or column.name not in props:
                continue
            allowed = longest(props[column.name])
            assert allowed is not None, f"{topic}: {column.name} has no length bound in the catalog"
            holds = column.type.length
            assert allowed <= holds, f"{topic}: {column.name} admits {allowed} characters, {table_name} holds {holds}"
            checked += 1
    assert checked >= 2, f"{topic}: no text column was compared"


def test_the_length_bound_is_read_from_the_schema() -> None:
    assert longest({"type": "string", "maxLength": 200}) == 200
    assert longest({"type": "string", "enum": ["card", "bank_transfer"]}) == 13
    assert longest({"type": "string", "pattern": "^[A-Z]{2}$"}) == 2
    assert longest({"type": "string"}) is None
