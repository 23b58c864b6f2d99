"""The codec's fast path (msgspec types derived from the catalog) never disagrees with the JSON Schema path.

``decode_typed`` only answers "certainly valid" (the envelope) or "ask the full path" (``None``); every
reason comes from the full path. So the paths agree when (1) whatever the fast path accepts, the JSON Schema
path accepts too, as the same envelope, and (2) ``decode_record`` (fast path first) gives the verdict and
reason the JSON Schema path alone gives. Both are checked on every shared vector, on a deterministic sweep
of every field of every topic through wrong types, boundary numbers and lengths, bad enums, near-miss
patterns, impossible dates, dropped and extra fields, and on a hypothesis property over mutated valid
envelopes. The full path alone is ``decode_record`` with a catalog other than the default one (equal content,
another object), which the fast path leaves alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbyn.contracts.codec import MAX_DEPTH, decode_record, decode_typed, verdict
from mbyn.contracts.typed import type_of, typed_decoder
from mbyn.errors import PoisonRecordError
from tests.unit.test_hostile_properties import (
    CATALOG,
    COUNTRY_PATTERN,
    DATE_PATTERN,
    ENVELOPE_TOPICS,
    TIMESTAMP_PATTERN,
    UUID_PATTERN,
    valid_envelope,
)
from tests.unit.test_vectors import ALL, raw

#: The same catalog in another object: ``decode_record`` then takes the JSON Schema path only.
FULL_PATH_CATALOG = dataclasses.replace(CATALOG)
SAMPLES = {UUID_PATTERN: "0b7c5f1e-3c1a-4b6e-9f4e-2d9a1c3b5e7f", TIMESTAMP_PATTERN: "2026-12-02T10:00:00.000Z",
           COUNTRY_PATTERN: "DE", DATE_PATTERN: "2026-12-02"}


def full_path(topic: str, key: bytes | None, value: bytes | None) -> tuple[str, Any]:
    """("ok", envelope) or (reason, None) from the JSON Schema path alone."""
    try:
        return "ok", decode_record(topic, key, value, FULL_PATH_CATALOG)
    except PoisonRecordError as exc:
        return exc.reason, None


def assert_paths_agree(topic: str, key: bytes | None, value: bytes | None) -> bool:
    """The two agreements of the module docstring; True when the fast path took the value."""
    reason, envelope = full_path(topic, key, value)
    assert verdict(topic, key, value) == reason, value
    fast = None if value is None else decode_typed(topic, value)
    if fast is not None:
        if key is None:  # the fast path judges the value alone: the key's checks come before it
            reason, envelope = full_path(topic, b"k", value)
        assert reason == "ok", f"{topic}: the fast path accepts what the JSON Schema path refuses ({reason}): {value!r}"
        # The same envelope, down to 1 vs 1.0 and key order (json.dumps tells them apart).
        assert json.dumps(fast) == json.dumps(envelope), value
    return fast is not None


def duplicate_keys(value: bytes) -> bool:
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in items}) < len(items)
        return dict(items)

    json.loads(value, object_pairs_hook=pairs)
    return found


def test_every_envelope_topic_has_a_typed_decoder() -> None:
    """Else the fast path would silently never run: each catalog schema is expressible today."""
    assert {t for t in CATALOG.topics if typed_decoder(t) is not None} == set(ENVELOPE_TOPICS)
    assert typed_decoder("dead-letters") is None


def test_the_paths_agree_on_every_shared_vector() -> None:
    missed = []
    for vector in ALL:
        key, value = raw(vector)
        took = assert_paths_agree(vector["topic"], key, value)
        assert verdict(vector["topic"], key, value) == vector["verdict"], vector["name"]
        if vector["verdict"] == "ok" and value is not None and not took:  # (a tombstone has no value)
            missed.append(vector)
    for vector in missed:  # a valid value the fast path leaves to the full path: only these two kinds
        _, value = raw(vector)
        assert value is not None
        try:
            typed_decoder(vector["topic"]).decode(value)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the message is the assertion
            assert "got `float`" in str(exc) or duplicate_keys(value), (vector["name"], str(exc))


def test_what_a_schema_cannot_say_keeps_the_full_path() -> None:
    """A keyword outside the translation's table, or an open object, has no typed decoder: never a weaker check."""
    base = {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "string"}}}
    assert type_of(base, "Ok")
    for changed in ({"additionalProperties": True}, {"minProperties": 1}, {"properties": {"a": {"type": "string",
                    "format": "email", "multipleOf": 2}}}, {"properties": {"a": {"enum": [1.5]}}},
                    {"properties": {"a": {"type": "array"}}}, {"properties": {"a": {"$ref": "#/x"}}},
                    {"properties": {"a": {"anyOf": [{"type": "string"}]}}},
                    {"properties": {"a": {"type": "string", "pattern": "^(a$|b)"}}},
                    {"properties": {"a": {"type": "integer", "minimum": 2**70}}}):
        try:
            type_of({**base, **changed}, "Bad")
        except Exception as exc:  # noqa: BLE001 - the class is private on purpose; its name is checked
            assert type(exc).__name__ == "_Inexpressible", changed
        else:
            raise AssertionError(f"{changed} was translated")


def test_nesting_near_the_recursion_limit_is_a_poison_record() -> None:
    """msgspec parses nesting up to the interpreter's recursion limit; the reason's preview of such a
    ``schema_version`` (``repr``, a few frames deeper) raised RecursionError out of ``decode_record``."""
    def nested(levels: int) -> bytes:
        return b'{"schema_version": ' + b"[" * levels + b"]" * levels + b"}"

    low, high = MAX_DEPTH, sys.getrecursionlimit()  # the deepest msgspec parses here: it depends on the stack
    while low < high:
        middle = (low + high + 1) // 2
        try:
            msgspec.json.decode(nested(middle))
        except RecursionError:
            high = middle - 1
        else:
            low = middle
    for levels in range(low - 30, low + 2):
        value = nested(levels)
        for catalog in (None, FULL_PATH_CATALOG):
            assert verdict("clickstream", b"k", value, catalog) == "not_json", levels


SYNTHETIC: list[dict[str, Any]] = [  # keywords the catalog does not use (yet): the translation must hold for them too
    {"type": "integer", "exclusiveMinimum": 0.5, "exclusiveMaximum": 10},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 2.5},
    {"type": ["string", "integer", "null"], "maxLength": 2, "minimum": 3},
    {"type": "number", "enum": [1, 2]},
    {"const": "x"},
    {"type": "string", "pattern": "^v[0-9]{2}-[ab]\\Z", "maxLength": 5},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
]


def test_the_translation_agrees_with_the_compiled_validator_beyond_the_catalog() -> None:
    values = [*candidates({"minimum": 0, "maximum": 10, "minLength": 2, "maxLength": 4}), 0.5, 0.50001, 9.99, 10.0,
              3, 2.5, 2.5000001, "ab", "abc", "v01-a", "v01-b", "v01-c", "v1-a", [True, False], [True], "x"]
    for schema in SYNTHETIC:
        typed = msgspec.json.Decoder(type_of(schema, "Synthetic"))
        compiled = fastjsonschema.compile(schema)
        for value in values:
            raw_value = json.dumps(value).encode("utf-8", errors="surrogatepass")
            try:
                typed.decode(raw_value)
            except msgspec.DecodeError:
                continue
            compiled(json.loads(raw_value))  # raises when the fast path accepted what the validator refuses


# A deterministic sweep: every field of every topic, through values derived from its own schema ------------

def sample(spec: dict[str, Any]) -> Any:
    """One valid value of ``spec`` with every optional field present (so each can be mutated)."""
    if "const" in spec:
        return spec["const"]
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec["type"][0] if isinstance(spec["type"], list) else spec["type"]
    if kind == "object":
        return {name: sample(sub) for name, sub in spec.get("properties", {}).items()}
    if kind == "array":
        return [sample(spec["items"])] * max(1, spec.get("minItems", 1))
    if kind == "string":
        return SAMPLES[spec["pattern"]] if "pattern" in spec else "x" * max(1, spec.get("minLength", 1))
    if kind in ("number", "integer"):
        return spec.get("minimum", 0) + 1
    raise AssertionError(f"no sample for {spec}")


def candidates(spec: dict[str, Any]) -> list[Any]:
    """Values at and just over the edges of ``spec``, wrong types, and texts that nearly match."""
    values: list[Any] = [None, True, False, 0, 1, -1, 1.0, 1.5, -0.0, 2**63, -(2**63) - 1, 2**64, 10**30, 1e308,
                         5e-324, "", "x", "1", [], {}, [1], {"a": 1}, "a\x00b", "\ud800", "\ufeff"]
    for edge in (spec.get("minimum"), spec.get("maximum")):
        if edge is not None:
            values += [edge, float(edge), edge - 1, edge + 1, math.nextafter(edge, -math.inf),
                       math.nextafter(edge, math.inf), edge - 1e-9, edge + 1e-9]
    for length in (spec.get("minLength"), spec.get("maxLength")):
        if length is not None:
            values += ["é" * length, "é" * (length + 1), "a" * max(length - 1, 0), "𝄞" * length]
    for option in spec.get("enum", []):
        values += [f"{option}x", str(option).upper(), f" {option}", f"{option}\n"]
    if "pattern" in spec:
        good = SAMPLES[spec["pattern"]]
        values += [good, good + "\n", good[:-1], good.upper(), good.lower(), " " + good, good.replace("2", "٢")]
    if spec.get("pattern") in (TIMESTAMP_PATTERN, DATE_PATTERN):
        values += ["2026-02-30T00:00:00Z", "2026-12-02T24:00:00Z", "2026-12-02T10:00:60Z", "2026-12-02T10:00:00",
                   "2026-12-02T10:00:00+00:60", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                   "2026-12-02T10:00:00.1234567890123Z", "2026-12-02t10:00:00z", "2026-12-02 10:00:00Z",
                   "2026-02-30", "2026-13-01", "0000-01-01", "2026-12-02T10:00:00+0100"]
    return values


def field_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for name, child in value.items():
            yield (*path, name)
            yield from field_paths(child, (*path, name))
    elif isinstance(value, list) and value:
        yield from field_paths(value[0], (*path, 0))


def spec_at(schema: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """The schema of the field at ``path``; ``{}`` for a field the schema does not have (an extra one)."""
    for step in path:
        schema = schema.get("items", {}) if isinstance(step, int) else schema.get("properties", {}).get(step, {})
    return schema


def mutations(topic: str) -> Iterator[tuple[str, bytes]]:
    """(what, bytes): one field changed, dropped, doubled or joined by an extra field, per case."""
    schema = CATALOG.value_schema(topic)
    assert schema is not None
    base = sample(schema)
    for path in field_paths(base):
        parent_path, name = path[:-1], path[-1]
        for replacement in [*candidates(spec_at(schema, path)), "<drop>", "<extra>"]:
            envelope = json.loads(json.dumps(base))
            parent = envelope
            for step in parent_path:
                parent = parent[step]
            if replacement == "<drop>":
                del parent[name]
            elif replacement == "<extra>":
                parent[f"{name}_extra"] = parent[name]
            else:
                parent[name] = replacement
            yield f"{'/'.join(map(str, path))} = {replacement!r}"[:80], json.dumps(envelope).encode(
                "utf-8", errors="surrogatepass")
    text = json.dumps(base)
    for name in ("event_type", "schema_version", "payload", "event_time"):  # duplicate keys, either one valid
        for bad in ('"zz"', "1.0", "true", "null"):
            yield f"duplicate {name}", ("{" + f'"{name}": {bad}, ' + text[1:]).encode()
            yield f"duplicate {name}", (text[:-1] + f', "{name}": {bad}' + "}").encode()


def test_the_paths_agree_on_every_field_of_every_topic() -> None:
    for topic in ENVELOPE_TOPICS:
        schema = CATALOG.value_schema(topic)
        assert schema is not None
        valid = json.dumps(sample(schema)).encode()
        assert assert_paths_agree(topic, b"k", valid), f"{topic}: the fast path refuses its own sample"
        cases = list(mutations(topic))
        for what, value in cases:
            try:
                assert_paths_agree(topic, b"k", value)
            except AssertionError as exc:
                raise AssertionError(f"{topic}: {what}: {exc}") from None
        assert len(cases) > 100, topic


# A hypothesis property: valid envelopes (boundary values included) with fields dropped, replaced, added --

@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    topic = draw(st.sampled_from(ENVELOPE_TOPICS))
    schema = CATALOG.value_schema(topic)
    assert schema is not None
    envelope = draw(valid_envelope(topic))
    for _ in range(draw(st.integers(0, 3))):
        paths = list(field_paths(envelope))
        path = draw(st.sampled_from(paths))
        parent = envelope
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "drop", "extra"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "extra":
            parent[draw(st.sampled_from(["extra", "Payload", "event_id ", "sku"]))] = draw(
                st.sampled_from(candidates({})))
        else:
            parent[path[-1]] = draw(st.sampled_from(candidates(spec_at(schema, path))))
    text = json.dumps(envelope, ensure_ascii=draw(st.booleans()))
    return topic, text.encode("utf-8", errors="surrogatepass")


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated())
def test_the_paths_agree_on_mutated_envelopes(case: tuple[str, bytes]) -> None:
    topic, value = case
    assert_paths_agree(topic, b"k", value)
