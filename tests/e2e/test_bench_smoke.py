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
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

SMOKE_DIR = PROJECT_ROOT / "var" / "bench" / "smoke"
TIMEOUT_S = 900  # about 2 minutes on an idle 2-core machine; far more when it is shared


@pytest.mark.timeout(TIMEOUT_S + 180)  # above the subprocess's own timeout, so that the bench can clean up
def test_bench_smoke_run_writes_tables_and_plots() -> None:
    committed = [PROJECT_ROOT / "BENCHMARKS.md", PROJECT_ROOT / "bench" / "results" / "results.json",
                 *(PROJECT_ROOT / "bench" / "results" / f"{name}.png"
                   for name in ("produce", "consume", "latency", "scaling", "memory"))]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in committed]

    proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "bench" / "run.py"), "--smoke"], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench stops its processes, broker and PostgreSQL (a SIGKILL would not)
        stdout, stderr = proc.communicate(timeout=120)
        pytest.fail(f"bench --smoke did not finish within {TIMEOUT_S}s:\n{stderr[-4000:]}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

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
    sizes = results["sizes"]
    # The raw figures were saved in the run's folder before the verdicts were computed.
    assert json.loads((SMOKE_DIR / "results.json").read_text())["produce"] == results["produce"]

    # Stage 1: every side sent what it was asked to, and took time doing it (no stage silently did nothing).
    produce = {r["key"]: r for r in results["produce"]["rows"]}
    assert set(produce) == {"pp", "python", "java"}
    for run in produce["pp"]["runs"]:
        assert run["records"] + run["warmup_records"] == sizes["produce"]["pp_records"]
        assert run["seconds"] > 0 and run["records_per_s"] > 0
    for run in produce["python"]["runs"]:
        assert run["records"] == sizes["produce"]["records"] and run["seconds"] > 0
    assert produce["java"]["records"] == sizes["produce"]["java_records"] and produce["java"]["value_bytes"] > 0
    assert len(produce["pp"]["runs"]) == len(produce["python"]["runs"]) == sizes["produce"]["runs"]
    assert results["produce"]["payload"]["records"] == sizes["produce"]["payloads"]
    assert [r["records"] for r in results["generation"]["runs"]] == [sizes["produce"]["generation_records"]] * \
        sizes["produce"]["runs"]

    # Stage 2: ConsumerPerformance read the whole data set; every loader run loaded all of it exactly once.
    consume = results["consume"]
    assert consume["records"] == sizes["consume_records"] == sum(consume["per_topic"].values())
    assert all(n > 0 for n in consume["per_topic"].values()), consume["per_topic"]
    cp = next(r for r in consume["rows"] if r["key"] == "cp")
    # ConsumerPerformance's progress lines stop at its last full interval: up to one interval of records is unseen.
    assert len(cp["runs"]) == sizes["runs"]
    assert all(0 < run["records"] + run["warmup_records"] <= consume["records"] for run in cp["runs"])
    loaders = [r for r in consume["rows"] if r["key"] in ("sqlite", "postgresql")]
    assert {r["key"] for r in loaders} == {"sqlite", "postgresql"}
    for row in loaders:
        assert len(row["runs"]) == sizes["runs"]
        for run in row["runs"]:  # every record of the data set loaded once, as the batch log says
            assert run["loaded_records"] == consume["records"] == sizes["consume_records"]
            assert run["log_matches_warehouse"] is True
            assert run["records"] > 0 and run["rows"] >= run["records"] and run["batches"] > 0
    pg = next(r for r in loaders if r["key"] == "postgresql")
    copy = consume["postgres_copy"]  # psql's \copy loaded exactly the last PostgreSQL run's rows
    assert copy["rows"] == sum(pg["runs"][-1]["table_rows"].values()) > 0
    assert len(copy["runs"]) == sizes["runs"] and all(run["rows_per_s"] > 0 for run in copy["runs"])

    # Stage 3: every latency row has records after its warm-up, in committed batches.
    assert [(r["sink"], r["rate"]) for r in results["latency"]["rows"]] == \
        [(sink, rate) for sink, rate, _ in sizes["latency_runs"]]
    for row in results["latency"]["rows"]:
        for run in row["runs"]:
            assert run["records"] > 0 and run["batches"] > 0 and run["achieved_rate"] > 0
        assert 0 < row["p50"] <= row["p99"] <= row["max"]

    # Stage 4: every loader-copies step loaded the data set exactly once; every generator step delivered it all.
    assert [r["replicas"] for r in results["scaling"]["loaders"]] == list(sizes["replicas"])
    for row in results["scaling"]["loaders"]:
        assert row["loaded_records"] == consume["records"] and row["log_matches_warehouse"] is True
        assert row["records"] > 0
    assert [r["instances"] for r in results["scaling"]["generators"]] == list(sizes["generator_instances"])
    for row in results["scaling"]["generators"]:
        assert row["records"] == sizes["generator_total"] // row["instances"] * row["instances"]

    # Stage 6 and the profiles.
    assert results["memory"]["records"] == sizes["memory_records"]
    assert len(results["memory"]["samples"]) >= 2
    for name in ("producer", "loader"):
        assert results["profiles"][name]["areas"] and results["profiles"][name]["top"], f"empty {name} profile"

    # The targets: exactly issue #14's seven plus alert → DAG; the stored verdicts are the rules' verdicts; and
    # no comparison is "met" on these tiny, cold runs (shorter than 20 s and 1M records: not judged).
    from bench.verdicts import targets

    assert [t["key"] for t in results["targets"]] == ["postgres", "copy_ratio", "consumer_ratio", "latency",
                                                      "producer", "generation", "memory", "airflow"]
    assert targets(results) == results["targets"]
    verdicts = {t["key"]: t["met"] for t in results["targets"]}
    assert verdicts["copy_ratio"] is not True and verdicts["producer"] is not True
    assert verdicts["memory"] is None and verdicts["airflow"] is None  # 10M records / Airflow not reached


def test_an_interrupted_bench_stops_the_processes_it_started(tmp_path: Path) -> None:
    """``stop_started`` (run on the way out of ``bench/run.py``, also after SIGTERM) ends every background process
    ``bench.env.start`` started and is still running — one that ignores SIGTERM too — and forgets them."""
    import os

    from bench import env

    polite = env.start(["sleep", "300"], dict(os.environ), tmp_path / "polite.log")
    stubborn = env.start([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "print('ready', flush=True); time.sleep(300)"], dict(os.environ), tmp_path / "stubborn.log")
    assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == "ready"
    done = env.start(["true"], dict(os.environ), tmp_path / "done.log")
    done.wait(timeout=30)

    assert env.stop_started(grace_s=2) == 2
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    assert env.STARTED == []
