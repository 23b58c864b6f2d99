"""Command-line options as data: what a worker accepts, declared without knowing the parser.

A worker module (``mbyn produce NAME`` / ``mbyn consume NAME``) declares ``OPTIONS: tuple[Option, ...]`` and
``run(settings, args)``; the CLI (``mbyn.cli``) adds each option to the worker's sub-command with
``parser.add_argument(*option.flags, **option.kwargs)`` and calls ``run`` with the parsed ``args``. The options
every producer or consumer shares are declared once here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol


class Args(Protocol):
    """The parsed options of one command: each option is an attribute (``--idle-exit`` → ``args.idle_exit``)."""

    def __getattr__(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Option:
    """One option: its flags (``("--count",)``, or a positional name) and the keyword arguments of the parser's
    ``add_argument`` (``type``, ``default``, ``help``, ``choices``, ``action``, ``metavar`` ...)."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


def option(*flags: str, **kwargs: Any) -> Option:
    """``option("--rate", type=float, default=None, help=...)``: the arguments of ``add_argument``, kept."""
    if not flags:
        raise ValueError("an option needs at least one flag or a positional name")
    return Option(tuple(flags), MappingProxyType(dict(kwargs)))


#: --count/--rate/--duration: every ``mbyn produce NAME`` accepts them (batch producers refuse the ones that
#: make no sense for them, with a message).
RUN_LIMITS: tuple[Option, ...] = (
    option("--count", type=int, default=None, help="stop after N records (default: source-specific)"),
    option("--rate", type=float, default=None, help="records per second (default: as fast as possible)"),
    option("--duration", type=float, default=None, help="stop after S seconds"),
)

#: --duration/--idle-exit: every ``mbyn consume NAME`` accepts them.
CONSUME_LIMITS: tuple[Option, ...] = (
    option("--duration", type=float, default=None, help="stop after S seconds"),
    option("--idle-exit", type=float, default=None, help="stop after S seconds without new records (tests, batch use)"),
)

#: What every consumer run by the consumer runtime (``run_consumer_cli``) accepts beyond ``CONSUME_LIMITS``.
CONSUMER_OPTIONS: tuple[Option, ...] = (
    option("--batch-size", type=int, default=None, help="most records per batch (default: per consumer)"),
    option("--max-wait-ms", type=int, default=None,
           help="longest wait for a FIRST record; a batch is then handed over as soon as no more records are "
                "waiting (up to --batch-size), never held back to fill (default: per consumer; it also sets how "
                "often an idle consumer checks stop, --idle-exit and its timers)"),
    option("--instance-id", default=None,
           help="static group membership id: a restarted copy gets its partitions back at once"),
)
