"""``bench/run.py --smoke`` end to end: its own broker and PostgreSQL, every stage at tiny sizes.

Checks effects, not numbers (the smoke run asserts none): the process exits 0, writes its raw results and
report under ``var/bench/smoke/`` (never over BENCHMARKS.md or bench/results/), the report holds every
stage's table with measured rows and regenerates identically from the raw results (``bench/report.py``),
the plots it links exist and are PNGs, and the raw results agree with the sizes asked for (every produced
record reached the warehouse exactly once — the bench itself raises otherwise).
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
    committed = [PROJECT_ROOT / "BENCHMARKS.md", PROJECT_ROOT / "bench" / "results" / "results.json"]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in committed]

    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "run.py"), "--smoke"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    assert result.returncode == 0, f"bench --smoke failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    after = [p.stat().st_mtime_ns if p.exists() else None for p in committed]
    assert after == before, "a smoke run must not write BENCHMARKS.md or bench/results/"

    report = (SMOKE_DIR / "BENCHMARKS.md").read_text()
    for heading in ("## Machine", "## Targets", "## 1. Produce", "## 2. Consume → warehouse",
                    "## 3. End-to-end latency", "## 4. Scaling", "## 5. Event-driven latency", "## 6. Producer memory"):
        assert heading in report, f"missing section {heading!r}"
    for row in ("Kafka ProducerPerformance (Java)", "mbyn produce path", "mbyn Java payments",
                "Kafka ConsumerPerformance (Java)", "mbyn warehouse-loader → SQLite (exactly once)",
                "mbyn warehouse-loader → PostgreSQL (exactly once)"):
        assert re.search(r"\| " + re.escape(row) + r"[^|]* \| [\d,]+", report), f"no measured row {row!r}"
    assert re.search(r"\| PostgreSQL's own `\\copy` of the same rows \([\d,]+ rows\) \| — \| [\d,]+", report)

    results_file = SMOKE_DIR / "results" / "results.json"
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert {p.rsplit("/", 1)[-1] for p in linked} == {"produce.png", "consume.png", "latency.png", "scaling.png",
                                                      "memory.png"}
    for rel in linked:
        png = (SMOKE_DIR / rel).resolve()
        assert png.is_relative_to(SMOKE_DIR), f"{png} is outside {SMOKE_DIR}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"

    # The report is generated from the raw results alone: regenerating it gives the same bytes.
    regen = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "report.py"), str(results_file),
                            "--no-plots"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert regen.returncode == 0, regen.stderr[-2000:]
    assert (SMOKE_DIR / "BENCHMARKS.md").read_text() == report

    results = json.loads(results_file.read_text())
    assert results["smoke"] is True
    consume = results["consume"]
    loaders = [r for r in consume["rows"] if r["key"] in ("sqlite", "postgresql")]
    assert {r["key"] for r in loaders} == {"sqlite", "postgresql"}
    for row in loaders:
        for run in row["runs"]:  # every record of the data set loaded once, as the batch log says
            assert run["loaded_records"] == consume["records"] == results["sizes"]["consume_records"]
            assert run["log_matches_warehouse"] is True
    assert [r["records"] for r in results["latency"]["rows"][0]["runs"]] and results["latency"]["rows"][0]["p99"] > 0
    assert [r["replicas"] for r in results["scaling"]["loaders"]] == list(results["sizes"]["replicas"])
    assert results["memory"]["records"] == results["sizes"]["memory_records"]
    assert [t["key"] for t in results["targets"]] == ["postgres", "copy_ratio", "consumer_ratio", "latency",
                                                      "producer", "generation", "memory", "airflow"]
