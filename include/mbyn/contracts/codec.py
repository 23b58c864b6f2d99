"""The record codec: the bytes of one Kafka record → one verdict — an envelope, a tombstone, or a reason.

Every reader of a raw topic uses ``decode_record`` (the consumer runtime, ``mbyn status``, the pipeline
view, the Airflow tasks and triggers), so a record means the same thing everywhere. The Java payments
service and the Go shipment tracker implement the same rules; ``tests/vectors/*.jsonl`` holds the shared
valid and invalid vectors all three are checked against.

The checks, in order — the first that fails is the verdict (``PoisonRecordError.reason``):

1. ``null_key`` — the topic is keyed (``key:`` in the catalog) and the record has no key.
2. ``null_value`` — no value on a topic that is not compacted (on a compacted topic it is a tombstone:
   ``decode_record`` returns ``None``).
3. ``oversize`` — the value is longer than ``MAX_VALUE_BYTES``.
4. ``not_json`` — not one RFC 8259 JSON text in UTF-8: a byte-order mark, ``NaN``/``Infinity``, raw
   control characters in strings, trailing bytes, lone UTF-16 surrogate escapes, numbers beyond the
   float64 range (``1e400``, or an integer of 400 digits), nesting deeper than ``MAX_DEPTH``. Duplicate
   object keys: the last wins.
5. ``schema_violation`` if the value is not an object; then ``unknown_schema_version`` if its
   ``schema_version`` is not the catalog's integer (a missing one, ``1.0`` or ``true`` included); then
   ``schema_violation`` if the topic's JSON Schema refuses it, a date the pattern accepts is not on the
   calendar (2026-02-30, an offset of +00:60), a timestamp cannot be expressed in UTC, or a string holds
   U+0000 (PostgreSQL text cannot store it). JSON Schema's ``integer`` includes ``1.0``.

``decode_record`` raises ``PoisonRecordError`` and nothing else, whatever the bytes: an error of the
parser or validator that is not one of the above is reported as ``not_json`` / ``schema_violation``.

Two paths, one verdict. The fast path parses and validates a value in one pass with a msgspec decoder
derived from the topic's JSON Schema (``mbyn.contracts.typed``), then checks the calendar; a value it takes
is valid. Anything it refuses — and every value that may hold U+0000 or whose topic's schema msgspec cannot
express — goes down the full path above (JSON Schema), which gives the verdict and its reason: the JSON
Schema stays the contract, the fast path only answers "certainly valid" sooner (~2x per record). Both return the same
envelope (the untyped parse, so key order, ``1`` vs ``1.0`` and duplicate keys are as before).

Reason codes for failures after decoding (``sink_rejected``, ``unexpected_error``) are listed in
``REASONS`` too: the consumer runtime assigns them (see ``mbyn.consumers.runtime``).
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from mbyn.catalog import Catalog, load_catalog
from mbyn.contracts.envelope import MAX_VALUE_BYTES, check_calendar, validate
from mbyn.contracts.typed import typed_decoder
from mbyn.errors import ContractError, PoisonRecordError

#: Deepest nesting of arrays/objects a value may have (an envelope needs 4). Deeper is ``not_json``.
MAX_DEPTH = 512

#: Every reason a record can be dead-lettered for, with what it means (docs and ``mbyn dlq list`` use it).
REASONS: dict[str, str] = {
    "null_key": "the topic is keyed but the record has no key",
    "null_value": "the record has no value on a topic that is not compacted",
    "oversize": f"the value is longer than {MAX_VALUE_BYTES} bytes",
    "not_json": "the value is not UTF-8 JSON (or nests deeper than the limit)",
    "unknown_schema_version": "the envelope's schema_version is missing or not supported",
    "schema_violation": "the value does not satisfy the topic's JSON Schema",
    "sink_rejected": "the sink (the warehouse database) refused the row made from this record",
    "unexpected_error": "processing this record raised an error no other reason covers",
    "no_fx_rate": "no exchange rate arrived for the order's currency in time (order-enricher, sales-aggregator)",
}

_DECODER = msgspec.json.Decoder()
_FLOAT64_MAX = int(sys.float_info.max)


def decode_json(data: bytes) -> Any:
    """Parse one JSON text; ``PoisonRecordError("not_json")`` for anything that is not (rules above)."""
    try:
        value = _DECODER.decode(data)
    except RecursionError:
        raise PoisonRecordError("not_json", f"value nests deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise PoisonRecordError("not_json", f"value is not UTF-8: {exc}") from None
    except (msgspec.DecodeError, ValueError, OverflowError) as exc:  # ValidationError: "Number out of range"
        raise PoisonRecordError("not_json", f"value is not JSON: {exc}") from None
    return value


def depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0, ``[]`` is 1). Iterative: no recursion limit."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def _has_huge_int(value: Any) -> bool:
    """True when ``value`` holds an integer beyond the float64 range (msgspec reads any length of digits)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > _FLOAT64_MAX:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _has_nul(value: Any) -> bool:
    """True when any string in ``value`` (keys included) contains U+0000."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_envelope(topic: str, value: Any, catalog: Catalog | None = None, *, may_hold_nul: bool = True,
                   ) -> dict[str, Any]:
    """Step 5 of the module docstring for an already parsed value; returns it as the envelope.

    ``may_hold_nul=False`` skips the U+0000 search (the caller saw no ``\\u0000`` escape in the raw bytes).
    """
    try:
        return _check_envelope(topic, value, catalog or load_catalog(), may_hold_nul)
    except PoisonRecordError:
        # Only on the failure path: a valid envelope is 4 levels deep and its numbers have maxima.
        if depth(value) > MAX_DEPTH:
            raise PoisonRecordError("not_json", f"value nests deeper than {MAX_DEPTH} levels") from None
        if _has_huge_int(value):
            raise PoisonRecordError("not_json", "value holds a number beyond the float64 range") from None
        raise


def _check_envelope(topic: str, value: Any, catalog: Catalog, may_hold_nul: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PoisonRecordError("schema_violation", f"{topic}: value is a JSON {type(value).__name__}, "
                                "not an envelope object")
    version = value.get("schema_version")
    expected = catalog.schema_version
    if type(version) is not int or version != expected:  # True == 1 and 1.0 == 1 in Python: not here
        raise PoisonRecordError("unknown_schema_version",
                                f"{topic}: schema_version {_preview(version)} is not supported (expected {expected})")
    try:
        validate(topic, value)
    except ContractError as exc:
        raise PoisonRecordError("schema_violation", str(exc)) from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:  # a validator choking on the value
        raise PoisonRecordError("schema_violation", f"{topic}: value cannot be validated: "
                                f"{type(exc).__name__}: {exc}") from None
    if may_hold_nul and _has_nul(value):
        raise PoisonRecordError("schema_violation", f"{topic}: a string contains U+0000 (NUL), which the "
                                "warehouse cannot store")
    return value


def decode_record(topic: str, key: bytes | None, value: bytes | None,
                  catalog: Catalog | None = None) -> dict[str, Any] | None:
    """The verdict on one record of the logical catalog ``topic``: its envelope, ``None`` for a tombstone.

    Raises ``PoisonRecordError`` (``reason`` = the code) and nothing else.
    """
    default = load_catalog()
    catalog = catalog or default
    spec = catalog.get(topic)
    if spec.key is not None and key is None:
        raise PoisonRecordError("null_key", f"{topic}: records must have a key ({spec.key})")
    if value is None:
        if spec.compacted:
            return None  # tombstone: the key was deleted
        raise PoisonRecordError("null_value", f"{topic}: value is null on a non-compacted topic")
    if len(value) > MAX_VALUE_BYTES:
        raise PoisonRecordError("oversize", f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}")
    if catalog is default:  # the typed decoders check the default catalog's schema_version
        envelope = decode_typed(topic, value)
        if envelope is not None:
            return envelope
    return check_envelope(topic, decode_json(value), catalog, may_hold_nul=_may_hold_nul(value))


def decode_typed(topic: str, value: bytes) -> dict[str, Any] | None:
    """The fast path: the envelope when ``value`` is certainly a valid value of ``topic``, else ``None``.

    Valid: not oversize, no U+0000, and the topic's typed decoder (``mbyn.contracts.typed``) and the calendar
    take it. ``None`` says nothing about the value: the full path decides, and words the reason.
    """
    decoder = typed_decoder(topic)
    if decoder is None or len(value) > MAX_VALUE_BYTES or _may_hold_nul(value):
        return None
    try:
        decoder.decode(value)
        envelope: dict[str, Any] = _DECODER.decode(value)
        check_calendar(topic, envelope)
    except (msgspec.DecodeError, ContractError, ValueError, RecursionError, OverflowError):
        return None
    return envelope


def _may_hold_nul(value: bytes) -> bool:
    """JSON can only carry U+0000 as the escape ``\\u0000`` (a raw NUL byte is not JSON): look in the bytes.

    Valid records then skip the walk over every string. Most values hold no backslash at all, and a one-byte
    search (memchr) is ~10x cheaper than one for the six bytes.
    """
    return b"\\" in value and b"\\u0000" in value


def verdict(topic: str, key: bytes | None, value: bytes | None, catalog: Catalog | None = None) -> str:
    """``"ok"`` or the reason code — the form the shared vectors are written in."""
    try:
        decode_record(topic, key, value, catalog)
    except PoisonRecordError as exc:
        return exc.reason
    return "ok"


def _preview(value: Any, limit: int = 40) -> str:
    if isinstance(value, (dict, list)):  # repr() of one nested near the recursion limit raises RecursionError
        return f"(a JSON {'object' if isinstance(value, dict) else 'array'})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
