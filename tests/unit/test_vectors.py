"""The shared record vectors (tests/vectors/*.jsonl): the Python codec gives every vector its verdict.

The same files are checked by the Java payments service (orders) and the Go shipment tracker (payments),
so the three implementations of the contract agree record by record; see tests/vectors/README.md.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mbyn.contracts.codec import MAX_DEPTH, REASONS, decode_record, verdict
from mbyn.contracts.envelope import MAX_VALUE_BYTES
from mbyn.errors import PoisonRecordError

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load_vectors() -> list[dict[str, Any]]:
    vectors = []
    for path in sorted(VECTORS.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                vector = json.loads(line)
                vector["where"] = f"{path.name}:{number}"
                vectors.append(vector)
    return vectors


def raw(vector: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    key = None if vector["key"] is None else vector["key"].encode()
    if "value_b64" in vector:
        return key, base64.b64decode(vector["value_b64"])
    return key, None if vector["value"] is None else vector["value"].encode("utf-8", errors="surrogatepass")


ALL = load_vectors()


@pytest.mark.parametrize("vector", ALL, ids=[f"{v['where']} {v['name']}" for v in ALL])
def test_every_vector_gets_its_verdict(vector: dict[str, Any]) -> None:
    key, value = raw(vector)
    assert verdict(vector["topic"], key, value) == vector["verdict"], vector["name"]


def test_the_vectors_cover_every_decoding_verdict_on_several_topics() -> None:
    seen = {v["verdict"] for v in ALL}
    assert seen >= {"ok", "null_key", "null_value", "not_json", "unknown_schema_version", "schema_violation"}
    assert set(seen) - {"ok"} <= set(REASONS)
    assert len({v["topic"] for v in ALL}) >= 6 and len(ALL) >= 80


def test_oversize_and_depth_limits_are_exact() -> None:
    """Generated here rather than stored: half a megabyte and 512 levels are too big for a vector file."""
    padding = b" " * (MAX_VALUE_BYTES - 2)
    assert verdict("clickstream", b"k", b"[" + padding + b"]") == "schema_violation"  # exactly the limit
    assert verdict("clickstream", b"k", b"[" + padding + b" ]") == "oversize"
    assert verdict("clickstream", b"k", b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == "schema_violation"
    assert verdict("clickstream", b"k", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)) == "not_json"
    assert verdict("clickstream", b"k", b"[" * 200_000 + b"]" * 200_000) == "not_json"


def test_a_verdict_is_only_ever_a_poison_record_error() -> None:
    for vector in ALL:
        key, value = raw(vector)
        try:
            decode_record(vector["topic"], key, value)
        except PoisonRecordError as exc:
            assert exc.reason in REASONS
