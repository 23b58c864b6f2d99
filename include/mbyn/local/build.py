"""``mbyn build``: fetch and build everything that is not Python — idempotent, skips what is up to date.

Each builder takes the settings and returns a short status line. Builders live beside the code they
build (the Java and Go producers' launchers) and are listed here in run order.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from mbyn.settings import Settings

#: (name, "module:function") — the function takes Settings and returns a status line
BUILDERS: list[tuple[str, str]] = [
    ("kafka", "mbyn.local.kafka:build"),
    ("shipments", "mbyn.sources.shipments:build"),
    ("payments", "mbyn.sources.payments:build"),
]


def build_all(settings: Settings, only: list[str] | None = None) -> None:
    for name, target in BUILDERS:
        if only and name not in only:
            continue
        module, _, func = target.partition(":")
        builder: Callable[[Settings], str] = getattr(importlib.import_module(module), func)
        print(f"==> build {name}: {builder(settings)}", file=sys.stderr, flush=True)
