"""The trigger behind the incident DAG's asset watcher: fraud alerts from the ``alerts`` topic.

``AlertStreamTrigger`` is the provider's ``KafkaSharedStreamTrigger`` (one shared consumer in the
triggerer, offsets committed only after the asset event is stored: at-least-once) with a filter that
fires only for valid ``fraud_alert`` envelopes and fires them already decoded, so the asset event's
``extra["payload"]`` is the envelope as a dict rather than the raw JSON text.

Every value is judged by the codec (``mbyn.contracts.codec.decode_record``, through
``mbyn.orchestration.incidents.decode_alert``): the same verdict the streaming consumers reach. Anything it
refuses — and an envelope of another event type — is **skipped**: logged with its reason and rejected
(``reject_shared_stream_event``), so the producer commits past it and no DAG run starts. The filter never
raises, whatever the bytes. It does not dead-letter: the warehouse-loader reads ``alerts`` too and
quarantines the same record with full ``dlq.*`` headers (reason, coordinates), while the provider's own
``dlq_topic`` would add a second copy without them (quarantined as reason ``unknown``, not replayable) — so
the DAG leaves ``dlq_topic`` unset.

The shared stream hands the filter the record's value only, not its key: the ``null_key`` check is the
warehouse-loader's (it quarantines a key-less alert); the filter judges the value.

The triggerer imports this class by its dotted path, so it lives in the installed package; restart
the triggerer (``mbyn airflow down && mbyn airflow up``) after changing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import reject_shared_stream_event

from mbyn.orchestration.incidents import decode_alert


class AlertStreamTrigger(KafkaSharedStreamTrigger):
    """``KafkaSharedStreamTrigger`` that fires one event per valid fraud alert and skips the rest."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            envelope = decode_alert(value)
            if envelope is None:
                reject_shared_stream_event()  # committed past, no run; the warehouse-loader quarantines it
                continue
            yield TriggerEvent(envelope)
