"""One entry of the worker registries: ``mbyn.sources.PRODUCERS`` and ``mbyn.consumers.CONSUMERS``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSpec:
    """A producer or consumer that ``mbyn produce <name>`` / ``mbyn consume <name>`` can run.

    ``module`` is imported only when the worker runs (or its ``--help`` is shown), so listing the registry
    stays cheap; it defines ``run(settings, args)`` and optionally ``add_arguments(parser)``.
    """

    name: str
    module: str
    help: str
