"""``make bench``: measure mbyn against Kafka's own performance tools in one run; write BENCHMARKS.md.

    .venv/bin/python bench/run.py [--smoke] [--records N] [--skip-airflow]

Stages (each on fresh topics of one bench broker started for the run, see ``bench/env.py``):

1. produce — ProducerPerformance vs the Python generator producer vs the Java payments service;
2. consume — ConsumerPerformance vs the exactly-once warehouse-loader into SQLite and PostgreSQL;
3. end-to-end latency at fixed rates (generator → Kafka → loader → warehouse row);
4. scaling — loader replicas 1…4, generator instances 1…4;
5. generator memory over 10M records (RSS, generation only; run alone after the timed stages so it takes no
   CPU from them, and stopped at the run's time budget if it has not finished);
6. alert → incident DAG run started (local ``airflow standalone``), when Airflow comes up in time.

Then every missed target gets a cProfile run of its hot path, and the report is written: BENCHMARKS.md
and ``bench/results/*.png`` (``--smoke``: tiny sizes, everything under ``var/bench/smoke/``, no number
asserted). Raw data: ``var/bench/<run>/results.json``, logs of every process beside it.
Ctrl-C stops the run; the broker, PostgreSQL and Airflow it started are stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import airflow_latency, consume, latency, memory, produce, profiling, report, scaling
from bench.env import BenchEnv, Stage, log, machine, worker
from mbyn.settings import PROJECT_ROOT

SEED = 42


@dataclass(frozen=True)
class Sizes:
    """How much each stage does; ``FULL`` and ``SMOKE`` below, ``--records`` overrides ``records``."""

    records: int  # stages 1 and 2, and the data set of the loader scaling
    latency_runs: tuple[tuple[int, int | None], ...]  # (msg/s, loader batch size; None: its default)
    latency_seconds: float
    replicas: tuple[int, ...]
    replica_seconds: float | None  # each loader-scaling step runs this long (None: until drained)
    generator_instances: tuple[int, ...]
    generator_total: int
    memory_records: int
    memory_every: int
    budget_s: float  # the memory sampler is stopped this long after the start if it has not finished
    alerts: int
    airflow_budget_s: float
    profile_records: int
    profile_loader_seconds: float | None


FULL = Sizes(records=100_000, latency_runs=((1000, None), (5000, None), (20000, None), (5000, 200)),
             latency_seconds=8, replicas=(1, 2, 3, 4), replica_seconds=25, generator_instances=(1, 2, 3, 4),
             generator_total=40_000, memory_records=10_000_000, memory_every=100_000, budget_s=13 * 60, alerts=3,
             airflow_budget_s=240, profile_records=20_000, profile_loader_seconds=25)
SMOKE = Sizes(records=3000, latency_runs=((1000, None),), latency_seconds=3, replicas=(1, 2), replica_seconds=None,
              generator_instances=(1, 2), generator_total=2000, memory_records=100_000, memory_every=10_000,
              budget_s=10 * 60, alerts=0, airflow_budget_s=0, profile_records=2000, profile_loader_seconds=None)

# Targets (never lowered): name → (threshold, comparison)
PRODUCER_RATIO = 0.5
LOADER_RATIO = 0.25
POSTGRES_ROWS_PER_S = 100_000
P99_MS_AT_5K = 100.0
RSS_GROWTH_MIB = 10.0
ALERT_TO_RUN_S = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, output under var/bench/smoke/ (not BENCHMARKS.md), asserts no number")
    parser.add_argument("--records", type=int, default=None,
                        help=f"records for the produce/consume/scaling stages (default {FULL.records}, "
                             f"smoke {SMOKE.records})")
    parser.add_argument("--skip-airflow", action="store_true", help="do not start Airflow (stage 6)")
    args = parser.parse_args(argv)
    if args.records is not None and args.records < 100:
        parser.error("--records must be at least 100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.records:
        sizes = Sizes(**{**sizes.__dict__, "records": args.records})
    run_name = "smoke" if args.smoke else time.strftime("run-%Y%m%d-%H%M%S")
    root = PROJECT_ROOT / "var" / "bench" / run_name
    if args.smoke:
        shutil.rmtree(root, ignore_errors=True)
        out_md, plot_dir = root / "BENCHMARKS.md", root / "results"
    else:
        out_md, plot_dir = PROJECT_ROOT / "BENCHMARKS.md", PROJECT_ROOT / "bench" / "results"
    root.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop what we started

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    results: dict[str, Any] = {"smoke": args.smoke, "sizes": sizes.__dict__, "machine": machine(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    log(f"bench {'smoke ' if args.smoke else ''}run in {root}; "
        f"load average {results['machine']['load_average_1_5_15']}")
    env = BenchEnv.start(root)
    try:
        results.update(measure(env, sizes, skip_airflow=args.skip_airflow or args.smoke, started=started))
        results["targets"] = targets(results)
        results["profiles"] = profiles(env, results, sizes)
    except KeyboardInterrupt:
        log("interrupted: stopping what the bench started")
        return 130
    finally:
        env.stop()
    results["seconds"] = time.monotonic() - started
    results["machine"]["load_average_end"] = list(machine()["load_average_1_5_15"])
    (root / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plots = report.plots(results, plot_dir)
    out_md.write_text(report.markdown(results, plots, out_md.parent))
    log(f"done in {results['seconds']:.0f}s: {out_md} ({len(plots)} plots in {plot_dir}), raw data {root}")
    return 0


def measure(env: BenchEnv, sizes: Sizes, skip_airflow: bool, started: float) -> dict[str, Any]:
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    out: dict[str, Any] = {"loader_default_batch": WarehouseLoader.batch_size,
                           "loader_max_wait_ms": WarehouseLoader.batch_timeout * 1000}
    py_stage = env.stage("produce-python")
    out["produce"] = produce.measure(env.stage("produce-pp"), py_stage, env.stage("produce-java"),
                                     sizes.records, SEED)
    per_topic = next(r for r in out["produce"]["rows"] if "per_topic" in r)["per_topic"]
    out["source_prefix"] = py_stage.prefix
    out["consume"] = consume.measure(env, py_stage, per_topic["clickstream"]["records"], sizes.records)
    out["latency"] = latency.measure(env, list(sizes.latency_runs), sizes.latency_seconds)
    out["scaling"] = {
        "loaders": scaling.loaders(env, py_stage, sizes.records, list(sizes.replicas), sizes.replica_seconds),
        "generators": scaling.generators(env, sizes.generator_total, list(sizes.generator_instances))}
    if skip_airflow:
        out["airflow"] = {"measured": False, "reason": "skipped in --smoke runs (Airflow needs minutes to start)"
                          if sizes.alerts == 0 else "skipped with --skip-airflow"}
    else:
        import httpx

        from mbyn.errors import MbynError

        try:
            out["airflow"] = airflow_latency.measure(env, sizes.alerts, sizes.airflow_budget_s)
        except (MbynError, RuntimeError, TimeoutError, OSError, KeyError, httpx.HTTPError) as exc:
            # An optional stage: say why it is missing and keep the other stages' results.
            log(f"airflow: not measured: {type(exc).__name__}: {exc}")
            out["airflow"] = {"measured": False, "reason": f"the stage failed: {type(exc).__name__}: "
                                                           f"{str(exc).splitlines()[0]}"}
    # Alone, after the timed stages: it would otherwise take CPU from them on a small machine.
    sampler = memory.begin(env.stage("memory"), sizes.memory_records, sizes.memory_every)
    try:
        out["memory"] = memory.collect(sampler, started + sizes.budget_s)
    except BaseException:
        sampler.proc.terminate()
        sampler.proc.wait(timeout=60)
        raise
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with the measured value and met / missed / not measured."""
    rows = results["produce"]["rows"]
    py = next(r for r in rows if "Python" in r["name"])
    consume_rows = results["consume"]["rows"]
    loaders = [r for r in consume_rows if "loader" in r["name"]]
    best_loader = max(loaders, key=lambda r: r["ratio"])
    pg = next((r for r in consume_rows if "PostgreSQL" in r["name"]), None)
    at5k = [r for r in results["latency"]["rows"] if r["rate"] == 5000]
    out = [
        {"key": "producer", "target": f"Python producer ≥ {PRODUCER_RATIO}× ProducerPerformance",
         "value": f"{py['ratio']:.2f}× ({py['records_per_s']:,.0f} records/s)", "met": py["ratio"] >= PRODUCER_RATIO},
        {"key": "loader", "target": f"exactly-once loader ≥ {LOADER_RATIO}× ConsumerPerformance",
         "value": f"{best_loader['ratio']:.3f}× ({best_loader['name'].split('→')[1].split('(')[0].strip()}, "
                  f"{best_loader['records_per_s']:,.0f} records/s)", "met": best_loader["ratio"] >= LOADER_RATIO},
        {"key": "postgres", "target": f"loader ≥ {POSTGRES_ROWS_PER_S:,} rows/s into PostgreSQL",
         "threshold": POSTGRES_ROWS_PER_S,
         "value": f"{pg['rows_per_s']:,.0f} rows/s" if pg else "not measured",
         "met": None if pg is None else pg["rows_per_s"] >= POSTGRES_ROWS_PER_S},
    ]
    if at5k:
        best = min(at5k, key=lambda r: r["p99"])
        out.append({"key": "latency", "target": f"end-to-end p99 ≤ {P99_MS_AT_5K:.0f} ms at 5k msg/s",
                    "value": "; ".join(f"{r['p99']:,.0f} ms (loader batch {r['batch_size'] or 'default'}, achieved "
                                       f"{r['achieved_rate']:,.0f} msg/s)" for r in at5k),
                    "met": best["p99"] <= P99_MS_AT_5K and best["achieved_rate"] >= 0.95 * 5000})
    else:
        out.append({"key": "latency", "target": f"end-to-end p99 ≤ {P99_MS_AT_5K:.0f} ms at 5k msg/s",
                    "value": "5k msg/s not run (smoke)", "met": None})
    mem = results["memory"]
    out.append({"key": "memory", "target": f"generator RSS growth ≤ {RSS_GROWTH_MIB:.0f} MB over 10M records",
                "value": f"{mem['growth_max_mib']:+.2f} MiB (highest) / {mem['growth_last_mib']:+.2f} MiB (last) over "
                         f"{mem['records']:,} records",
                "met": mem["growth_max_mib"] <= RSS_GROWTH_MIB,
                "note": "" if mem["records"] >= 10_000_000 else
                f"judged on the {mem['records']:,} records reached ({mem['stopped_by']}), not 10M"})
    air = results["airflow"]
    out.append({"key": "airflow", "target": f"alert → DAG run started ≤ {ALERT_TO_RUN_S:.0f} s",
                "value": f"median {air['median_s']:.2f} s, max {air['max_s']:.2f} s over {len(air['samples'])} alerts"
                if air.get("measured") else "not measured in this run",
                "met": air["max_s"] <= ALERT_TO_RUN_S if air.get("measured") else None})
    return out


def profiles(env: BenchEnv, results: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """cProfile the hot path of each missed throughput target (and always in --smoke, to exercise it)."""
    from bench.env import run

    missed = {t["key"] for t in results["targets"] if t["met"] is False}
    out: dict[str, Any] = {}
    if "producer" in missed or results["smoke"]:
        stage = env.stage("profile-producer")
        from mbyn.kafka.admin import apply_topics

        apply_topics(stage.settings)
        stats = str(stage.folder / "producer.prof")
        log(f"profile: Python generator producer, {sizes.profile_records} records under cProfile")
        run(worker("produce-generator", "--count", str(sizes.profile_records), "--seed", str(SEED), "--profile",
                   stats), stage.env(), timeout=1800, log_file=stage.folder / "producer.log", what="profiled producer")
        out["producer"] = profiling.summarise(stats)
    if missed & {"loader", "postgres"} or results["smoke"]:
        source = results["source_prefix"]
        url = env.postgres_database(f"bench_profile_{source.strip('-')}") if env.postgres is not None else None
        target = env.stage("profile-loader", warehouse_url=url)
        stage = consume._same_topics(Stage("source", env.broker.model_copy(update={"topic_prefix": source}),
                                           target.folder), target)
        stats = str(stage.folder / "loader.prof")
        log(f"profile: warehouse-loader → {'PostgreSQL' if url else 'SQLite'} under cProfile")
        consume.run_loaders(stage, 1, profile=stats, duration=sizes.profile_loader_seconds)
        out["loader"] = profiling.summarise(stats)
        out["loader"]["sink"] = "PostgreSQL" if url else "SQLite"
    return out


if __name__ == "__main__":
    sys.exit(main())
