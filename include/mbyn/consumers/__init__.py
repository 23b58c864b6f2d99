"""Consumers: one module per consumer group. Each module defines ``add_arguments(parser)`` (optional) and
``run(settings, args)``; ``mbyn consume <name>`` looks the name up in ``CONSUMERS``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    module: str
    help: str


CONSUMERS: dict[str, ConsumerSpec] = {
    spec.name: spec
    for spec in (
    )
}
