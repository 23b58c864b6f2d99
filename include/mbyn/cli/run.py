"""``mbyn run`` and ``mbyn down``: the whole pipeline on this machine (:mod:`mbyn.local.run`)."""

from __future__ import annotations

import argparse
from typing import Any

from mbyn.settings import Settings

# `mbyn run` seeds the batch producers' tables, so mbyn.local.run imports producer modules: imported in the
# handlers, a producer that cannot be imported breaks `mbyn run` and its own sub-command, not every command.


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local import run as pipeline  # noqa: PLC0415 - imports worker modules (see above)

    return pipeline.run(settings, duration=args.duration, scale=args.scale, nodes=args.nodes,
                        warehouse=args.warehouse, start_airflow=not args.no_airflow, live_fx=args.live_fx)


def _down(settings: Settings, args: argparse.Namespace) -> int:
    from mbyn.local import run as pipeline  # noqa: PLC0415 - imports worker modules (see above)

    return pipeline.down(settings)


def register(sub: Any) -> None:
    """Add ``run`` and ``down``."""
    p = sub.add_parser("run", help="start the whole M×N pipeline and supervise it (Ctrl-C stops everything)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--scale", action="append", default=[], metavar="NAME=K",
                   help="copies of a producer/consumer (repeatable; 0 disables), e.g. --scale warehouse-loader=3")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=None, help="Kafka nodes (default 1)")
    p.add_argument("--warehouse", choices=("sqlite", "postgres"), default=None,
                   help="sqlite (default: var/warehouse.db) or postgres (started locally); "
                        "MBYN_WAREHOUSE_URL overrides both")
    p.add_argument("--no-airflow", action="store_true", help="do not start Airflow")
    p.add_argument("--live-fx", action="store_true",
                   help="poll the real ECB API instead of replaying the bundled recorded responses")
    p.set_defaults(handler=_run)
    p = sub.add_parser("down", help="stop a running pipeline and every service it started")
    p.set_defaults(handler=_down)
