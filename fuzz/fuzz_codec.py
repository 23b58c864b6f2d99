"""Coverage-guided fuzz target (atheris / libFuzzer) for the record codec and the dead-letter headers.

Invariants, for any input:

* ``decode_record(topic, key, value)`` returns an envelope or ``None`` (a tombstone), or raises
  ``PoisonRecordError`` with one of the documented reasons — never anything else;
* an accepted envelope encodes back to JSON (it holds nothing JSON cannot carry);
* ``parse_headers(headers)`` never raises, and its fields fit their quarantine columns.

Input layout: byte 0 picks the catalog topic, byte 1 holds flags (bit 0: null key, bit 1: null value), the
rest is the value. The headers for ``parse_headers`` are the value's lines, ``name=value`` each (a line
without ``=`` is a header with a null value), so the fuzzer steers both from one input.

Run ``make fuzz`` (``FUZZ_SECONDS``, default 60): the corpus grows in ``var/fuzz/corpus`` (seeded from
``tests/vectors/*.jsonl`` when empty) and a failing input is written to ``var/fuzz/crashes/``; replay one
with ``.venv/bin/python fuzz/fuzz_codec.py var/fuzz/crashes/<file>``.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from mbyn.catalog import load_catalog
    from mbyn.contracts.codec import REASONS, decode_record
    from mbyn.contracts.dead_letters import MAX_NAME, MAX_REASON, parse_headers
    from mbyn.contracts.envelope import encode
    from mbyn.errors import PoisonRecordError

TOPICS = tuple(load_catalog().topics)
VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def headers_of(data: bytes) -> list[tuple[str, bytes | None]]:
    """The value's lines as headers: ``name=value``, or a null value for a line without ``=``."""
    out: list[tuple[str, bytes | None]] = []
    for line in data.split(b"\n")[:32]:
        name, sep, value = line.partition(b"=")
        out.append((name.decode("utf-8", errors="surrogateescape"), value if sep else None))
    return out


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    topic = TOPICS[data[0] % len(TOPICS)]
    key = None if data[1] & 1 else b"k"
    value = None if data[1] & 2 else data[2:]
    try:
        envelope = decode_record(topic, key, value)
    except PoisonRecordError as exc:
        if exc.reason not in REASONS:
            raise AssertionError(f"unknown reason {exc.reason!r}") from exc
    else:
        if envelope is not None:
            encode(envelope)
    info = parse_headers(headers_of(data[2:]))
    if len(info.reason) > MAX_REASON or (info.topic is not None and len(info.topic) > MAX_NAME):
        raise AssertionError(f"parse_headers returned a field longer than its column: {info}")
    if info.partition is not None and not 0 <= info.partition < 2**31:
        raise AssertionError(f"partition out of range: {info.partition}")


def seed(corpus: Path) -> int:
    """Write the shared vectors into an empty corpus folder as fuzz inputs; returns how many."""
    written = 0
    for path in sorted(VECTORS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            vector = json.loads(line)
            if vector.get("topic") not in TOPICS:
                continue
            value = base64.b64decode(vector["value_b64"]) if "value_b64" in vector else (
                None if vector.get("value") is None else vector["value"].encode())
            flags = (1 if vector.get("key") is None else 0) | (2 if value is None else 0)
            (corpus / f"seed-{written:04d}").write_bytes(bytes([TOPICS.index(vector["topic"]), flags]) + (value or b""))
            written += 1
    return written


def main() -> None:
    for arg in sys.argv[1:]:
        folder = Path(arg)
        if not arg.startswith("-") and folder.is_dir() and not any(folder.iterdir()):
            print(f"seeded {folder} with {seed(folder)} vectors from {VECTORS}", file=sys.stderr)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
