"""Operator actions run as Airflow DAG runs: re-send quarantined records, send test messages to a topic.

The pipeline view triggers the DAGs ``quarantine_resend`` and ``topic_test_message`` (by Airflow's REST API, so
Airflow's auth manager decides who may, and every action is a logged, visible DAG run); the tasks call these
functions. Their inputs are DAG params a user typed, so each is checked again here — the params' JSON Schema
already refuses wrong types and bounds at trigger time — and a request that cannot be done as asked raises
``ActionError`` naming the param and what is allowed **before anything is sent**: no partial action.

* ``resend_quarantined`` — every id must exist, come from a catalog topic this process's Kafka principal may write
  (secured mode) and not have been re-sent already;
  then the records go back through ``mbyn dlq replay``'s own function (``mbyn.consumers.dead_letters.replay``),
  which marks them replayed once the broker acknowledged them.
* ``send_test_messages`` — ``count`` fresh envelopes from the topic's template
  (``mbyn.orchestration.message_templates``), each checked against the topic's contract before the first is sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import select

from mbyn.catalog import Catalog, load_catalog
from mbyn.consumers.dead_letters import replay
from mbyn.contracts.envelope import utc_now_iso
from mbyn.errors import ActionError, CatalogError, ContractError
from mbyn.kafka.inspect import open_admin, partitions_of
from mbyn.kafka.producer import TopicProducer, encode_valid
from mbyn.kafka.security import ADMIN
from mbyn.orchestration.action_params import parse_count, parse_ids, shown
from mbyn.orchestration.message_templates import HEADER, SOURCE, TEMPLATES, refusal
from mbyn.settings import Settings
from mbyn.warehouse import init_schema, warehouse_engine
from mbyn.warehouse.schema import quarantine

log = logging.getLogger("mbyn.actions")


# Re-send quarantined records -----------------------------------------------------------------------

def resend_quarantined(settings: Settings, ids_param: Any) -> dict[str, Any]:
    """Re-send the quarantined records ``ids_param`` names to their original topics; the summary.

    All or nothing: an id that does not exist, has no original topic, comes from a topic that is not in the
    catalog (under this installation's prefix) or that the principal may not write (secured mode: the ``airflow``
    principal writes only topics naming it among their writers) or was re-sent already fails the whole request.
    A record that several consumer groups quarantined is sent once (``resent`` can be smaller than ``ids``).
    """
    ids = parse_ids(ids_param)
    catalog = load_catalog()
    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(quarantine.c.id, quarantine.c.topic, quarantine.c.replayed_at)
                                .where(quarantine.c.id.in_(ids))).all()
    finally:
        engine.dispose()
    found = {row.id: row for row in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ActionError(f"ids: no quarantined record has id {shown(missing)}; nothing was re-sent")
    no_topic = [i for i in ids if found[i].topic is None]
    if no_topic:
        raise ActionError(f"ids: {shown(no_topic)} have no original topic (not dead-lettered by an mbyn consumer), "
                          "so there is nowhere to re-send them; nothing was re-sent")
    foreign = sorted({found[i].topic for i in ids if not _in_catalog(catalog, found[i].topic)})
    if foreign:
        raise ActionError(f"ids: records from {shown(foreign)}, which is not a catalog topic of this installation "
                          f"(topic prefix {settings.topic_prefix!r}); nothing was re-sent")
    denied = sorted({found[i].topic for i in ids if not _may_write(settings, catalog, found[i].topic)})
    if denied:  # refused by the ACLs mid-send, the records before would be sent but not marked: sent again later
        raise ActionError(f"ids: records from {shown(denied)}, which the Kafka principal {settings.kafka_username!r} "
                          "may not write (secured mode: the topic's writers in include/topics.yaml); re-send them "
                          "as admin with `mbyn dlq replay --topic T`; nothing was re-sent")
    done = [f"{i} (at {found[i].replayed_at})" for i in ids if found[i].replayed_at is not None]
    if done:
        raise ActionError(f"ids: {shown(done)} were re-sent already (a record that failed again was quarantined "
                          "again under a new id); nothing was re-sent")
    log.info("re-sending %d quarantined record(s): %s", len(ids), shown(ids))
    sent = replay(settings, ids=ids)
    return {"ids": ids, "resent": sent, "topics": dict(Counter(found[i].topic for i in ids))}


def _in_catalog(catalog: Catalog, physical: str) -> bool:
    try:
        catalog.by_physical(physical)
    except CatalogError:
        return False
    return True


def _may_write(settings: Settings, catalog: Catalog, physical: str) -> bool:
    """Whether this process's Kafka principal may write ``physical``: always in the open mode; in the secured
    mode the admin (a super user) or a writer the catalog names (the ACLs are made from those lists)."""
    user = settings.kafka_username
    return settings.security == "open" or user == ADMIN or user in catalog.by_physical(physical).writers


# Test messages ------------------------------------------------------------------------------------

def send_test_messages(settings: Settings, topic: Any, count: Any) -> dict[str, Any]:
    """Send ``count`` test messages from ``topic``'s template; the summary (event ids, keys, when sent).

    Every envelope is built and checked against the topic's contract before the first is sent; one that fails
    (a template the catalog no longer accepts) fails the run with the contract's reason and nothing is sent.
    """
    catalog = load_catalog()
    if not isinstance(topic, str) or topic not in catalog.topics:
        raise ActionError(f"topic: {repr(topic)[:80]} is not a catalog topic; choose one of "
                          f"{', '.join(sorted(catalog.topics))}; nothing was sent")
    why = refusal(catalog, topic)
    if why:
        raise ActionError(f"topic: {topic} has no test-message template: {why}; topics with one: "
                          f"{', '.join(sorted(TEMPLATES))}; nothing was sent")
    n = parse_count(count)
    spec = catalog.get(topic)
    envelopes = [TEMPLATES[topic].envelope() for _ in range(n)]
    for env in envelopes:
        try:
            encode_valid(topic, env)
        except ContractError as exc:
            raise ActionError(f"topic: the {topic} template fails the topic's contract: {exc}; nothing was sent") \
                from None
    if partitions_of(open_admin(settings), spec.physical) is None:
        raise ActionError(f"topic: {spec.physical} does not exist on {settings.bootstrap()} (run `mbyn topics "
                          "apply`); nothing was sent")
    keys = [str(env["payload"][spec.key]) if spec.key else None for env in envelopes]
    sent_at = utc_now_iso()
    producer = TopicProducer(SOURCE, settings)
    try:
        for env, key in zip(envelopes, keys, strict=True):
            producer.send(topic, env, key=key, headers={HEADER: "true"}, validated=True)
        producer.flush_or_raise()
    finally:
        producer.close()
    log.info("sent %d test message(s) to %s", n, spec.physical)
    return {"topic": spec.physical, "sent": n, "sent_at": sent_at, "event_ids": [e["event_id"] for e in envelopes],
            "keys": keys}
