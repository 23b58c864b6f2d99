"""Where the time goes: cProfile statistics reduced to a top-N table and a share per area.

    .venv/bin/python bench/profiling.py OUT.prof consume warehouse-loader ...   # mbyn ARGS under cProfile

``profile_call`` profiles the calling thread and every thread started meanwhile (the loader writes on its
own writer thread) and merges them into one statistics file. Areas are assigned from the function's file
and name (librdkafka calls, validation, JSON, generation, SQL, Kafka consumer runtime, ...); the share is of
total own time (``tottime``) over all threads, so the areas add up to 100 % — time a thread spends waiting
(for records in ``consume``, for the database in psycopg's ``wait``) counts as that call's own time.
"""

from __future__ import annotations

import cProfile
import pstats
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up: imports, catalog YAML",
     ("yaml/", "marshal", "builtins.exec", "builtins.compile", "__build_class__", "importlib", "genericpath",
      "posix.stat", "posix.listdir")),
    ("librdkafka calls (produce/poll/flush, consume incl. waiting)",
     ("cimpl", "confluent_kafka", "'produce'", "'poll'", "'flush'", "'consume'", "'commit'")),
    ("schema validation (fastjsonschema)", ("fastjsonschema", "jsonschema", "validate")),
    ("JSON encode/decode", ("json/", "'dumps'", "'loads'", "encode", "decode")),
    ("record generation (generator, Faker, random, uuid, time)",
     ("generator.py", "shop.py", "faker", "random.py", "uuid.py", "'isoformat'", "method now", "_random",
      "'getrandbits'", "blake2", "utc_now_iso", "make_envelope")),
    ("SQL: SQLAlchemy + driver", ("sqlalchemy", "psycopg", "sqlite3", "'execute'", "'executemany'")),
    ("warehouse-loader row building",
     ("warehouse_loader.py", "warehouse/rows.py", "warehouse/engine.py", "_strptime", "fromisoformat",
      "astimezone")),
    ("a thread waiting for another (queue get, lock acquire)",
     ("SimpleQueue", "'acquire'", "_thread.lock", "threading.py", "concurrent/futures")),
    ("producer / consumer runtime (mbyn)",
     ("mbyn/kafka/", "mbyn/sources/base.py", "mbyn/process.py", "mbyn/consumers/")),
]


def area_of(filename: str, name: str) -> str:
    text = f"{filename}:'{name}'"
    for area, needles in AREAS:
        if any(needle in text for needle in needles):
            return area
    return "other (interpreter, dataclasses, builtins)"


def summarise(stats_file: str, top: int = 12) -> dict[str, Any]:
    """Top functions by own time and own time per area (seconds and share)."""
    stats = pstats.Stats(stats_file)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-9
    rows = []
    areas: dict[str, float] = {}
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        area = area_of(filename, name)
        areas[area] = areas.get(area, 0.0) + tottime
        short = filename.split("site-packages/")[-1].split("include/")[-1]
        name = re.sub(r" at 0x[0-9a-f]+", "", name)  # a function object's address says nothing
        rows.append({"function": f"{short}:{line}({name})" if line else name, "calls": ncalls,
                     "tottime": tottime, "cumtime": cumtime, "area": area})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return {"total_s": total, "top": rows[:top],
            "areas": sorted(((a, s, s / total) for a, s in areas.items()), key=lambda x: x[1], reverse=True)}


def profile_call(out: str, func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` under cProfile in this thread and in every thread it starts; merged statistics to ``out``."""
    profiles = [cProfile.Profile()]
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    profiles[0].enable()
    try:
        return func(*args)
    finally:
        profiles[0].disable()
        threading.Thread.run = original  # type: ignore[method-assign]
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            profile.create_stats()
            if profile.stats:  # type: ignore[attr-defined]
                stats.add(profile)
        stats.dump_stats(out)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mbyn.cli.main import main as mbyn_main

    out, *mbyn_args = argv
    return int(profile_call(out, mbyn_main, mbyn_args) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
