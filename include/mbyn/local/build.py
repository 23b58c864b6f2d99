"""``mbyn build``: fetch and build everything that is not Python — idempotent, skips what is up to date.

Each builder takes the settings and returns a short status line. Builders live beside the code they
build (the Java and Go producers' launchers) and are listed here in run order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mbyn.local.kafka import build as build_kafka
from mbyn.settings import Settings
from mbyn.sources.payments import build as build_payments
from mbyn.sources.shipments import build as build_shipments

#: (name, builder) — a builder takes Settings and returns a status line
BUILDERS: list[tuple[str, Callable[[Settings], str]]] = [
    ("kafka", build_kafka),
    ("shipments", build_shipments),
    ("payments", build_payments),
]


def build_all(settings: Settings, only: list[str] | None = None) -> None:
    for name, builder in BUILDERS:
        if only and name not in only:
            continue
        print(f"==> build {name}: {builder(settings)}", file=sys.stderr, flush=True)
