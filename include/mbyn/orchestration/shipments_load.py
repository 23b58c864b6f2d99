"""The hourly shipments load: what ``ConsumeFromTopicOperator`` applies to each batch of Kafka messages.

``load_shipment_batch(messages)`` keeps the consumer runtime's contract (``mbyn.consumers.runtime``) inside
an Airflow task — no record can fail the task, an outage always does:

* **Decode.** Every record goes through the codec (``mbyn.contracts.codec.decode_record``); a record it
  refuses is dead-lettered with the codec's reason (``not_json``, ``schema_violation``, ``null_key`` …).
* **Write.** The decoded shipments are upserted as the warehouse-loader upserts them — the same declaration
  (``mbyn.warehouse.rows.ROWS["shipments"]``: table ``shipments``, keyed by ``event_id``, first one kept) and
  the same ``upsert_records`` — in one transaction.
* **A failed write is classified by where it happens.** A ``SinkUnavailableError`` (database unreachable,
  locked), or any failure while an empty transaction fails too, is an outage: the error is raised, the task
  fails and Airflow retries it. Otherwise the batch is written again one record per transaction, and a record
  that fails alone is dead-lettered: ``sink_rejected`` when the database refused its row, ``unexpected_error``
  for anything else.
* **Dead letters** carry the original key, value and headers plus the ``dlq.*`` headers of
  ``mbyn.contracts.dead_letters`` (consumer group = the ``group.id`` of the task's Kafka connection), and are
  acknowledged by the broker (``flush_or_raise``) before the function returns.

The operator commits the batch's offsets only after this function returns (``commit_cadence="end_of_batch"``,
auto-commit off), so a raised error — an outage, the broker refusing the dead letters, a Kafka error in the
batch — commits nothing past the previous batch, and the retry re-reads this one. Re-reading is harmless:
rows keep the first version, and the quarantine keeps one row per (group, topic, partition, offset).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mbyn.consumers.contract import Record
from mbyn.consumers.dead_letter_sender import dead_letter_producer, send_dead_letter
from mbyn.contracts.codec import decode_record
from mbyn.errors import BrokerUnavailableError, SinkUnavailableError
from mbyn.kafka.consumer import message_headers
from mbyn.orchestration.connections import KAFKA_CONN_ID, connection_group_id
from mbyn.settings import Settings, get_settings
from mbyn.warehouse.engine import init_schema, sink_errors, warehouse_engine
from mbyn.warehouse.rows import ROWS, upsert_records

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger("mbyn.shipments")

#: The logical catalog topic this load reads.
TOPIC = "shipments"
SOURCE = "airflow-shipments-load"


def load_shipment_batch(messages: Sequence[Any], kafka_config_id: str = KAFKA_CONN_ID,
                        settings: Settings | None = None) -> dict[str, int]:
    """Upsert one batch of ``shipments`` messages into the warehouse; dead-letter what cannot be loaded.

    ``messages`` are confluent-kafka ``Message`` objects; ``kafka_config_id`` is the Airflow connection the
    operator consumes with (its ``group.id`` goes into the dead letters). Returns
    ``{"loaded": n, "dead_lettered": m}``; raises on an outage (see the module docstring).
    """
    settings = settings or get_settings()
    records = [_record(message) for message in messages]
    good: list[Record] = []
    poison: list[tuple[Record, BaseException]] = []
    for record in records:
        try:
            record.data = decode_record(TOPIC, record.key, record.value)
        except Exception as exc:  # noqa: BLE001 - PoisonRecordError by contract; anything else is the record's too
            poison.append((record, exc))
            continue
        if record.data is not None:  # shipments is not compacted, so the codec returns no tombstone
            good.append(record)
    refused = _write(good, settings) if good else []
    failed = poison + refused
    if failed:
        _dead_letter(failed, connection_group_id(kafka_config_id), settings)
    loaded = len(good) - len(refused)
    log.info("shipments load: %d record(s) loaded, %d dead-lettered", loaded, len(failed))
    return {"loaded": loaded, "dead_lettered": len(failed)}


def _record(message: Any) -> Record:
    """A runtime ``Record`` of one consumed message; a Kafka error in the batch fails the task."""
    error = message.error()
    if error is not None:
        raise BrokerUnavailableError(f"shipments load: Kafka error in the batch: {error}")
    timestamp_type, timestamp = message.timestamp()
    return Record(topic=TOPIC, physical_topic=message.topic() or "", partition=int(message.partition() or 0),
                  offset=int(message.offset() or 0), key=message.key(), value=message.value(),
                  headers=message_headers(message),
                  timestamp_ms=timestamp if timestamp_type != 0 else None)  # 0 = TIMESTAMP_NOT_AVAILABLE


def _write(records: list[Record], settings: Settings) -> list[tuple[Record, BaseException]]:
    """Write ``records`` in one transaction, else one by one; the records refused alone, with their errors."""
    engine = warehouse_engine(settings)
    try:
        with sink_errors("shipments load: warehouse"):
            init_schema(engine)
        try:
            _write_in_one_transaction(engine, records)
            return []
        except SinkUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified by where it happens: the probe below decides
            _raise_unless_warehouse_answers(engine, exc)
        log.warning("shipments load: a batch of %d failed while the warehouse answers; writing it record by "
                    "record to find the culprit(s)", len(records))
        refused: list[tuple[Record, BaseException]] = []
        for record in records:
            try:
                _write_in_one_transaction(engine, [record])
            except SinkUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - this record's own failure, unless the warehouse is gone
                _raise_unless_warehouse_answers(engine, exc)
                refused.append((record, exc))
        return refused
    finally:
        engine.dispose()


def _write_in_one_transaction(engine: Engine, records: list[Record]) -> None:
    with sink_errors("shipments load: warehouse"), engine.begin() as conn:
        upsert_records(conn, ROWS[TOPIC], records)


def _raise_unless_warehouse_answers(engine: Engine, error: Exception) -> None:
    """Re-raise ``error`` when an empty transaction fails too: then it is an outage, not the data's fault."""
    try:
        with sink_errors("shipments load: warehouse"), engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as probe:  # any failure of the probe means "not the data"
        raise error from probe


def _dead_letter(failed: list[tuple[Record, BaseException]], group: str, settings: Settings) -> None:
    """Send each record to ``dead-letters`` with the ``dlq.*`` headers; return once the broker acknowledged all."""
    producer = dead_letter_producer(SOURCE, settings)
    try:
        for record, error in failed:
            send_dead_letter(producer, record, error, group)
        producer.flush_or_raise()
    finally:
        producer.close()
