"""BENCHMARKS.md and its plots, generated from one run's raw results (``results.json``).

    .venv/bin/python bench/report.py bench/results/results.json [--no-plots]

Everything written comes from that file: tables, verdicts, and the "what limits it / next step" text of a
missed target, which quotes that run's profile and measurements — so the committed report can always be
regenerated from the committed results (the smoke test checks that it regenerates identically). The
report goes to the project's BENCHMARKS.md for ``bench/results/results.json``, else beside the folder
holding the results file; the plots (matplotlib, headless) go next to the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))

from bench.verdicts import (  # noqa: E402 - after the path set-up above
    LATENCY_RATE,
    MB_PER_MIB,
    P99_MS_AT_5K,
    RSS_GROWTH_MB,
    cause,
    figure,
    short_runs,
    sink_name,
    targets,
)


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def report_path(results_file: Path) -> Path:
    """BENCHMARKS.md for the committed results, else beside the folder that holds the results file."""
    if results_file.resolve().parent == (ROOT / "bench" / "results").resolve():
        return ROOT / "BENCHMARKS.md"
    return results_file.resolve().parent.parent / "BENCHMARKS.md"


def write(results_file: Path, with_plots: bool = True) -> tuple[Path, list[Path]]:
    """(Re)generate the report and the plots of ``results_file``; returns the report and the plot paths."""
    results = json.loads(results_file.read_text())
    out = report_path(results_file)
    written = plots(results, results_file.parent) if with_plots else []
    out.write_text(markdown(results, os.path.relpath(results_file.resolve().parent, out.parent)))
    return out, written


# Plots ---------------------------------------------------------------------------------------------


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Write the PNGs into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        out.append(path)

    def bars(rows: list[dict[str, Any]], title: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(10, 0.9 + 0.7 * len(rows)))
        rows = rows[::-1]
        labels = [r["name"] for r in rows]
        values = [r["records_per_s"] for r in rows]
        err = [[r["records_per_s"] - r.get("min", r["records_per_s"]) for r in rows],
               [r.get("max", r["records_per_s"]) - r["records_per_s"] for r in rows]]
        ax.barh(labels, values, xerr=err, capsize=3,
                color=["#4c72b0" if "Kafka" in lab else "#dd8452" for lab in labels])
        for y, (v, r) in enumerate(zip(values, rows, strict=True)):
            ratio = "" if r.get("key") == "java" else f" ({r['ratio']:.2f}×)"  # other bytes, cold: no ratio
            ax.text(v, y, f"  {v:,.0f}/s{ratio}", va="center", fontsize=8)
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:,.0f}k")
        ax.set_xlabel("records per second (median; whiskers: range of the runs)")
        ax.set_title(title)
        ax.set_xlim(0, max(values) * 1.5)
        save(fig, name)

    bars(results["produce"]["rows"], "Produce: records/s (ratio to ProducerPerformance)", "produce")
    bars(results["consume"]["rows"], "Consume → warehouse: records/s (ratio to ConsumerPerformance)", "consume")

    lat = results["latency"]["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for sink in sorted({r["sink"] for r in lat}):
        rows = sorted((r for r in lat if r["sink"] == sink), key=lambda r: r["rate"])
        for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            ax.plot([r["rate"] for r in rows], [r[q] for r in rows], style, marker="o", label=f"{q}, {sink_name(sink)}")
    ax.axhline(P99_MS_AT_5K, color="grey", lw=0.8)
    ax.text(ax.get_xlim()[0], P99_MS_AT_5K, f" target p99 at {LATENCY_RATE / 1000:.0f}k/s", fontsize=7, va="bottom",
            color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (msg/s)")
    ax.set_ylabel("event_time → committed (ms, median of runs)")
    ax.set_title("End-to-end latency, commit included")
    ax.legend(fontsize=7)
    save(fig, "latency")

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    loaders = results["scaling"]["loaders"]
    left.plot([r["replicas"] for r in loaders], [r["rows_per_s"] for r in loaders], marker="o")
    left.set_xlabel("warehouse-loader copies")
    left.set_ylabel("rows/s (counted, commit included)")
    left.set_title(f"Loader → {sink_name(loaders[0]['sink'])}" if loaders else "Loader")
    gens = results["scaling"]["generators"]
    right.plot([r["instances"] for r in gens], [r["records_per_s"] for r in gens], marker="o", color="#dd8452")
    right.set_xlabel("generator instances")
    right.set_ylabel("records/s")
    right.set_title("Generator producer")
    for ax, rows, key in ((left, loaders, "replicas"), (right, gens, "instances")):
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({r[key] for r in rows}))
    save(fig, "scaling")

    mem = results["memory"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([s[0] / 1e6 for s in mem["samples"]], [s[1] / 2**20 for s in mem["samples"]])
    ax.axhline(mem["baseline_rss_mib"] + RSS_GROWTH_MB / MB_PER_MIB, color="grey", lw=0.8, ls="--")
    ax.text(0, mem["baseline_rss_mib"] + RSS_GROWTH_MB / MB_PER_MIB, f" baseline + {RSS_GROWTH_MB:.0f} MB (target)",
            fontsize=7, va="bottom", color="grey")
    ax.set_xlabel("records (millions)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(s[1] / 2**20 for s in mem["samples"]) * 1.3)
    ax.set_title("`mbyn produce clickstream` memory")
    save(fig, "memory")
    return out


# Markdown ------------------------------------------------------------------------------------------


def _verdict(t: dict[str, Any]) -> str:
    if t["met"] is None and str(t.get("note", "")).startswith("not judged"):
        return "not judged"  # measured, but on runs that cannot prove the target (too short, unchecked)
    return {True: "**met**", False: "**missed**", None: "not measured", "reported": "reported"}[t["met"]]


def markdown(results: dict[str, Any], plot_dir: str) -> str:
    """The report; ``plot_dir``: the plots' folder relative to the report."""
    m = results["machine"]
    sizes = results["sizes"]
    lines: list[str] = []
    add = lines.append

    def img(name: str, alt: str) -> None:
        add(f"![{alt}]({plot_dir}/{name}.png)")
        add("")

    add("# Benchmarks" + (" (smoke run — tiny sizes, numbers mean nothing)" if results["smoke"] else ""))
    add("")
    add(f"Generated by `make bench` (`bench/run.py`) on {results['started']} in {results['seconds'] / 60:.1f} minutes, "
        f"from the raw results in `{plot_dir}/results.json` (every run's figures; regenerate this file with "
        f"`python bench/report.py {plot_dir}/results.json`). Do not edit by hand. Logs of every process of the run: "
        f"`{results.get('logs', 'var/bench/<run>')}/` (not committed). "
        + (f"Repeated figures are the median of {sizes['runs']} runs with their range (min–max)." if sizes["runs"] > 1
           else "Every figure is from one run."))
    add("")
    load = m["load_average_1_5_15"]
    if load[0] > (m["cores_logical"] or 1) * 0.5:
        add(f"> **The machine was not idle during this run** (load average {load[0]:.1f} at the "
            f"start and {m['load_average_end'][0]:.1f} at the end, on {m['cores_logical']} logical cores). Absolute "
            "numbers are below what this hardware does idle; both sides of every comparison ran in the same run.")
        add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    for label, key in (("CPU", "cpu"), ("Cores (logical / physical)", None), ("Memory", "memory_gib"),
                       ("OS", "os"), ("Python", "python"), ("Java", "java"), ("Kafka (broker, tools)", "kafka"),
                       ("confluent-kafka", "confluent_kafka")):
        value = f"{m['cores_logical']} / {m['cores_physical']}" if key is None else m[key]
        add(f"| {label} | {value}{' GiB' if key == 'memory_gib' else ''} |")
    heap = m.get("broker_heap", "768m").replace("m", " MiB").replace("g", " GiB")
    add(f"| Broker | one KRaft node (broker+controller) started for the run, heap {heap}, same host |")
    add("| PostgreSQL | the project's local server (`mbyn.local.postgres`) started for the run, same host |")
    add("")

    add("## Targets")
    add("")
    add("Benchmarks, never timed tests; on this machine, ratios from one run. Each sink is judged on its own.")
    add("")
    add("| metric | target | measured | verdict | what limits it — profile — next step |")
    add("|---|---|---|---|---|")
    for t in targets(results):  # recomputed from the raw figures, not the verdicts stored at run time
        add(f"| {t['target']} | {t['threshold']} | {t['value']} | {_verdict(t)} | {cause(t, results)} |")
    add("")

    produce_section(results, add, img)
    consume_section(results, add, img)
    latency_section(results, add, img)
    scaling_section(results, add, img)
    airflow_section(results, add)
    memory_section(results, add, img)
    profiles_section(results, add)

    add("## Sizes used and how to reproduce")
    add("")
    add("`make bench` (or `.venv/bin/python bench/run.py [--skip-airflow]`); `--smoke` runs tiny sizes into "
        "`var/bench/smoke/`. This run (seconds per stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in results.get("stage_seconds", {}).items()) + "):")
    add("")
    add("| setting | value |")
    add("|---|---|")
    for key, value in sizes.items():
        add(f"| {key} | {value} |")
    add("")
    return "\n".join(lines)


def produce_section(results: dict[str, Any], add: Any, img: Any) -> None:
    p = results["produce"]
    add("## 1. Produce")
    add("")
    pay = p.get("payload", {})
    if pay:
        add(f"The same bytes: {pay['records']:,} real generator envelopes (`shop_events({pay['seed']})`, validated and "
            f"encoded as the producer sends them: {pay.get('clickstream', 0):,} clickstream, "
            f"{pay.get('orders', 0):,} orders; {pay['mean_bytes']:.0f} bytes on average), one per line in a payload "
            "file. ProducerPerformance reads it with `--payload-file` / `--payload-delimiter`; the Python side "
            "(mbyn's `TopicProducer.send_raw`, confluent-kafka) sends the same lines. Both write fresh topics of "
            f"{p.get('partitions', 6)} partitions, {p.get('runs', 1)} run(s) each, interleaved; the median and the "
            "range of the runs.")
        add("")
    add(f"Producer settings of every side: `{' '.join(p.get('settings', []))}`. Warm-up: {p.get('warmup', '')}.")
    add("")
    add("| Producer | records/s | MB/s | value bytes | ratio to ProducerPerformance | per run: records/s (timed) |")
    add("|---|---:|---:|---:|---:|---|")
    for r in p["rows"]:
        per_run = ", ".join(f"{_fmt(x['records_per_s'])} ({x['records']:,} in {x['seconds']:.1f} s)"
                            for x in r.get("runs", []))
        # The Java service sends other bytes (payments) and its JVM warm-up is timed: no ratio to the baseline.
        ratio = "— (other values, cold)" if r.get("key") == "java" else f"{r['ratio']:.2f}×"
        add(f"| {r['name']} | {figure(r)} | {_fmt(r['mb_per_s'], 2)} | {_fmt(r['value_bytes'])} | "
            f"{ratio} | {per_run} |")
    add("")
    java = next((r for r in p["rows"] if r.get("key") == "java"), None)
    if java and java.get("settings"):
        add("The Java payments service printed the settings it ran with: `"
            + " ".join(f"{k}={v}" for k, v in java["settings"].items()) + "`; its rate is from its own summary "
            "(`send_seconds`: first send to the end of the final flush, the broker wait excluded); its values are "
            "payment envelopes (value bytes read back from its topic), not the generator's.")
        add("")
    if p.get("differences"):
        add("Differences that remain between the sides: " + "; ".join(p["differences"]) + ".")
        add("")
    img("produce", "produce throughput")
    gen = results["generation"]
    add(f"Generation alone (Faker generator `shop_events`, one core, no Kafka): {figure(gen)} records/s"
        f"{' — ' + gen['what'] if gen.get('what') else ''}.")
    add("")


def _partitions(c: dict[str, Any]) -> str:
    parts = c.get("partitions")
    if not parts:
        return "6 partitions each"  # results written before the partitions were recorded
    if len(set(parts.values())) == 1:
        return f"{next(iter(parts.values()))} partitions each"
    return ", ".join(f"{t} {n} partitions" for t, n in parts.items())


def consume_section(results: dict[str, Any], add: Any, img: Any) -> None:
    c = results["consume"]
    cp = next((r for r in c["rows"] if r["key"] == "cp"), {})
    add("## 2. Consume → warehouse")
    add("")
    add(f"The data set: {c['records']:,} generator records (keyed JSON envelopes with headers: "
        + ", ".join(f"{n:,} {t}" for t, n in c["per_topic"].items())
        + f", {_partitions(c)}), written once and read by every side. ConsumerPerformance takes one topic: it "
        "reads each topic in turn and discards the records; "
        + (f"its rate is the records it read after a warm-up of {cp['warmup_s']} s from its first record / the "
           f"time they took, from its progress lines every {cp['interval_ms']} ms (`--show-detailed-stats`). "
           if "warmup_s" in cp else "its rate is their records / the sum of its `fetch.time.ms` (group join "
           "excluded). ")
        + "The exactly-once warehouse-loader (`mbyn consume warehouse-loader "
        "--batch-log FILE`) reads both topics at once into a fresh warehouse per run (the offsets live in the "
        "warehouse, so every run starts from the earliest), decodes and validates every envelope, builds rows and "
        "writes each batch with its offsets in one transaction. Its figures are counted from the batch log "
        "(`committed_at` taken after COMMIT returned): the rows and records committed after a warm-up of "
        f"{c['warmup_s']:.0f} s, over the wall-clock window from the warm-up's last commit to the last commit; "
        + (f"a run stops when the topics are drained or after {c['duration']:.0f} s. " if c.get("duration") else
           "a run stops when the topics are drained. ")
        + "Every run is read back: the warehouse holds no more records than were produced (the bench stops "
          "otherwise), all of them when the run drained the topics, and "
        + ("exactly the rows the batch logs count." if all(
            x.get("log_matches_warehouse", True) for r in c["rows"] for x in r["runs"]) else
           "— NOT in every run — exactly the rows the batch logs count (see `log_matches_warehouse` in the raw "
           "results).")
        + " Differences that remain: ConsumerPerformance reads the topics one after the other, one JVM each, and "
        + ("a topic smaller than its warm-up adds no warm records (the per-topic rates are in the last column); "
           if "warmup_s" in cp else
           "its JIT warm-up is inside its timed fetch (it has no warm-up option): the smaller topic's pass is mostly "
           "warm-up (the per-topic rates are in the last column), which lowers its rate and flatters the ratios to "
           "it; ")
        + "it commits no offsets; the loader reads both "
          "topics at once and commits rows and offsets in the database.")
    if c.get("postgres_error"):
        add("")
        add(f"PostgreSQL could not be started in this run: {c['postgres_error']}")
    add("")
    add("| Consumer | records/s | rows/s | ratio to ConsumerPerformance | per run: records/s (window) |")
    add("|---|---:|---:|---:|---|")
    for r in c["rows"]:
        rows_s = figure(r, "rows_per_s", "rows_min", "rows_max") if "rows_per_s" in r else "—"
        per_run = ", ".join(f"{_fmt(x['records_per_s'])} ({x['records']:,} in {x['seconds']:.1f} s"
                            + "".join(f"; {t['topic'].split('-', 1)[-1]} {_fmt(t['records_per_s'])}/s"
                                      for t in x.get("topics", []))  # ConsumerPerformance: one JVM per topic
                            + ")" for x in r["runs"])
        add(f"| {r['name']} | {figure(r)} | {rows_s} | {r['ratio']:.3f}× | {per_run} |")
    copy = c.get("postgres_copy")
    if copy:
        add(f"| PostgreSQL's own `\\copy` of the same rows ({copy['rows']:,} rows) | — | "
            f"{figure(copy, 'rows_per_s')} | — | "
            + ", ".join(f"{_fmt(x['rows_per_s'])} rows/s ({x['seconds']:.1f} s)" for x in copy["runs"]) + " |")
    add("")
    short = [run for side in short_runs(results).values() for run in side]
    add("Every compared run (produce and consume sides, `\\copy`) counted ≥ 20 s or ≥ 1M records (rows for "
        "`\\copy`) after its warm-up." if not short else
        "Not a warm, long baseline (≥ 20 s or ≥ 1M records — rows for `\\copy` — after a warm-up); no target is met "
        "on these: " + ", ".join(short) + ".")
    add("")
    add("Rows are table rows (clicks + orders + order_items); records are Kafka records. "
        + (f"`\\copy`: {copy['tool']}, one psql process for the three tables (connection included), from files "
           "written from the last PostgreSQL run's tables." if copy else ""))
    add("")
    img("consume", "consume throughput")


def latency_section(results: dict[str, Any], add: Any, img: Any) -> None:
    lat = results["latency"]
    add("## 3. End-to-end latency")
    add("")
    add(f"The generator producer at a fixed rate for {lat['seconds']:.0f} s into fresh topics, one warehouse-loader "
        f"already in its group, a fresh warehouse per run, {lat['repeats']} run(s) per row. Latency of a row = its "
        "batch's `committed_at` (batch log, taken after COMMIT returned) − its `event_time` (stamped when the "
        f"generator builds the record). Percentiles are over the records built after the producer's first "
        f"{lat.get('warmup_s', 0):.0f} s (connection, first fetches, cold caches); the p99 over every record, warm-up "
        "included, is the last column but one. The last column leaves the write and commit out (`loaded_at`, the "
        "batch's stamp before its COPY/INSERT).")
    add("")
    add("| sink | offered msg/s | achieved msg/s | records | p50 ms | p95 ms | p99 ms | max ms (median of runs) "
        "| p99 incl. warm-up | p99 before commit |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in lat["rows"]:
        batch = f", batch {r['batch_size']}" if r.get("batch_size") else ""
        add(f"| {sink_name(r['sink'])}{batch} | {_fmt(r['rate'])} | {_fmt(r['achieved_rate'])} | {_fmt(r['records'])} "
            f"| {figure(r, 'p50', 'p50_min', 'p50_max')} | {figure(r, 'p95', 'p95_min', 'p95_max')} | "
            f"{figure(r, 'p99', 'p99_min', 'p99_max')} | {_fmt(r['max'])} | {_fmt(r.get('p99_incl_warmup', 0))} | "
            f"{_fmt(r['p99_before_commit'])} |")
    add("")
    img("latency", "latency percentiles")


def scaling_section(results: dict[str, Any], add: Any, img: Any) -> None:
    s = results["scaling"]
    add("## 4. Scaling")
    add("")
    add("Loader copies: K `mbyn consume warehouse-loader` processes started together over stage 2's data set "
        f"({_partitions(results['consume'])}: each copy gets a share of the partitions), a fresh warehouse per K; "
        "rows/s counted from the merged "
        "batch logs over the window as in stage 2, with a longer warm-up (the copies join and rebalance). "
        f"Generator instances: K generator producers started together, {results['sizes']['generator_total']:,} "
        "records in total; rate = total / the slowest instance's time.")
    add("")
    add("| loader copies | records/s | rows/s | window | batches |")
    add("|---:|---:|---:|---:|---:|")
    for r in s["loaders"]:
        add(f"| {r['replicas']} ({sink_name(r['sink'])}) | {_fmt(r['records_per_s'])} | {_fmt(r['rows_per_s'])} | "
            f"{r['seconds']:.1f} s | {r['batches']} |")
    add("")
    add("| generator instances | records/s (total) | per instance |")
    add("|---:|---:|---|")
    for r in s["generators"]:
        add(f"| {r['instances']} | {_fmt(r['records_per_s'])} | {', '.join(f'{x:,}' for x in r['per_instance'])} |")
    add("")
    add(f"With {results['machine']['cores_logical']} logical cores shared by the broker, the loaders and the "
        "database, more processes than cores cannot add throughput; the curve shows where this machine stops, "
        "Architecture.md what comes next (more partitions, more hosts).")
    add("")
    img("scaling", "scaling")


def airflow_section(results: dict[str, Any], add: Any) -> None:
    air = results["airflow"]
    add("## 5. Event-driven latency: alert → incident DAG run started")
    add("")
    if air.get("measured"):
        add(f"Local `airflow standalone` (started in {air['startup_s']:.0f} s) with only the incident DAG; one "
            "warm-up alert, then one alert at a time. Latency = the run's `start_date` (and `queued_at`) minus the "
            "moment the alert was acknowledged by Kafka.")
        add("")
        add("| alert | → run queued (s) | → run started (s) |")
        add("|---:|---:|---:|")
        for i, sample in enumerate(air["samples"], start=1):
            queued = "—" if sample["queued_s"] is None else f"{sample['queued_s']:.2f}"
            add(f"| {i} | {queued} | {sample['start_s']:.2f} |")
    else:
        add(f"Not measured in this run: {air['reason']}.")
    add("")


def memory_section(results: dict[str, Any], add: Any, img: Any) -> None:
    mem = results["memory"]
    add("## 6. Producer memory")
    add("")
    add(f"{mem.get('what', 'the producer process')}, RSS sampled with psutil. Target size "
        f"{mem['target_records']:,} records; reached {mem['records']:,} in {mem['seconds']:.0f} s "
        f"({_fmt(mem['rate'])} records/s, stopped by: {mem['stopped_by']}). "
        + (f"RSS every {mem['interval_s']:.0f} s, placed on the records axis by the producer's progress lines; "
           if mem.get("interval_s") else "")
        + "growth is measured from the first sample after the warm-up"
        + (f" of {mem['warmup_records']:,} records" if mem.get("warmup_records") else "")
        + " to the last sample and to the highest. It runs alone after the timed stages"
        + (f", at nice {mem['niceness']}." if mem.get("niceness") else "."))
    add("")
    add("| RSS at start | RSS after warm-up | growth to last sample | highest growth |")
    add("|---:|---:|---:|---:|")
    add(f"| {mem['start_rss_mib']:.1f} MiB | {mem['baseline_rss_mib']:.1f} MiB | {mem['growth_last_mib']:+.2f} MiB | "
        f"{mem['growth_max_mib']:+.2f} MiB |")
    add("")
    img("memory", "producer RSS")


def profiles_section(results: dict[str, Any], add: Any) -> None:
    prof = results.get("profiles", {})
    if not prof:
        return
    add("## Profiles of the missed targets")
    add("")
    add("cProfile of the hot path: own time per function (the producer: its main thread; the loader: all its "
        "threads, so its fetch thread's wait in `consume` and its writer thread's wait for the database count as "
        "own time of those calls). Areas group functions by where they live.")
    for name, title in (("producer", "Python generator producer"), ("loader", "warehouse-loader")):
        data = prof.get(name)
        if not data:
            continue
        add("")
        add(f"### {title}{' → ' + data['sink'] if data.get('sink') else ''}")
        add("")
        add("| area | own time | share |")
        add("|---|---:|---:|")
        for area, seconds, share in data["areas"]:
            add(f"| {area} | {seconds:.2f} s | {share:.0%} |")
        add("")
        add("| function | calls | own s | cumulative s |")
        add("|---|---:|---:|---:|")
        for row in data["top"]:
            add(f"| `{row['function']}` | {row['calls']:,} | {row['tottime']:.2f} | {row['cumtime']:.2f} |")
    add("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a run's results.json (e.g. bench/results/results.json)")
    parser.add_argument("--no-plots", action="store_true", help="regenerate the Markdown only")
    args = parser.parse_args(argv)
    out, written = write(args.results, with_plots=not args.no_plots)
    print(f"{out} ({len(written)} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
