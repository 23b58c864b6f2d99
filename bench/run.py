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
Ctrl-C (or SIGTERM) stops the run; the loaders and producers, the broker, PostgreSQL and Airflow it started
are stopped on the way out. The raw figures are saved in the run's folder before the verdicts are computed,
and ``bench/report.py`` recomputes the verdicts from the raw figures (``bench/verdicts.py``).
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
from bench.env import BROKER_HEAP, BenchEnv, Stage, log, machine, stop_started, worker
from bench.verdicts import sink_name, targets
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


FULL = Sizes(runs=3, consume_records=3_000_000, loader_duration=45,
             latency_runs=(("postgresql", 1000, None), ("postgresql", 5000, None), ("postgresql", 20000, None)),
             latency_seconds=20, replicas=(1, 2, 3, 4), replica_seconds=30, generator_instances=(1, 2, 4),
             generator_total=60_000, memory_records=10_000_000, memory_every=100_000, memory_max_s=10 * 60, alerts=3,
             airflow_budget_s=240, profile_records=20_000, profile_loader_seconds=20)
SMOKE = Sizes(runs=1, consume_records=3000, loader_duration=None, latency_runs=(("postgresql", 1000, None),),
              latency_seconds=3, replicas=(2,), replica_seconds=None, generator_instances=(2,),
              generator_total=2000, memory_records=100_000, memory_every=10_000, memory_max_s=5 * 60, alerts=0,
              airflow_budget_s=0, profile_records=2000, profile_loader_seconds=None)

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
                               "machine": {**machine(), "broker_heap": BROKER_HEAP},
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "logs": str(root.relative_to(PROJECT_ROOT))}
    log(f"bench {'smoke ' if args.smoke else ''}run in {root}; "
        f"load average {results['machine']['load_average_1_5_15']}")
    env: BenchEnv | None = None
    try:
        env = BenchEnv.start(root)
        results.update(measure(env, sizes, produce_sizes, skip_airflow=args.skip_airflow or args.smoke))
        # The raw figures first, in the run's folder: nothing after this (verdicts, profiles) can lose them.
        (root / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        results["targets"] = targets(results)
        results["profiles"] = profiles(env, results, sizes)
    except KeyboardInterrupt:
        log("interrupted: stopping what the bench started")
        return 130
    finally:
        left = stop_started()  # loaders, producers, profiled runs still running (a SIGTERM reaches none of them)
        if left:
            log(f"stopped {left} process(es) the bench had started")
        if env is not None:
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
    from mbyn.catalog import load_catalog

    catalog = load_catalog().topics
    out["consume"]["partitions"] = {topic: catalog[topic].partitions for topic in per_topic if topic in catalog}
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
