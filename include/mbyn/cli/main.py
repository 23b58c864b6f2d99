"""The ``mbyn`` command line: one entry point for the cluster, topics, producers, consumers and reports.

Every sub-command validates settings first, prints human-readable progress on stderr, and exits with
status 2 on a configuration error and 1 on any other mbyn error — with one line saying what to fix.
Each command group is a module of this package with ``register(sub)``; its handlers are
``handler(settings, args) -> exit status``.

A command that reads or acts on the pipeline opts in with ``set_defaults(reads_pipeline=True)``: it then uses
the running ``mbyn run``'s warehouse, security mode, topic prefix and bootstrap servers for what the user did
not set (``mbyn.run_state.use_running_pipeline``; one line on stderr says so). With ``principal=...``
(``VIEWER`` for the read-only commands, ``ADMIN`` for the ones that rewind or re-publish) it also
authenticates as that principal of the local secured cluster — unless the environment names a user.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mbyn.cli import airflow, build, dlq, kafka, postgres, replay, report, run, status, topics, warehouse, workers
from mbyn.errors import ConfigError, MbynError
from mbyn.kafka.security import as_principal
from mbyn.run_state import use_running_pipeline
from mbyn.settings import Settings, get_settings

#: The command groups, in the order ``mbyn --help`` lists them.
GROUPS = (kafka, topics, build, workers, warehouse, dlq, airflow, postgres, run, status, report, replay)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``mbyn`` parser (a worker's module is imported only when its sub-command is parsed)."""
    parser = argparse.ArgumentParser(prog="mbyn", description="mbyn — an M×N Kafka pipeline on one laptop.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen handler; the exit status: the handler's, 2 on a configuration error,
    1 on another mbyn error, 130 on Ctrl-C (argparse itself exits 2 on a usage error)."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        if getattr(args, "reads_pipeline", False):
            settings = _attach(settings, getattr(args, "principal", None))
        return int(args.handler(settings, args))
    except ConfigError as exc:
        print(f"mbyn: configuration error: {exc}", file=sys.stderr)
        return 2
    except MbynError as exc:
        print(f"mbyn: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mbyn: interrupted", file=sys.stderr)
        return 130


def _attach(settings: Settings, principal: str | None) -> Settings:
    """``settings`` completed from the running pipeline, as ``principal`` when the cluster is secured."""
    settings, note = use_running_pipeline(settings)
    if note:
        print(f"mbyn: {note}", file=sys.stderr, flush=True)
    return as_principal(settings, principal) if principal else settings


if __name__ == "__main__":
    sys.exit(main())
