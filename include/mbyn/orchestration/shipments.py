"""The hourly shipments load: what ``ConsumeFromTopicOperator`` applies to each batch of Kafka messages.

``load_shipment_batch(messages)`` decodes and validates each envelope, upserts the valid ones into the
warehouse table ``shipments`` keyed by ``event_id`` (an event already loaded is left as is), and sends
anything invalid — not JSON, not the contract — to the ``dead-letters`` topic with the reason in a
header. It returns only when both are durable: the operator commits the batch's offsets right after
(``commit_cadence="end_of_batch"``), so a crash before that replays the batch, and the ``event_id`` key
turns the replay into a no-op (at-least-once delivery, exactly-once rows).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from mbyn.errors import ContractError
from mbyn.settings import Settings, get_settings

log = logging.getLogger("mbyn.shipments")

SOURCE = "airflow-shipments-load"


def shipment_row(envelope: dict[str, Any]) -> dict[str, Any]:
    """The ``shipments`` row of one validated envelope."""
    from mbyn.warehouse.engine import parse_time, utc_now

    payload = envelope["payload"]
    return {"event_id": envelope["event_id"], "event_type": envelope["event_type"],
            "shipment_id": payload["shipment_id"], "order_id": payload["order_id"], "status": payload["status"],
            "carrier": payload["carrier"], "event_time": parse_time(envelope["event_time"]), "loaded_at": utc_now()}


def load_shipment_batch(messages: Sequence[Any], settings: Settings | None = None) -> dict[str, int]:
    """Upsert a batch of shipment messages into the warehouse; dead-letter the invalid ones.

    ``messages`` are confluent-kafka ``Message`` objects (anything with ``value()``, ``key()``,
    ``topic()``, ``partition()``, ``offset()``). Returns ``{"loaded": n, "dead_lettered": m}``.
    """
    from mbyn.contracts.envelope import validate
    from mbyn.kafka.producer import TopicProducer
    from mbyn.warehouse.engine import init_schema, sink_errors, upsert, warehouse_engine
    from mbyn.warehouse.schema import shipments

    settings = settings or get_settings()
    rows: list[dict[str, Any]] = []
    rejected: list[tuple[Any, str]] = []
    for message in messages:
        if message.error():
            raise ContractError(f"shipments load: Kafka error in batch: {message.error()}")
        try:
            envelope = json.loads(message.value())
            validate("shipments", envelope)
            rows.append(shipment_row(envelope))
        except (ValueError, TypeError, ContractError) as exc:
            rejected.append((message, f"{type(exc).__name__}: {exc}"[:500]))

    if rejected:
        producer = TopicProducer(SOURCE, settings)
        try:
            for message, reason in rejected:
                producer.send_raw(settings.topic_prefix + "dead-letters", message.value(), message.key(),
                                  [("source", SOURCE.encode()), ("error", reason.encode()),
                                   ("origin", f"{message.topic()}/{message.partition()}/{message.offset()}".encode())])
            producer.flush_or_raise()
        finally:
            producer.close()
        log.warning("shipments load: %d invalid message(s) sent to dead-letters; first: %s",
                    len(rejected), rejected[0][1])

    if rows:
        engine = warehouse_engine(settings)
        try:
            with sink_errors("shipments load"):
                init_schema(engine)
                with engine.begin() as conn:
                    upsert(conn, shipments, rows, keys=["event_id"], update=[])
        finally:
            engine.dispose()
    log.info("shipments load: %d row(s) upserted, %d dead-lettered", len(rows), len(rejected))
    return {"loaded": len(rows), "dead_lettered": len(rejected)}
