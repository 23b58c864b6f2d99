"""Sub-command groups beyond ``kafka`` and ``topics``: ``produce`` and ``consume`` dispatch to the
module registered for the name (``mbyn.sources.PRODUCERS``, ``mbyn.consumers.CONSUMERS``)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from mbyn.errors import MbynError
from mbyn.settings import Settings

Registrar = Callable[[Any], None]


def _broken(module: str, error: ImportError) -> Callable[[Settings, argparse.Namespace], int]:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        raise MbynError(f"{module} cannot be imported: {error}")

    return handler


def _add_worker(parser: argparse.ArgumentParser, module: str) -> None:
    """Add a registered module's own options and its handler; a module that fails to import makes only
    its own sub-command fail (with the import error), not the whole CLI."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        parser.set_defaults(handler=_broken(module, exc))
        return
    add_arguments = getattr(loaded, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    parser.set_defaults(handler=_dispatch(module))


def _dispatch(module: str) -> Callable[[Settings, argparse.Namespace], int]:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(settings, args))

    return handler


def add_run_limits(parser: argparse.ArgumentParser) -> None:
    """--count/--rate/--duration, shared by every producer."""
    parser.add_argument("--count", type=int, default=None, help="stop after N records (default: source-specific)")
    parser.add_argument("--rate", type=float, default=None, help="records per second (default: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")


def register_produce(sub: Any) -> None:
    from mbyn.sources import PRODUCERS

    produce = sub.add_parser("produce", help="run one producer").add_subparsers(dest="producer", required=True)
    for spec in PRODUCERS.values():
        parser = produce.add_parser(spec.name, help=spec.help, description=spec.help)
        add_run_limits(parser)
        _add_worker(parser, spec.module)


def register_consume(sub: Any) -> None:
    from mbyn.consumers import CONSUMERS

    consume = sub.add_parser("consume", help="run one consumer (one copy of its group)")
    names = consume.add_subparsers(dest="consumer", required=True)
    for spec in CONSUMERS.values():
        parser = names.add_parser(spec.name, help=spec.help, description=spec.help)
        parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
        parser.add_argument("--idle-exit", type=float, default=None,
                            help="stop after S seconds without new records (tests, batch use)")
        _add_worker(parser, spec.module)


def register_warehouse(sub: Any) -> None:
    """``mbyn warehouse init``, ``mbyn sql`` and ``mbyn dlq list|replay`` (handlers live beside their code)."""
    from mbyn.consumers.dead_letters import register_commands as register_dlq
    from mbyn.warehouse.commands import register_commands as register_wh

    register_wh(sub)
    register_dlq(sub)


REGISTRARS: list[Registrar] = [register_produce, register_consume, register_warehouse]

from mbyn.orchestration.cli import register_airflow  # noqa: E402 - the `airflow` group lives beside its code

REGISTRARS.append(register_airflow)

from mbyn.local.postgres import register as register_postgres  # noqa: E402 - beside its code

REGISTRARS.append(register_postgres)

from mbyn.local.run import register as register_pipeline  # noqa: E402 - `run` / `down` live beside their code

REGISTRARS.append(register_pipeline)

from mbyn.status import register as register_status  # noqa: E402 - `mbyn status` lives beside its code

REGISTRARS.append(register_status)


def register_report_replay(sub: Any) -> None:
    """``mbyn report`` and ``mbyn replay`` (handlers live beside their code)."""
    from mbyn.replay import register_commands as register_replay
    from mbyn.reports.commands import register_commands as register_report

    register_report(sub)
    register_replay(sub)


REGISTRARS.append(register_report_replay)
