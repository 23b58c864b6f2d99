"""``make bench``: measure mbyn against Kafka's own performance tools in one run; write BENCHMARKS.md.

    .venv/bin/python bench/run.py [--smoke] [--skip-airflow]

Stages (each on fresh topics of one bench broker started for the run, see ``bench/env.py``):

1. produce — ProducerPerformance vs the Python produce path on the same bytes, the Java payments service,
   and the Faker generator's cost on one core (``bench/produce.py``);
2. consume — a data set of ≥ 1M generator records; ConsumerPerformance vs the exactly-once warehouse-loader
   into SQLite and into PostgreSQL (each on its own), and PostgreSQL's own ``\\copy`` of the same rows;
3. end-to-end latency at fixed rates, commit included (generator → Kafka → loader → committed row);
4. scaling — loader copies 1…4 over the partitions, generator instances 1…4;
5. alert → incident DAG run started (local ``airflow standalone``), when Airflow comes up in time;
6. memory of the whole ``mbyn produce clickstream`` process over 10M records (alone, after the timed stages).

Every timed comparison runs ``runs`` times (median and range). Then every missed target gets a cProfile
run of its hot path. The raw results — every run's figures — go to ``bench/results/results.json``
(committed), and BENCHMARKS.md and the plots are generated from that file (``bench/report.py``, which can
regenerate them: ``python bench/report.py bench/results/results.json``). ``--smoke``: tiny sizes, everything
under ``var/bench/smoke/``, no number asserted. Logs of every process: ``var/bench/<run>/``.
Ctrl-C stops the run; the broker, PostgreSQL and Airflow it started are stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import airflow_latency, consume, latency, memory, produce, profiling, report, scaling
from bench.env import BenchEnv, Stage, log, machine, worker
from bench.verdicts import figure, sink_name
from mbyn.settings import PROJECT_ROOT

SEED = 42
RESULTS = PROJECT_ROOT / "bench" / "results" / "results.json"
SMOKE_RESULTS = PROJECT_ROOT / "var" / "bench" / "smoke" / "results" / "results.json"


@dataclass(frozen=True)
class Sizes:
    """How much each stage does (the produce stage's sizes live in ``bench/produce.py``)."""

    runs: int  # repeats of every timed comparison: median and range
    consume_records: int  # the data set of stages 2 and 4
    loader_duration: float | None  # a loader run stops after this long if the topics are not drained by then
    latency_runs: tuple[tuple[str, int, int | None], ...]  # (sink, msg/s, loader batch size; None: its default)
    latency_seconds: float
    replicas: tuple[int, ...]
    replica_seconds: float | None  # each loader-scaling step runs this long at most (None: until drained)
    generator_instances: tuple[int, ...]
    generator_total: int
    memory_records: int
    memory_every: int
    memory_max_s: float  # the memory stage is stopped after this long if it has not reached memory_records
    alerts: int
    airflow_budget_s: float
    profile_records: int
    profile_loader_seconds: float | None


FULL = Sizes(runs=3, consume_records=1_100_000, loader_duration=30,
             latency_runs=(("postgresql", 1000, None), ("postgresql", 5000, None), ("postgresql", 20000, None)),
             latency_seconds=20, replicas=(1, 2, 3, 4), replica_seconds=30, generator_instances=(1, 2, 4),
             generator_total=60_000, memory_records=10_000_000, memory_every=100_000, memory_max_s=10 * 60, alerts=3,
             airflow_budget_s=240, profile_records=20_000, profile_loader_seconds=20)
SMOKE = Sizes(runs=1, consume_records=3000, loader_duration=None, latency_runs=(("postgresql", 1000, None),),
              latency_seconds=3, replicas=(2,), replica_seconds=None, generator_instances=(2,),
              generator_total=2000, memory_records=100_000, memory_every=10_000, memory_max_s=5 * 60, alerts=0,
              airflow_budget_s=0, profile_records=2000, profile_loader_seconds=None)

# Targets (never lowered) — issue #14's table, then the alert → DAG target of issue #8.
POSTGRES_ROWS_PER_S = 100_000
COPY_RATIO = 0.5
P99_MS_AT_5K = 100.0
PRODUCER_RATIO = 0.5
GENERATOR_PER_S = 50_000
RSS_GROWTH_MB = 10.0
ALERT_TO_RUN_S = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, output under var/bench/smoke/ (not BENCHMARKS.md), asserts no number")
    parser.add_argument("--skip-airflow", action="store_true", help="do not start Airflow (stage 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    produce_sizes = produce.SMOKE if args.smoke else produce.FULL
    run_name = "smoke" if args.smoke else time.strftime("run-%Y%m%d-%H%M%S")
    root = PROJECT_ROOT / "var" / "bench" / run_name
    if args.smoke:
        shutil.rmtree(root, ignore_errors=True)
    results_file = SMOKE_RESULTS if args.smoke else RESULTS
    root.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop what we started

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    results: dict[str, Any] = {"smoke": args.smoke, "sizes": {**asdict(sizes), "produce": asdict(produce_sizes)},
                               "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "logs": str(root.relative_to(PROJECT_ROOT))}
    log(f"bench {'smoke ' if args.smoke else ''}run in {root}; "
        f"load average {results['machine']['load_average_1_5_15']}")
    env = BenchEnv.start(root)
    try:
        results.update(measure(env, sizes, produce_sizes, skip_airflow=args.skip_airflow or args.smoke))
        results["targets"] = targets(results)
        results["profiles"] = profiles(env, results, sizes)
    except KeyboardInterrupt:
        log("interrupted: stopping what the bench started")
        return 130
    finally:
        env.stop()
    results["seconds"] = time.monotonic() - started
    results["machine"]["load_average_end"] = list(machine()["load_average_1_5_15"])
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out_md, plots = report.write(results_file)
    log(f"done in {results['seconds']:.0f}s: {out_md} ({len(plots)} plots), raw results {results_file}, logs {root}")
    return 0


def stage_seconds(out: dict[str, Any], name: str, since: float) -> None:
    out.setdefault("stage_seconds", {})[name] = round(time.monotonic() - since, 1)


def measure(env: BenchEnv, sizes: Sizes, produce_sizes: Any, skip_airflow: bool) -> dict[str, Any]:
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    out: dict[str, Any] = {"loader_default_batch": WarehouseLoader.batch_size,
                           "loader_max_wait_ms": WarehouseLoader.batch_timeout * 1000}
    t = time.monotonic()
    out["produce"] = produce.measure(env, produce_sizes, SEED)
    out["generation"] = produce.generation(env, produce_sizes, SEED)
    stage_seconds(out, "produce", t)

    t = time.monotonic()
    from mbyn.kafka.admin import apply_topics

    source = env.stage("consume-data")
    apply_topics(source.settings)
    log(f"consume: writing the data set, {sizes.consume_records:,} generator records")
    data = produce.python_generator(source, sizes.consume_records, SEED)
    per_topic = {topic: int(v["records"]) for topic, v in data["per_topic"].items()}
    out["source_prefix"] = source.prefix
    out["consume"] = consume.measure(env, source, per_topic, sizes.runs, sizes.loader_duration)
    out["consume"]["data_set"] = {k: data[k] for k in ("name", "records", "records_per_s", "per_topic") if k in data}
    stage_seconds(out, "consume", t)

    t = time.monotonic()
    out["latency"] = latency.measure(env, list(sizes.latency_runs), sizes.runs, sizes.latency_seconds)
    stage_seconds(out, "latency", t)

    t = time.monotonic()
    total = sum(per_topic.values())
    out["scaling"] = {
        "loaders": scaling.loaders(env, source, total, list(sizes.replicas), sizes.replica_seconds),
        "generators": scaling.generators(env, sizes.generator_total, list(sizes.generator_instances))}
    stage_seconds(out, "scaling", t)

    t = time.monotonic()
    out["airflow"] = airflow(env, sizes, skip_airflow)
    stage_seconds(out, "airflow", t)

    # Alone, after the timed stages: it would otherwise take CPU from them on a small machine.
    t = time.monotonic()
    sampler = memory.begin(env.stage("memory"), sizes.memory_records, sizes.memory_every)
    try:
        out["memory"] = memory.collect(sampler, time.monotonic() + sizes.memory_max_s)
    except BaseException:
        sampler.proc.terminate()
        sampler.proc.wait(timeout=60)
        raise
    stage_seconds(out, "memory", t)
    return out


def airflow(env: BenchEnv, sizes: Sizes, skip: bool) -> dict[str, Any]:
    if skip:
        return {"measured": False, "reason": "skipped in --smoke runs (Airflow needs minutes to start)"
                if sizes.alerts == 0 else "skipped with --skip-airflow"}
    import httpx

    from mbyn.errors import MbynError

    try:
        return airflow_latency.measure(env, sizes.alerts, sizes.airflow_budget_s)
    except (MbynError, RuntimeError, TimeoutError, OSError, KeyError, httpx.HTTPError) as exc:
        # An optional stage: say why it is missing and keep the other stages' results.
        log(f"airflow: not measured: {type(exc).__name__}: {exc}")
        return {"measured": False, "reason": f"the stage failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #14's targets in its order (+ alert → DAG): measured value and met / missed / reported / not measured.

    Each sink is judged on its own: a target over several sinks is met only if every measured sink meets it.
    """
    consume_rows = {r["key"]: r for r in results["consume"]["rows"]}
    cp, pg, sqlite = consume_rows["cp"], consume_rows.get("postgresql"), consume_rows.get("sqlite")
    copy = results["consume"].get("postgres_copy")
    out: list[dict[str, Any]] = [
        {"key": "postgres", "target": "loader → PostgreSQL, exactly once, rows/s counted",
         "threshold": f"≥ {POSTGRES_ROWS_PER_S:,}",
         "value": figure(pg, "rows_per_s", "rows_min", "rows_max", " rows/s") if pg else "not measured",
         "met": None if pg is None else pg["rows_per_s"] >= POSTGRES_ROWS_PER_S},
        {"key": "copy_ratio", "target": "loader rows/s ÷ PostgreSQL's own COPY of the same rows (psql `\\copy` "
                                        "from a file, same run) — the sink's physical limit",
         "threshold": f"≥ {COPY_RATIO}",
         "value": f"{pg['copy_ratio']:.2f}× ({pg['rows_per_s']:,.0f} ÷ {copy['rows_per_s']:,.0f} rows/s)"
         if pg and copy else "not measured",
         "met": None if not (pg and copy) else pg["copy_ratio"] >= COPY_RATIO},
        {"key": "consumer_ratio", "target": "loader records/s ÷ ConsumerPerformance records/s (same topics, "
                                            "≥ 1M records)",
         "threshold": "reported",
         "value": "; ".join(f"{r['sink'].replace('postgresql', 'PostgreSQL').replace('sqlite', 'SQLite')} "
                            f"{r['ratio']:.3f}×" for r in (pg, sqlite) if r)
         + f" (ConsumerPerformance {cp['records_per_s']:,.0f} records/s over {cp['records']:,} records)",
         "met": "reported"},
    ]
    at5k = [r for r in results["latency"]["rows"] if r["rate"] == 5000]
    out.append({"key": "latency", "target": "end-to-end p99 at 5k msg/s, commit included",
                "threshold": f"≤ {P99_MS_AT_5K:.0f} ms",
                "value": "; ".join(f"{sink_name(r['sink'])} {figure(r, 'p99', 'p99_min', 'p99_max', ' ms')} (achieved "
                                   f"{r['achieved_rate']:,.0f} msg/s)" for r in at5k) or "5k msg/s not run",
                "met": all(r["p99"] <= P99_MS_AT_5K and r["achieved_rate"] >= 0.95 * 5000 for r in at5k)
                if at5k else None})
    prod = results["produce"]
    py = next((r for r in prod["rows"] if r.get("key") == "python"), None)
    pp = next((r for r in prod["rows"] if r.get("key") == "pp"), None)
    out.append({"key": "producer", "target": "Python produce path ÷ ProducerPerformance, same bytes and settings",
                "threshold": f"≥ {PRODUCER_RATIO}",
                "value": f"{prod['ratio']:.2f}× ({figure(py)} ÷ {figure(pp)} records/s)" if py and pp else
                "not measured", "met": prod["ratio"] >= PRODUCER_RATIO if py and pp else None})
    gen = results["generation"]
    out.append({"key": "generation", "target": "Faker generator records/s on one core",
                "threshold": f"≥ {GENERATOR_PER_S:,}", "value": f"{figure(gen)} records/s",
                "met": gen["records_per_s"] >= GENERATOR_PER_S})
    mem = results["memory"]
    out.append({"key": "memory", "target": "`mbyn produce clickstream` RSS growth over 10M records",
                "threshold": f"≤ {RSS_GROWTH_MB:.0f} MB",
                "value": f"{mem['growth_max_mib'] * 1.048576:+.2f} MB highest ({mem['growth_last_mib'] * 1.048576:+.2f}"
                         f" MB at the end) over {mem['records']:,} records",
                "met": mem["growth_max_mib"] * 1.048576 <= RSS_GROWTH_MB if mem["records"] >= 10_000_000 else None,
                "note": "" if mem["records"] >= 10_000_000 else
                f"not judged: {mem['records']:,} of 10M records reached ({mem['stopped_by']})"})
    air = results["airflow"]
    out.append({"key": "airflow", "target": "alert → DAG run started", "threshold": f"≤ {ALERT_TO_RUN_S:.0f} s",
                "value": f"median {air['median_s']:.2f} s, max {air['max_s']:.2f} s over {len(air['samples'])} alerts"
                if air.get("measured") else "not measured in this run",
                "met": air["max_s"] <= ALERT_TO_RUN_S if air.get("measured") else None})
    return out


def profiles(env: BenchEnv, results: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """cProfile the hot path of each missed target (and always in --smoke, to exercise it)."""
    from bench.env import run

    missed = {t["key"] for t in results["targets"] if t["met"] is False}
    out: dict[str, Any] = {}
    if missed & {"producer", "generation"} or results["smoke"]:
        stage = env.stage("profile-producer")
        from mbyn.kafka.admin import apply_topics

        apply_topics(stage.settings)
        stats = str(stage.folder / "producer.prof")
        log(f"profile: Python generator producer, {sizes.profile_records} records under cProfile")
        run(worker("produce-generator", "--count", str(sizes.profile_records), "--seed", str(SEED), "--profile",
                   stats), stage.env(), timeout=1800, log_file=stage.folder / "producer.log", what="profiled producer")
        out["producer"] = profiling.summarise(stats)
    if missed & {"postgres", "copy_ratio", "latency"} or results["smoke"]:
        source = Stage("source", env.broker.model_copy(update={"topic_prefix": results["source_prefix"]}),
                       env.root)
        sink = "postgresql" if env.postgres is not None else "sqlite"
        stage = consume.fresh_warehouse(env, source, "profile-loader", sink)
        stats = str(stage.folder / "loader.prof")
        log(f"profile: warehouse-loader → {sink_name(sink)} under cProfile")
        consume.run_loaders(stage, 1, profile=stats, duration=sizes.profile_loader_seconds)
        out["loader"] = profiling.summarise(stats)
        out["loader"]["sink"] = sink_name(sink)
    return out


if __name__ == "__main__":
    sys.exit(main())
