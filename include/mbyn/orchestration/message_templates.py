"""Test-message templates: one small, recognisable envelope per catalog topic that may get test messages.

The ``topic_test_message`` DAG sends ``count`` of them (``mbyn.orchestration.actions.send_test_messages``). Each
send gets a fresh ``event_id``, ``event_time`` and business key: ``{uid}`` in a template's string values becomes
12 random hex digits, ``{now}`` the current time — so every test record is a new row downstream, not an update
of a real one. Test records are marked: country ``ZZ`` (user-assigned in ISO 3166, never a real shop country),
ids starting ``test-``, the envelope's ``source`` ``test-message`` and the Kafka header ``mbyn.test_message``.

They flow through the pipeline like real records: a test order is paid by the payments service, converted by
the order-enricher, counted by the sales-aggregator (under country ZZ) and loaded into the warehouse.

A topic gets a template only when the Airflow principal may write it (``airflow`` in the catalog's ``writers``:
the secured mode's ACLs say the same) and a test record cannot change real data; ``refusal`` says why another
topic has none.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

from mbyn.catalog import Catalog
from mbyn.contracts.envelope import Envelope, make_envelope, utc_now_iso

#: The envelope's ``source`` of every test message (and the producer's ``source`` header).
SOURCE = "test-message"
#: The Kafka header that marks a test message (value ``true``).
HEADER = "mbyn.test_message"
#: The principal (catalog writer) the Airflow tasks write as.
WRITER = "airflow"


@dataclass(frozen=True)
class Template:
    """An event type and a payload whose string values may hold ``{uid}`` and ``{now}``."""

    event_type: str
    payload: dict[str, Any]

    def envelope(self) -> Envelope:
        """A fresh envelope: new event id, event time and ``{uid}`` / ``{now}`` filled in."""
        now = utc_now_iso()
        uid = uuid.uuid4().hex[:12]
        return make_envelope(self.event_type, _fill(copy.deepcopy(self.payload), uid, now), SOURCE, event_time=now)


def _fill(value: Any, uid: str, now: str) -> Any:
    if isinstance(value, str):
        return value.replace("{uid}", uid).replace("{now}", now)
    if isinstance(value, dict):
        return {k: _fill(v, uid, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, uid, now) for v in value]
    return value


TEMPLATES: dict[str, Template] = {
    "clickstream": Template("page_view", {
        "session_id": "test-{uid}", "customer_id": "test-{uid}", "page": "/test-message", "country": "ZZ",
        "device": "desktop"}),
    "orders": Template("order_placed", {
        "order_id": "test-{uid}", "customer_id": "test-{uid}", "session_id": "test-{uid}", "country": "ZZ",
        "currency": "EUR", "amount": 1.0,
        "items": [{"sku": "test-sku", "category": "toys", "quantity": 1, "unit_price": 1.0}]}),
    "customers": Template("customer_upserted", {
        "customer_id": "test-{uid}", "name": "Test Message", "email": "test-{uid}@example.invalid", "country": "ZZ",
        "segment": "consumer", "updated_at": "{now}"}),
    "inventory": Template("stock_level", {
        "sku": "test-{uid}", "category": "toys", "quantity": 1, "unit_price": 1.0, "location": "test-message",
        "updated_at": "{now}"}),
}

#: Why a topic the Airflow principal may write has no template.
NO_TEMPLATE: dict[str, str] = {
    "fx-rates": "the topic is compacted and keyed by currency, so a test rate would replace the real rate of its "
                "currency (the catalog allows only real ISO currencies)",
}


def refusal(catalog: Catalog, topic: str) -> str:
    """Why catalog ``topic`` has no template ("" when it has one)."""
    if topic in TEMPLATES:
        return ""
    writers = catalog.get(topic).writers
    if WRITER not in writers:
        return (f"only {', '.join(writers) or 'nobody'} may write it (its writers in include/topics.yaml), "
                f"not the Airflow tasks")
    return NO_TEMPLATE.get(topic, "no test-message template is defined for it "
                                  "(mbyn.orchestration.message_templates.TEMPLATES)")


def templated_topics() -> list[str]:
    """The catalog topics that have a test-message template (what the view offers)."""
    return sorted(TEMPLATES)
