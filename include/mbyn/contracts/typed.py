"""Typed decoders derived from the catalog's JSON Schemas: the codec's fast path, validated at C speed.

For every topic, ``typed_decoder(topic)`` turns the topic's value schema (the one ``envelope.validate``
checks, patterns already in ECMA-262's meaning) into msgspec types at load time — no hand-written class
per topic — and returns a ``msgspec.json.Decoder`` that parses and validates a value in one pass:

=========================================  ===================================================================
JSON Schema                                msgspec
=========================================  ===================================================================
``object`` + ``properties``/``required``   a ``Struct`` with ``forbid_unknown_fields``; optional fields default
+ ``additionalProperties: false``          to ``UNSET``; JSON names kept exactly (``rename``)
``string`` + ``minLength``/``maxLength``   ``Annotated[str, Meta(min_length, max_length, pattern)]`` (code
+ ``pattern``                              points, ``re.search`` — what the JSON Schema validators use)
``integer`` + bounds                       ``Annotated[int, Meta(ge, le)]``, bounds also clamped to int64
``number`` + bounds                        ``Annotated[int, ...] | Annotated[float, ...]`` (bools refused)
``array`` + ``items``/``minItems``/        ``Annotated[list[T], Meta(min_length, max_length)]``
``maxItems``
``enum`` / ``const`` of strings/integers   ``Literal[...]``
a list of types (``[string, "null"]``)     a union of the above
``format``, ``description``, ``title``     nothing: annotations, which the JSON Schema path does not check either
=========================================  ===================================================================

The typed decoder may refuse more than the JSON Schema (``1.0`` for an ``integer``, an enum value written as
another number type, an integer beyond int64), never less: it is only ever asked "is this certainly valid?",
and the codec sends everything it refuses down the full JSON Schema path for the verdict. A schema with any
keyword not in the table above — or an object that allows additional properties (msgspec would skip their
values unchecked) — has no typed decoder (``None``): that topic always takes the JSON Schema path.

What a schema cannot say stays in the codec: the ``schema_version`` rule (here: ``Literal[1]``, which refuses
``1.0`` and ``true`` as the codec does), calendar dates and UTC offsets, U+0000, depth.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

import msgspec

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import value_schema

#: Keywords that only annotate (neither path checks them: ``format`` is not asserted, see ``envelope``).
_ANNOTATIONS = frozenset({"format", "description", "title", "$comment", "examples", "default"})
_INT64 = (-(2**63), 2**63 - 1)
#: Integer bounds a float comparison holds exactly (beyond, msgspec and Python could round differently).
_EXACT = 2**53
#: A pattern with at most this many matching strings becomes a ``Literal`` (a hash lookup, ~8x cheaper).
_FINITE_LIMIT = 4096
#: Patterns read as a finite language: ``^``, then characters or classes of plain characters and ranges,
#: each repeated ``{n}`` times, then the end (``\Z``: ``envelope`` has turned ``$`` into it).
_FINITE = re.compile(r"\^((?:(?:\[(?:[A-Za-z0-9](?:-[A-Za-z0-9])?)+\]|[A-Za-z0-9_-])(?:\{\d{1,2}\})?)+)\\Z")
#: An unescaped ``$`` (``envelope`` has turned a final one into ``\Z``), as fastjsonschema finds it.
_DOLLAR = re.compile(r"(?<!\\)\$")
_FINITE_ATOM = re.compile(r"(\[(?:[A-Za-z0-9](?:-[A-Za-z0-9])?)+\]|[A-Za-z0-9_-])(?:\{(\d{1,2})\})?")


class _Inexpressible(Exception):
    """The schema uses something msgspec cannot check exactly: the topic keeps the JSON Schema path."""


@lru_cache(maxsize=64)
def typed_decoder(topic: str) -> msgspec.json.Decoder[Any] | None:
    """The one-pass parse-and-validate decoder of ``topic``'s values, or ``None`` when it has none.

    ``None`` for a topic whose values are not envelopes (no schema) and for one whose schema uses a keyword
    the table in the module docstring does not list.
    """
    schema = value_schema(topic)
    if schema is None or not _versioned(schema):
        return None
    try:
        return msgspec.json.Decoder(type_of(schema, _name(topic)))
    except (_Inexpressible, TypeError):  # TypeError: msgspec refuses the combination (e.g. a union it cannot tell)
        return None


def _versioned(schema: dict[str, Any]) -> bool:
    """True when the schema itself says the codec's ``schema_version`` rule (required, ``const`` = the catalog's).

    Then its ``Literal`` checks the rule exactly (an int, not ``1.0`` or ``true``); otherwise the rule and
    the schema differ and the topic keeps the full path, which applies both.
    """
    version = schema.get("properties", {}).get("schema_version")
    return ("schema_version" in schema.get("required", ()) and isinstance(version, dict)
            and type(version.get("const")) is int and version["const"] == load_catalog().schema_version)


def type_of(schema: Any, name: str) -> Any:
    """The msgspec type checking exactly what ``schema`` allows, or at most less; ``_Inexpressible`` if none."""
    if not isinstance(schema, dict):
        raise _Inexpressible(f"{name}: schema is not an object")
    keywords = set(schema) - _ANNOTATIONS
    if "enum" in schema or "const" in schema:
        return _literal(schema, keywords, name)
    kinds = schema.get("type")
    if isinstance(kinds, str):
        return _single(kinds, schema, keywords, name)
    if isinstance(kinds, list) and kinds and all(isinstance(k, str) for k in kinds) and len(set(kinds)) == len(kinds):
        if "object" in kinds or "array" in kinds:
            raise _Inexpressible(f"{name}: a union with object or array")
        kinds = [k for k in kinds if not (k == "integer" and "number" in kinds)]  # number covers integer
        members = [_single(kind, schema, keywords, name, shared=True) for kind in kinds]
        return Union[tuple(members)]  # noqa: UP007 - built from a runtime tuple  # type: ignore[valid-type]
    raise _Inexpressible(f"{name}: no type")


def _literal(schema: dict[str, Any], keywords: set[str], name: str) -> Any:
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    if keywords - {"enum", "const", "type"} or ("enum" in schema and "const" in schema):
        raise _Inexpressible(f"{name}: enum/const beside other keywords")
    if not isinstance(values, list) or not values:
        raise _Inexpressible(f"{name}: enum is not a non-empty list")
    kinds = schema.get("type")
    allowed = {kinds} if isinstance(kinds, str) else set(kinds) if isinstance(kinds, list) else None
    for value in values:
        kind = "string" if isinstance(value, str) else "integer" if type(value) is int else None
        if kind is None:
            raise _Inexpressible(f"{name}: enum value {value!r} is neither a string nor an integer")
        if allowed is not None and not ({kind, "number"} if kind == "integer" else {kind}) & allowed:
            raise _Inexpressible(f"{name}: enum value {value!r} does not have the schema's type")
    return Literal[tuple(values)]  # type: ignore[valid-type]


def _single(kind: str, schema: dict[str, Any], keywords: set[str], name: str, *, shared: bool = False) -> Any:
    """The type for one JSON Schema ``type``. ``shared``: the schema's keywords serve several types."""
    own = _KEYWORDS.get(kind)
    if own is None:
        raise _Inexpressible(f"{name}: type {kind!r}")
    unknown = keywords - own - {"type"} - (_ALL_SCALAR_KEYWORDS if shared else set())
    if unknown:
        raise _Inexpressible(f"{name}: keywords {sorted(unknown)} for type {kind!r}")
    if kind == "object":
        return _struct(schema, name)
    if kind == "array":
        if "items" not in schema:
            raise _Inexpressible(f"{name}: an array without items")
        meta = _meta(min_length=schema.get("minItems"), max_length=schema.get("maxItems"))
        return _annotated(list[type_of(schema["items"], name + "_item")], meta)  # type: ignore[misc]
    if kind == "string":
        meta = _meta(min_length=schema.get("minLength"), max_length=schema.get("maxLength"),
                     pattern=schema.get("pattern"))
        finite = None if shared else _finite_language(schema)
        return _annotated(str, meta) if finite is None else Literal[finite]  # type: ignore[valid-type]
    if kind == "integer":
        return _annotated(int, _int_bounds(schema, name))
    if kind == "number":
        return Union[_annotated(int, _int_bounds(schema, name)), _annotated(float, _float_bounds(schema, name))]  # noqa: UP007
    if kind == "boolean":
        return bool
    return None  # "null"


_NUMBER = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_STRING = frozenset({"minLength", "maxLength", "pattern"})
_KEYWORDS: dict[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": _STRING,
    "integer": _NUMBER,
    "number": _NUMBER,
    "boolean": frozenset(),
    "null": frozenset(),
}
_ALL_SCALAR_KEYWORDS = _NUMBER | _STRING


def _struct(schema: dict[str, Any], name: str) -> Any:
    if schema.get("additionalProperties") is not False:
        raise _Inexpressible(f"{name}: an object that allows additional properties")
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list) or not set(required) <= set(properties):
        raise _Inexpressible(f"{name}: properties/required are not what this translation reads")
    fields: list[Any] = []
    rename: dict[str, str] = {}
    for number, (key, spec) in enumerate(properties.items()):
        attribute = f"f{number}"  # any JSON name works, keywords and "a-b" included
        rename[attribute] = key
        typ = type_of(spec, f"{name}_{attribute}")
        if key in required:
            fields.append((attribute, typ))
        else:
            fields.append((attribute, Union[typ, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
    fields.sort(key=lambda field: len(field) == 3)  # required fields first, as a Struct needs
    return msgspec.defstruct(name, fields, rename=rename, forbid_unknown_fields=True, gc=False)


def _finite_language(schema: dict[str, Any]) -> tuple[str, ...] | None:
    """Every string a string schema allows, when its pattern says them all (``^[A-Z]{2}$``) and they are few."""
    pattern = schema.get("pattern")
    whole = _FINITE.fullmatch(pattern) if isinstance(pattern, str) else None
    if whole is None:
        return None
    choices: list[list[str]] = []
    for atom, repeat in _FINITE_ATOM.findall(whole.group(1)):
        chars = _characters(atom)
        if not chars:
            return None
        choices += [chars] * (1 if repeat == "" else int(repeat))
    if math.prod(len(c) for c in choices) > _FINITE_LIMIT:
        return None
    strings = tuple("".join(parts) for parts in itertools.product(*choices))
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    strings = tuple(s for s in strings if len(s) >= low and (high is None or len(s) <= high))
    compiled = re.compile(whole.string)  # the regular expression the full path applies agrees, string by string
    if not strings or not all(compiled.search(s) for s in strings):
        return None
    return strings


def _characters(atom: str) -> list[str]:
    """The characters one atom of ``_FINITE`` matches (``[]``: empty, a range backwards: empty)."""
    if not atom.startswith("["):
        return [atom]
    body, chars = atom[1:-1], []
    for start, end in re.findall(r"(.)(?:-(.))?", body):
        if end and ord(end) < ord(start):
            return []
        chars += [chr(c) for c in range(ord(start), ord(end or start) + 1)]
    return sorted(set(chars))


def _int_bounds(schema: dict[str, Any], name: str) -> msgspec.Meta:
    low, high = _bounds(schema, name)
    ge = _INT64[0] if low is None else max(_INT64[0], math.floor(low[0]) + 1 if low[1] else math.ceil(low[0]))
    le = _INT64[1] if high is None else min(_INT64[1], math.ceil(high[0]) - 1 if high[1] else math.floor(high[0]))
    if ge > le:
        raise _Inexpressible(f"{name}: no int64 integer is within the bounds")
    return msgspec.Meta(ge=ge, le=le)


def _float_bounds(schema: dict[str, Any], name: str) -> msgspec.Meta | None:
    low, high = _bounds(schema, name)
    for bound in (low, high):
        if bound is not None and abs(bound[0]) > _EXACT and type(bound[0]) is int:
            raise _Inexpressible(f"{name}: an integer bound beyond 2**53 compared with floats")
    return _meta(**({} if low is None else {"gt" if low[1] else "ge": float(low[0])}),
                 **({} if high is None else {"lt" if high[1] else "le": float(high[0])}))


def _bounds(schema: dict[str, Any], name: str) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """(lower, exclusive?), (upper, exclusive?), each ``None`` when absent; both keywords of a pair: inexpressible."""
    found: list[tuple[float, bool] | None] = []
    for inclusive, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        candidates = [(schema[k], k == exclusive) for k in (inclusive, exclusive) if k in schema]
        for value, _ in candidates:
            if type(value) not in (int, float) or not math.isfinite(value):
                raise _Inexpressible(f"{name}: bound {value!r} is not a finite number")
        if not candidates:
            found.append(None)
        elif len(candidates) == 1:
            found.append(candidates[0])
        else:
            raise _Inexpressible(f"{name}: both {inclusive} and {exclusive}")
    return found[0], found[1]


def _meta(**constraints: Any) -> msgspec.Meta | None:
    given = {k: v for k, v in constraints.items() if v is not None}
    for key in ("min_length", "max_length"):
        if key in given and (type(given[key]) is not int or given[key] < 0):
            raise _Inexpressible(f"{key} {given[key]!r} is not a non-negative integer")
    if "pattern" in given:
        try:
            re.compile(given["pattern"])
        except (re.error, TypeError):
            raise _Inexpressible(f"pattern {given['pattern']!r} is not a regular expression") from None
        if _DOLLAR.search(given["pattern"]):  # the compiled validator reads every such $ as \Z: not the same regex
            raise _Inexpressible(f"pattern {given['pattern']!r} has a $ that is not at the end")
    return msgspec.Meta(**given) if given else None


def _annotated(typ: Any, meta: msgspec.Meta | None) -> Any:
    return typ if meta is None else Annotated[typ, meta]


def _name(topic: str) -> str:
    return "".join(part.capitalize() for part in topic.replace("-", "_").split("_")) + "Value"
