"""Where the time goes: cProfile statistics reduced to a top-N table and a share per area.

Areas are assigned from the function's file and name (librdkafka calls, validation, JSON, generation,
SQL, Kafka consumer runtime, ...); the share is of total own time (``tottime``), so the areas add up to
100 % of what the profiled process did on its main thread.
"""

from __future__ import annotations

import pstats
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
        rows.append({"function": f"{short}:{line}({name})" if line else name, "calls": ncalls,
                     "tottime": tottime, "cumtime": cumtime, "area": area})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return {"total_s": total, "top": rows[:top],
            "areas": sorted(((a, s, s / total) for a, s in areas.items()), key=lambda x: x[1], reverse=True)}
