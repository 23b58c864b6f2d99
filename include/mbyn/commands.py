"""Sub-command groups beyond ``kafka`` and ``topics``: ``produce`` and ``consume`` dispatch to the
module registered for the name (``mbyn.sources.PRODUCERS``, ``mbyn.consumers.CONSUMERS``)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from mbyn.settings import Settings

Registrar = Callable[[Any], None]


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
        add_arguments = getattr(importlib.import_module(spec.module), "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parser)
        parser.set_defaults(handler=_dispatch(spec.module))


def register_consume(sub: Any) -> None:
    try:
        from mbyn.consumers import CONSUMERS
    except ImportError:
        return
    consume = sub.add_parser("consume", help="run one consumer (one copy of its group)")
    names = consume.add_subparsers(dest="consumer", required=True)
    for spec in CONSUMERS.values():
        parser = names.add_parser(spec.name, help=spec.help, description=spec.help)
        parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
        parser.add_argument("--idle-exit", type=float, default=None,
                            help="stop after S seconds without new records (tests, batch use)")
        add_arguments = getattr(importlib.import_module(spec.module), "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parser)
        parser.set_defaults(handler=_dispatch(spec.module))


REGISTRARS: list[Registrar] = [register_produce, register_consume]
