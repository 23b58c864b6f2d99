"""``bench/run.py --smoke`` end to end: its own broker and PostgreSQL, every stage at tiny sizes.

Checks effects, not numbers (the smoke run asserts none): the process exits 0, writes its report under
``var/bench/smoke/`` (never over BENCHMARKS.md), the report holds every stage's table with measured
rows, the plots it links exist and are PNGs, and the raw results agree with the sizes asked for
(every produced record reached the warehouse exactly once — the bench itself raises otherwise).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mbyn.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

SMOKE_DIR = PROJECT_ROOT / "var" / "bench" / "smoke"
TIMEOUT_S = 900  # about 2 minutes on an idle 2-core machine; far more when it is shared


def test_bench_smoke_run_writes_tables_and_plots() -> None:
    benchmarks = PROJECT_ROOT / "BENCHMARKS.md"
    before = benchmarks.stat().st_mtime_ns if benchmarks.exists() else None

    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "run.py"), "--smoke"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    assert result.returncode == 0, f"bench --smoke failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    after = benchmarks.stat().st_mtime_ns if benchmarks.exists() else None
    assert after == before, "a smoke run must not write BENCHMARKS.md"

    report = (SMOKE_DIR / "BENCHMARKS.md").read_text()
    for heading in ("## Machine", "## Targets", "## 1. Produce", "## 2. Consume → warehouse",
                    "## 3. End-to-end latency", "## 4. Scaling", "## 5. Generator memory",
                    "## 6. Event-driven latency"):
        assert heading in report, f"missing section {heading!r}"
    for row in ("| Kafka ProducerPerformance (Java) |", "| mbyn Python generator (confluent-kafka) |",
                "| mbyn Java payments --synthetic (kafka-clients) |", "| Kafka ConsumerPerformance (Java) |",
                "| mbyn warehouse-loader → SQLite (exactly once) |"):
        assert re.search(re.escape(row) + r" [\d,]+ \|", report), f"no measured row {row!r}"

    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert {p.rsplit("/", 1)[-1] for p in linked} == {"produce.png", "consume.png", "latency.png", "scaling.png",
                                                      "memory.png"}
    for rel in linked:
        png = (SMOKE_DIR / rel).resolve()
        assert png.is_relative_to(SMOKE_DIR), f"{png} is outside {SMOKE_DIR}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"

    results = json.loads((SMOKE_DIR / "results.json").read_text())
    assert results["smoke"] is True
    records = results["sizes"]["records"]
    assert [r["records"] for r in results["produce"]["rows"]] == [records] * 3
    loaders = [r for r in results["consume"]["rows"] if "loader" in r["name"]]
    assert loaders and all(r["records"] == records for r in loaders)
    assert results["memory"]["records"] == results["sizes"]["memory_records"]
    assert {t["key"] for t in results["targets"]} == {"producer", "loader", "postgres", "latency", "memory",
                                                       "airflow"}
