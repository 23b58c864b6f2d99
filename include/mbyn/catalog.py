"""The topic catalog (``include/topics.yaml``): topic settings and message schemas, loaded once."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from mbyn.errors import CatalogError
from mbyn.settings import INCLUDE_DIR, get_settings

CATALOG_FILE = INCLUDE_DIR / "topics.yaml"


@dataclass(frozen=True)
class Topic:
    """One catalog entry. ``name`` is the logical name; ``physical`` adds the configured prefix."""

    name: str
    description: str
    partitions: int
    replication: int | None  # None = "auto": 1 on one node, 3 on three
    config: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    event_types: tuple[str, ...] = ()
    payload_schema: dict[str, Any] | None = None
    writers: tuple[str, ...] = ()  # services allowed to write (secured mode ACLs)
    readers: tuple[str, ...] = ()  # services allowed to read, each with its own consumer group

    @property
    def physical(self) -> str:
        return get_settings().topic_prefix + self.name

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")

    def value_schema(self, envelope: dict[str, Any]) -> dict[str, Any] | None:
        """The full JSON Schema of a message value: the envelope with this topic's payload and event types."""
        if self.payload_schema is None:
            return None
        schema = copy.deepcopy(envelope)
        schema["properties"]["payload"] = self.payload_schema
        schema["properties"]["event_type"] = {"type": "string", "enum": list(self.event_types)}
        return schema


@dataclass(frozen=True)
class Catalog:
    """All topics plus the envelope schema shared by every message."""

    envelope_schema: dict[str, Any]
    schema_version: int
    topics: dict[str, Topic]

    def get(self, name: str) -> Topic:
        try:
            return self.topics[name]
        except KeyError:
            raise CatalogError(f"unknown topic {name!r}; the catalog has: {', '.join(sorted(self.topics))}") from None

    def by_physical(self, physical: str) -> Topic:
        """Find the catalog entry for a physical topic name (with the configured prefix)."""
        for topic in self.topics.values():
            if topic.physical == physical:
                return topic
        raise CatalogError(f"topic {physical!r} is not in the catalog")

    def value_schema(self, name: str) -> dict[str, Any] | None:
        return self.get(name).value_schema(self.envelope_schema)


def parse_catalog(document: dict[str, Any], origin: str = "catalog") -> Catalog:
    """Build a Catalog from the parsed YAML document, checking every field it relies on."""
    try:
        envelope = document["envelope"]
        raw_topics = document["topics"]
    except (KeyError, TypeError):
        raise CatalogError(f"{origin}: needs top-level 'envelope' and 'topics'") from None
    topics: dict[str, Topic] = {}
    for name, spec in raw_topics.items():
        where = f"{origin}: topic {name!r}"
        if not isinstance(spec, dict):
            raise CatalogError(f"{where}: must be a mapping")
        partitions = spec.get("partitions")
        if not isinstance(partitions, int) or not 1 <= partitions <= 1000:
            raise CatalogError(f"{where}: partitions must be an integer 1..1000, got {partitions!r}")
        replication = spec.get("replication", "auto")
        if replication != "auto" and (not isinstance(replication, int) or replication < 1):
            raise CatalogError(f"{where}: replication must be 'auto' or a positive integer, got {replication!r}")
        config = {str(k): str(v) for k, v in (spec.get("config") or {}).items()}
        access = {}
        for field_name in ("writers", "readers"):
            names = spec.get(field_name) or []
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise CatalogError(f"{where}: {field_name} must be a list of service names, got {names!r}")
            access[field_name] = tuple(names)
        topics[name] = Topic(
            name=name,
            description=str(spec.get("description", "")),
            partitions=partitions,
            replication=None if replication == "auto" else replication,
            config=config,
            key=spec.get("key"),
            event_types=tuple(spec.get("event_types") or ()),
            payload_schema=spec.get("payload"),
            writers=access["writers"],
            readers=access["readers"],
        )
    return Catalog(envelope_schema=envelope["schema"], schema_version=int(envelope["schema_version"]), topics=topics)


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """Load and check the catalog file (cached per path)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read topic catalog {path}: {exc}") from exc
    return parse_catalog(document, origin=str(path))
