"""The incident watcher's filter and the incident DAG's event handling against hostile alert values.

``AlertStreamTrigger.filter_shared_stream`` runs in the triggerer: one exception there stops the watcher for
every subscriber. Each value below must be judged by the codec — fire for a valid ``fraud_alert``, skip
(reject) anything else — without raising. No broker, no Airflow database: the filter is driven directly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mbyn.contracts.envelope import MAX_VALUE_BYTES, make_envelope


def _alert(**overrides: Any) -> dict[str, Any]:
    payload = {"alert_id": f"A-{uuid.uuid4().hex[:12]}", "kind": "amount_mismatch", "severity": "high",
               "details": "paid 12.00 EUR for an order of 120.00 EUR", "order_id": "O-1", **overrides}
    return dict(make_envelope("fraud_alert", payload, "fraud-detector"))


def _bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


GOOD = [_alert(), _alert(severity="low")]
HOSTILE: dict[str, Any] = {
    "no value": None,
    "empty": b"",
    "not json": b"definitely not an alert",
    "invalid utf-8": b'{"a": "\xff\xfe"}',
    "byte-order mark": b"\xef\xbb\xbf" + _bytes(GOOD[0]),
    "NaN": b'{"schema_version": 1, "x": NaN}',
    "1e400": b'{"schema_version": 1e400}',
    "lone surrogate": b'{"schema_version": 1, "event_type": "fraud_alert", "x": "\\ud800"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "trailing garbage": _bytes(GOOD[0]) + b" }",
    "oversize": b'{"x": "' + b"a" * MAX_VALUE_BYTES + b'"}',
    "array": b"[1, 2, 3]",
    "schema_version 2": _bytes({**GOOD[0], "schema_version": 2}),
    "schema_version true": _bytes({**GOOD[0], "schema_version": True}),
    "another event type": _bytes({**GOOD[0], "event_type": "order_placed"}),
    "payload missing fields": _bytes({**GOOD[0], "payload": {"alert_id": "x"}}),
    "NUL in details": _bytes(_alert(details="a\u0000b")),
    "unknown severity": _bytes(_alert(severity="apocalyptic")),
    "31 February": _bytes({**GOOD[0], "event_time": "2026-02-31T10:00:00Z"}),
    "text, not bytes": "not json either",
    "an int, not bytes": 42,
}


def _run_filter(values: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], int]:
    """The payloads the filter fired and how many values it rejected."""
    from mbyn.orchestration import triggers

    rejected: list[int] = []
    monkeypatch.setattr(triggers, "reject_shared_stream_event", lambda: rejected.append(1))

    async def stream() -> AsyncIterator[Any]:
        for value in values:
            yield value

    async def collect() -> list[Any]:
        trigger = triggers.AlertStreamTrigger(topics=["alerts"], kafka_config_id="kafka_incidents")
        return [event.payload async for event in trigger.filter_shared_stream(stream())]

    return asyncio.run(collect()), len(rejected)


def test_the_filter_fires_valid_alerts_and_skips_every_hostile_value(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [_bytes(GOOD[0]), *HOSTILE.values(), _bytes(GOOD[1])]

    fired, rejected = _run_filter(values, monkeypatch)

    assert fired == GOOD, "only the two valid alerts start the incident DAG, decoded"
    assert rejected == len(HOSTILE), "every hostile value is rejected (committed past), none silently held"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_decode_alert_never_raises(name: str) -> None:
    from mbyn.orchestration.incidents import decode_alert

    assert decode_alert(HOSTILE[name]) is None


def test_incident_events_without_a_valid_alert_are_skipped_not_failed() -> None:
    """The incident task judges event payloads with the codec too: a bad one is skipped, the run goes on."""
    from mbyn.orchestration.incidents import alerts_from_events

    first, second = GOOD
    events = [{"payload": first},
              {"payload": json.dumps(second)},  # the provider's plain-trigger text form
              {"payload": {**first, "schema_version": 2}},
              {"payload": {"payload": {"alert_id": "A-x"}}},
              {"payload": "not json"},
              {"payload": None},
              {},
              None,
              "an event that is not a mapping"]

    assert alerts_from_events(events) == [first, second]
