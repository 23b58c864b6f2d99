"""The trigger behind the incident DAG's asset watcher: fraud alerts from the ``alerts`` topic.

``AlertStreamTrigger`` is the provider's ``KafkaSharedStreamTrigger`` (one shared consumer in the
triggerer, offsets committed only after the asset event is stored: at-least-once) with a filter that
fires only for valid ``fraud_alert`` envelopes and fires them already parsed, so the asset event's
``extra["payload"]`` is the envelope as a dict rather than the raw JSON text.

Anything else on the topic — not JSON, not a valid envelope, another event type — is *rejected*: the
producer commits past it and, with ``dlq_topic`` set (the DAG sets the catalog's ``dead-letters``
topic), re-publishes its bytes there first. A bad record therefore never starts a DAG run and is never
lost silently.

The triggerer imports this class by its dotted path, so it lives in the installed package; restart
the triggerer (``mbyn airflow down && mbyn airflow up``) after changing it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import reject_shared_stream_event

log = logging.getLogger(__name__)

ALERT_EVENT_TYPE = "fraud_alert"


def parse_alert(value: Any) -> dict[str, Any] | None:
    """The envelope of a valid fraud alert from a raw Kafka value, or None with the reason logged."""
    from mbyn.contracts.envelope import validate
    from mbyn.errors import ContractError

    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        envelope = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        log.warning("alerts: not JSON, rejected: %s", exc)
        return None
    if not isinstance(envelope, dict) or envelope.get("event_type") != ALERT_EVENT_TYPE:
        log.warning("alerts: not a %s envelope, rejected", ALERT_EVENT_TYPE)
        return None
    try:
        validate("alerts", envelope)
    except ContractError as exc:
        log.warning("alerts: invalid envelope, rejected: %s", exc)
        return None
    return envelope


class AlertStreamTrigger(KafkaSharedStreamTrigger):
    """``KafkaSharedStreamTrigger`` that fires one event per valid fraud alert and rejects the rest."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            envelope = parse_alert(value)
            if envelope is None:
                reject_shared_stream_event()
                continue
            yield TriggerEvent(envelope)
