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
        ConsumerSpec("warehouse-loader", "mbyn.consumers.warehouse_loader",
                     "raw topics → warehouse tables, exactly once (offsets stored with the rows)"),
        ConsumerSpec("dead-letters", "mbyn.consumers.dead_letters",
                     "dead-letters topic → quarantine table, exactly once"),
    )
}
