"""The producer's contract check (``encode_valid``: typed check of the bytes it sends) agrees with ``validate``.

Its fast path may only accept what the JSON Schema path (``envelope.validate``) accepts; everything else goes
through ``validate`` itself. Checked on every JSON value of the shared vectors and on the codec tests' sweep
of every field of every topic (wrong types, boundary numbers, bad enums, impossible dates, dropped and extra
fields): same verdict, same bytes.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

from mbyn.contracts.envelope import encode, validate
from mbyn.kafka.producer import encode_valid
from mbyn.sources.generator import shop_events
from tests.unit.test_hostile_properties import ENVELOPE_TOPICS
from tests.unit.test_typed_decode import mutations
from tests.unit.test_vectors import ALL, raw


def outcome(check: Any, topic: str, value: Any) -> str:
    try:
        check(topic, value)
    except Exception as exc:  # noqa: BLE001 - the verdict is the exception's type, compared between the paths
        return type(exc).__name__
    return "ok"


def assert_agree(topic: str, value: Any) -> None:
    reference = outcome(lambda t, v: (validate(t, v), encode(v)), topic, value)
    assert outcome(encode_valid, topic, value) == reference, (topic, value)
    if reference == "ok":
        assert encode_valid(topic, value) == encode(value)


def cases() -> list[tuple[str, bytes]]:
    out = [(v["topic"], raw(v)[1]) for v in ALL if v["topic"] in ENVELOPE_TOPICS]
    for topic in ENVELOPE_TOPICS:
        out += [(topic, value) for _, value in mutations(topic)]
    return [(t, v) for t, v in out if v is not None]


def test_the_producer_check_agrees_with_validate() -> None:
    checked = 0
    for topic, data in cases():
        try:
            value = json.loads(data)
        except ValueError:
            continue  # not JSON: nothing a producer could hold
        assert_agree(topic, value)
        checked += 1
    assert checked > 500


def test_the_generator_takes_the_fast_path() -> None:
    for record in islice(shop_events(seed=5), 2000):
        assert record.value is not None
        assert encode_valid(record.topic, record.value) == encode(record.value)
