"""``mbyn build [STEP ...]``: Kafka jars, the Java and Go producers (:mod:`mbyn.local.build`)."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.settings import Settings


def _build(settings: Settings, args: argparse.Namespace) -> int:
    # The builders live in the producers' launchers: imported here, a producer that cannot be imported breaks
    # `mbyn build` and its own sub-command, not every mbyn command.
    from mbyn.local.build import build_all  # noqa: PLC0415 - imports worker modules (see above)

    build_all(settings, only=args.only or None)
    return 0


def register(sub: Any) -> None:
    """Add the ``build`` command."""
    p = sub.add_parser("build", help="resolve Kafka jars, build the Java and Go producers (idempotent)")
    p.add_argument("only", nargs="*", help="only these build steps")
    p.set_defaults(handler=_build)
