"""Producers: one module per source. Each module defines ``add_arguments(parser)`` and ``run(settings, args)``.

``mbyn produce <name>`` looks the name up in ``PRODUCERS``; batch producers also expose a plain function
that Airflow tasks call (see each module).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProducerSpec:
    name: str
    module: str
    help: str


PRODUCERS: dict[str, ProducerSpec] = {
    spec.name: spec
    for spec in (
        ProducerSpec("clickstream", "mbyn.sources.generator",
                     "Python/Faker generator: endless shop sessions → clickstream + orders"),
    )
}
