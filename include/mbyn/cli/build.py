"""``mbyn build [STEP ...]``: Kafka jars, the Java and Go producers (:mod:`mbyn.local.build`)."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.local.build import build_all
from mbyn.settings import Settings


def _build(settings: Settings, args: argparse.Namespace) -> int:
    build_all(settings, only=args.only or None)
    return 0


def register(sub: Any) -> None:
    """Add the ``build`` command."""
    p = sub.add_parser("build", help="resolve Kafka jars, build the Java and Go producers (idempotent)")
    p.add_argument("only", nargs="*", help="only these build steps")
    p.set_defaults(handler=_build)
