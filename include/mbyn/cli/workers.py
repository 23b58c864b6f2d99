"""``mbyn produce NAME`` and ``mbyn consume NAME``: one sub-command per worker of :mod:`mbyn.workers`.

A worker's module is imported only when its sub-command is chosen (to run it or show its ``--help``): its
``OPTIONS`` are added to the sub-command then, and its ``run(settings, args)`` is the handler. So listing
the workers stays cheap, and a module that fails to import breaks only its own sub-command (which then
fails with the import error), not the whole CLI.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mbyn.errors import MbynError
from mbyn.options import CONSUME_LIMITS, RUN_LIMITS, Option
from mbyn.settings import Settings
from mbyn.workers import Worker, consumers, producers

Handler = Callable[[Settings, argparse.Namespace], int]


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """``parser.add_argument`` for each declared option."""
    for opt in options:
        parser.add_argument(*opt.flags, **opt.kwargs)


def _broken(module: str, error: ImportError) -> Handler:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        raise MbynError(f"{module} cannot be imported: {error}")

    return handler


def _dispatch(module: str) -> Handler:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(settings, args))

    return handler


class WorkerParser(argparse.ArgumentParser):
    """The parser of one worker's sub-command: the worker module's ``OPTIONS`` join it the first time it
    parses or formats its help — the only moment the module is imported."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module
        if module is not None:
            self.set_defaults(handler=_dispatch(module))

    def load(self) -> None:
        """Import the worker module (once) and add its options; on ImportError the handler reports it."""
        module, self._module = self._module, None
        if module is None:
            return
        try:
            loaded = importlib.import_module(module)  # the lazy import this class exists for
        except ImportError as exc:
            self.set_defaults(handler=_broken(module, exc))
            return
        add_options(self, getattr(loaded, "OPTIONS", ()))

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self.load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.load()
        return super().format_help()


def _add_workers(sub: Any, verb: str, dest: str, help: str, workers: Iterable[Worker],
                 limits: tuple[Option, ...]) -> None:
    names = sub.add_parser(verb, help=help).add_subparsers(dest=dest, required=True, parser_class=WorkerParser)
    for worker in workers:
        parser = names.add_parser(worker.name, help=worker.help, description=worker.help, module=worker.module)
        add_options(parser, limits)


def register(sub: Any) -> None:
    """Add ``produce`` (every producer takes ``RUN_LIMITS``) and ``consume`` (every consumer ``CONSUME_LIMITS``)."""
    _add_workers(sub, "produce", "producer", "run one producer", producers(), RUN_LIMITS)
    _add_workers(sub, "consume", "consumer", "run one consumer (one copy of its group)", consumers(), CONSUME_LIMITS)
