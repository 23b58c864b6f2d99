"""Dead letters as the consumers write them, for tests that need a record in the quarantine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mbyn.contracts.dead_letters import build_headers
from mbyn.contracts.envelope import make_envelope
from mbyn.kafka.producer import TopicProducer
from mbyn.settings import Settings

#: The original offset the dead letters claim: far past anything a test writes, so it never collides with a real
#: record's quarantine coordinates (consumer group, topic, partition, offset are unique).
FAR_OFFSET = 10**9


def dead_letter_an_order(settings: Settings, order_id: str, offset: int = FAR_OFFSET,
                         headers: Sequence[tuple[str, bytes]] = ()) -> dict[str, Any]:
    """A valid order the warehouse-loader once refused (``sink_rejected``), written to the dead-letters topic with
    the record's own ``headers`` and those a consumer adds; the order's envelope. A dead-letters consumer quarantines
    it."""
    prefix = settings.topic_prefix
    order = dict(make_envelope("order_placed", {
        "order_id": order_id, "customer_id": "C-1", "session_id": "S-1", "country": "DE", "currency": "EUR",
        "amount": 20.0, "items": [{"sku": "SKU-1", "category": "books", "quantity": 2, "unit_price": 10.0}]}, "shop"))
    producer = TopicProducer("test", settings)
    try:
        producer.send_raw(prefix + "dead-letters", json.dumps(order).encode(), order_id.encode(), build_headers(
            list(headers), reason="sink_rejected", error_class="SinkRejectedError",
            error_message="the warehouse said no", traceback_text="", topic=prefix + "orders", partition=0,
            offset=offset, timestamp_ms=None, consumer_group=prefix + "warehouse-loader"))
        producer.flush_or_raise()
    finally:
        producer.close()
    return order
