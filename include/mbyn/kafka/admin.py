"""Make the cluster match the topic catalog: create missing topics, raise partition counts, set configs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from mbyn.catalog import Catalog, Topic, load_catalog
from mbyn.errors import MbynError
from mbyn.kafka.clients import admin_client
from mbyn.kafka.security import apply_acls
from mbyn.settings import Settings, get_settings


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str  # created | partitions-raised | config-updated | unchanged
    detail: str = ""


def broker_count(client: AdminClient) -> int:
    return len(client.list_topics(timeout=10).brokers)


def replication_for(topic: Topic, brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and min.insync.replicas: the catalog's, or 3/2 on three brokers, 1/1 on one."""
    rf = topic.replication or (3 if brokers >= 3 else 1)
    rf = min(rf, brokers)
    extra = {"min.insync.replicas": "2"} if rf >= 3 else {"min.insync.replicas": "1"}
    return rf, extra


def apply_topics(settings: Settings | None = None, catalog: Catalog | None = None,
                 names: list[str] | None = None) -> list[TopicChange]:
    """Create missing catalog topics, raise partition counts and set the catalog's topic configs on existing
    topics (e.g. a larger ``max.message.bytes`` added to the catalog later); never lowers partitions or
    deletes anything.

    Secured mode: then also creates the catalog's ACLs for the topic prefix (``security.apply_acls``,
    idempotent) — ``settings`` must authenticate as the admin principal.
    """
    settings = settings or get_settings()
    catalog = catalog or load_catalog()
    client = admin_client(settings)
    brokers = broker_count(client)
    existing = client.list_topics(timeout=10).topics
    wanted = [catalog.get(n) for n in names] if names else list(catalog.topics.values())
    changes: list[TopicChange] = []
    to_create = []
    to_grow = []
    expected: dict[str, int] = {}
    for topic in wanted:
        name = settings.topic_prefix + topic.name
        meta = existing.get(name)
        expected[name] = max(topic.partitions, len(meta.partitions) if meta is not None else 0)
        if meta is None:
            rf, extra = replication_for(topic, brokers)
            to_create.append(NewTopic(name, num_partitions=topic.partitions, replication_factor=rf,
                                      config={**extra, **topic.config}))
            changes.append(TopicChange(name, "created", f"{topic.partitions} partitions, replication {rf}"))
        elif len(meta.partitions) < topic.partitions:
            to_grow.append(NewPartitions(name, topic.partitions))
            changes.append(TopicChange(name, "partitions-raised", f"{len(meta.partitions)} → {topic.partitions}"))
        else:
            changes.append(TopicChange(name, "unchanged", f"{len(meta.partitions)} partitions"))
    failures = []
    existed: set[str] = set()
    for futures in (client.create_topics(to_create, operation_timeout=30) if to_create else {},
                    client.create_partitions(to_grow, operation_timeout=30) if to_grow else {}):
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - KafkaException carries the broker's reason
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    existed.add(name)  # metadata lagged or a concurrent apply won the race: same result
                    continue
                failures.append(f"{name}: {exc}")
    if failures:
        raise MbynError("topic changes failed:\n  " + "\n  ".join(failures))
    changes = [TopicChange(c.topic, "unchanged", "already existed") if c.topic in existed else c for c in changes]
    _wait_visible(client, expected)
    updated = _update_configs(client, [(settings.topic_prefix + t.name, t.config) for t in wanted
                                       if settings.topic_prefix + t.name in existing])
    changes = [TopicChange(c.topic, "config-updated", ", ".join(updated[c.topic]))
               if c.action == "unchanged" and c.topic in updated else c for c in changes]
    if settings.security == "scram":
        apply_acls(settings, catalog)
    return changes


def _update_configs(client: AdminClient, topics: list[tuple[str, Mapping[str, str]]]) -> dict[str, list[str]]:
    """Set the catalog's config entries that differ on existing topics; returns ``topic → ["key=value", …]``."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name, config in topics if config]
    if not resources:
        return {}
    wanted = dict(topics)
    changed: dict[str, list[str]] = {}
    to_alter = []
    for resource, future in client.describe_configs(resources).items():
        current = future.result()
        diff = {k: str(v) for k, v in wanted[resource.name].items()
                if k not in current or current[k].value != str(v)}
        if diff:
            changed[resource.name] = [f"{k}={v}" for k, v in sorted(diff.items())]
            to_alter.append(ConfigResource(ConfigResource.Type.TOPIC, resource.name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in diff.items()]))
    for future in (client.incremental_alter_configs(to_alter).values() if to_alter else []):
        future.result()
    return changed


def _wait_visible(client: AdminClient, partitions: dict[str, int], timeout_s: float = 30.0) -> None:
    """Wait until the metadata shows every topic with its partitions, so callers (watchers, tests, consumers
    subscribing right away) never see a topic that was just created as missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = client.list_topics(timeout=10).topics
        missing = [name for name, count in partitions.items()
                   if name not in topics or len(topics[name].partitions) < count]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise MbynError(f"topics not visible in the cluster metadata after {timeout_s:.0f}s: {missing}")
        time.sleep(0.2)


def delete_topics(names: list[str], settings: Settings | None = None) -> None:
    """Delete physical topics (tests and `mbyn topics delete`)."""
    client = admin_client(settings)
    for future in client.delete_topics(names, operation_timeout=30).values():
        future.result()
