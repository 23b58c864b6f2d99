"""The triggers behind the event-driven DAGs' asset watchers: one valid envelope of one event type, one event.

``EnvelopeStreamTrigger`` is the provider's ``KafkaSharedStreamTrigger`` (one shared consumer in the
triggerer, offsets committed only after the asset event is stored: at-least-once) with a filter that fires
only for valid envelopes of its event type and fires them already decoded, so the asset event's
``extra["payload"]`` is the envelope as a dict rather than the raw JSON text. Each subclass names its
``decode`` function (topic and event type):

* ``AlertStreamTrigger`` — fraud alerts (``fraud_alert``) on ``alerts``: the fraud incident DAG;
* ``LagAlertStreamTrigger`` — lag alerts (``lag_alert``) on ``ops-alerts``: the lag incident DAG.

Every value is judged by the codec (``mbyn.contracts.codec.decode_record``, through
``mbyn.orchestration.incidents.decode_event``): the same verdict the streaming consumers reach. Anything it
refuses — and an envelope of another event type — is **skipped**: logged with its reason and rejected
(``reject_shared_stream_event``), so the producer commits past it and no DAG run starts. The filter never
raises, whatever the bytes. It does not dead-letter: the warehouse-loader reads ``alerts`` too and
quarantines the same record with full ``dlq.*`` headers (reason, coordinates), while the provider's own
``dlq_topic`` would add a second copy without them (quarantined as reason ``unknown``, not replayable) — so
the DAGs leave ``dlq_topic`` unset. (``ops-alerts`` has one writer, the lag-monitor, which validates before
sending; a record it refuses is only logged.)

The shared stream hands the filter the record's value only, not its key: the ``null_key`` check is the
warehouse-loader's (it quarantines a key-less alert); the filter judges the value.

The triggerer imports these classes by their dotted path, so they live in the installed package; restart
the triggerer (``mbyn airflow down && mbyn airflow up``) after changing them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import reject_shared_stream_event

from mbyn.orchestration.incidents import decode_alert
from mbyn.orchestration.lag_alerts import decode_lag_alert


class EnvelopeStreamTrigger(KafkaSharedStreamTrigger):
    """``KafkaSharedStreamTrigger`` that fires one event per envelope ``decode`` accepts and skips the rest."""

    @staticmethod
    def decode(value: Any) -> dict[str, Any] | None:
        """The envelope ``value`` carries, or None (reason logged) to skip it; never raises."""
        raise NotImplementedError

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            envelope = self.decode(value)
            if envelope is None:
                reject_shared_stream_event()  # committed past, no run (see the module docstring)
                continue
            yield TriggerEvent(envelope)


class AlertStreamTrigger(EnvelopeStreamTrigger):
    """Fires one event per valid fraud alert (``alerts``)."""

    @staticmethod
    def decode(value: Any) -> dict[str, Any] | None:
        return decode_alert(value)


class LagAlertStreamTrigger(EnvelopeStreamTrigger):
    """Fires one event per valid lag alert (``ops-alerts``), raised or cleared."""

    @staticmethod
    def decode(value: Any) -> dict[str, Any] | None:
        return decode_lag_alert(value)
