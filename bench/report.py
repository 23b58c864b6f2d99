"""Turn one run's results into BENCHMARKS.md and its plots (matplotlib, headless).

Everything written here comes from the run's data: tables, verdicts, and the "what limits it" text of a
missed target, which quotes that run's profile (top areas of own time) and measurements.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


# Plots ---------------------------------------------------------------------------------------------


def plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write the PNGs into ``folder``; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[name] = path

    def bars(rows: list[dict[str, Any]], title: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.7 * len(rows)))
        labels = [r["name"] for r in rows][::-1]
        values = [r["records_per_s"] for r in rows][::-1]
        ax.barh(labels, values, color=["#4c72b0" if "Kafka" in lab else "#dd8452" for lab in labels])
        for y, (v, r) in enumerate(zip(values, rows[::-1], strict=True)):
            ax.text(v, y, f"  {v:,.0f}/s ({r['ratio']:.2f}×)", va="center", fontsize=8)
        ax.set_xlabel("records per second")
        ax.set_title(title)
        ax.set_xlim(0, max(values) * 1.45)
        save(fig, name)

    bars(results["produce"]["rows"], "Produce: records/s (ratio to ProducerPerformance)", "produce")
    bars(results["consume"]["rows"], "Consume → warehouse: records/s (ratio to ConsumerPerformance)", "consume")

    lat = results["latency"]["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for batch in sorted({r["batch_size"] or 0 for r in lat}):
        rows = sorted((r for r in lat if (r["batch_size"] or 0) == batch), key=lambda r: r["rate"])
        label = f"loader batch {batch or 'default'}"
        for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            ax.plot([r["rate"] for r in rows], [r[q] for r in rows], style, marker="o", label=f"{q}, {label}")
    ax.axhline(100, color="grey", lw=0.8)
    ax.text(ax.get_xlim()[0], 100, " target p99 at 5k/s", fontsize=7, va="bottom", color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (msg/s)")
    ax.set_ylabel("event_time → loaded_at (ms)")
    ax.set_title("End-to-end latency")
    ax.legend(fontsize=7)
    save(fig, "latency")

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    loaders = results["scaling"]["loaders"]
    left.plot([r["replicas"] for r in loaders], [r["records_per_s"] for r in loaders], marker="o")
    left.set_xlabel("warehouse-loader replicas")
    left.set_ylabel("records/s")
    left.set_title(f"Loader → {loaders[0]['name'].split('→')[1].strip()}" if loaders else "Loader")
    gens = results["scaling"]["generators"]
    right.plot([r["instances"] for r in gens], [r["records_per_s"] for r in gens], marker="o", color="#dd8452")
    right.set_xlabel("generator instances")
    right.set_title("Generator producer")
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({r.get("replicas", r.get("instances")) for r in (loaders if ax is left else gens)}))
    save(fig, "scaling")

    mem = results["memory"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([s[0] / 1e6 for s in mem["samples"]], [s[1] / 2**20 for s in mem["samples"]])
    ax.axhline(mem["baseline_rss_mib"] + 10, color="grey", lw=0.8, ls="--")
    ax.text(0, mem["baseline_rss_mib"] + 10, " baseline + 10 MB (target)", fontsize=7, va="bottom", color="grey")
    ax.set_xlabel("records generated (millions)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(s[1] / 2**20 for s in mem["samples"]) * 1.3)
    ax.set_title("Generator memory (generation only)")
    save(fig, "memory")
    return out


# Markdown ------------------------------------------------------------------------------------------


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[met]


def _areas(profile: dict[str, Any] | None, n: int = 4) -> str:
    if not profile:
        return "no profile in this run"
    return ", ".join(f"{area} {share:.0%}" for area, _s, share in profile["areas"][:n])


def _cause(t: dict[str, Any], results: dict[str, Any]) -> str:
    """What limits the number, from this run's profile and measurements."""
    prof = results.get("profiles", {})
    key = t["key"]
    if t["met"] is None:
        if key == "airflow":
            return results["airflow"].get("reason", "")
        return t.get("note", "")
    if t["met"]:
        return t.get("note", "")
    if key == "producer":
        py = next((r for r in results["produce"]["rows"] if "Python" in r["name"]), None)
        budget = (f" At {py['records_per_s']:,.0f} records/s that is {1e6 / py['records_per_s']:,.0f} µs of one core "
                  "per record, all of it in one Python thread." if py and py["records_per_s"] else "")
        return ("per-record Python work on one core — own time by area (cProfile): " + _areas(prof.get("producer"))
                + ". ProducerPerformance hands the client pre-built byte arrays; the Python producer builds each "
                  "envelope (ids from a seeded Random, a pre-drawn Faker word pool), validates it against the "
                  "topic's JSON Schema (compiled with fastjsonschema), encodes it (msgspec) and calls librdkafka's "
                  "produce() per record, serving delivery callbacks every few dozen records." + budget)
    if key in ("loader", "postgres"):
        loader = prof.get("loader")
        sink = loader.get("sink", "") if loader else ""
        text = (f"the loader's Python per-record path (profile of the loader → {sink}): " + _areas(loader)
                + ". ConsumerPerformance discards what it fetches; the loader decodes (msgspec) and validates every "
                  "envelope against its JSON Schema, builds row tuples, and writes each batch with its offsets in one "
                  "transaction (PostgreSQL: COPY into a staging table, then one INSERT … SELECT … ON CONFLICT; "
                  "SQLite: one executemany).")
        pg = next((r for r in results["consume"]["rows"] if "PostgreSQL" in r["name"]), None)
        if key == "postgres" and pg and pg["records_per_s"]:
            per_record = pg["rows_per_s"] / pg["records_per_s"]
            needed = float(t.get("threshold", 100_000)) / per_record
            text += (f" {t.get('threshold', 100_000):,.0f} rows/s is {needed:,.0f} records/s at this data's "
                     f"{per_record:.2f} rows per record: {1e6 / needed:,.1f} µs per record for fetch, decode, "
                     f"validation, row building and SQL; the loader spends {1e6 / pg['records_per_s']:,.0f} µs.")
        return text
    if key == "latency":
        rows = [r for r in results["latency"]["rows"] if r["rate"] == 5000]
        wait_ms = float(results.get("loader_max_wait_ms", 1000))
        parts = []
        for r in rows:
            b = r["batch_size"] or results.get("loader_default_batch", 2000)
            fill_ms = min(b / 5000 * 1000, wait_ms)
            parts.append(f"batch {r['batch_size'] or 'default'}: p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms "
                         f"(a batch is handed over after ~{fill_ms:.0f} ms at 5k/s)")
        reached = min((r["achieved_rate"] for r in rows), default=0)
        extra = (f" The generator reached only {reached:,.0f} msg/s here, so 5k msg/s was not offered in full."
                 if reached < 0.95 * 5000 else "")
        return (f"the loader hands a batch over at `batch_size` records or after {wait_ms:.0f} ms (`--max-wait-ms`), "
                "then writes and commits; records wait for their batch and for the write before them — "
                + "; ".join(parts) + "." + extra
                + " When the loader cannot keep up with the offered rate, records queue and latency grows with the "
                  "backlog (see the consume stage's rate).")
    if key == "memory":
        return f"RSS grew {t['value']}; see the memory plot for where."
    if key == "airflow":
        return ("the path is watcher (shared Kafka stream trigger in the triggerer) → asset event stored → scheduler "
                "loop creates and queues the run → LocalExecutor starts it; each hop waits for its own loop interval.")
    return ""


def markdown(results: dict[str, Any], plot_paths: dict[str, Path], base: Path) -> str:
    m = results["machine"]
    sizes = results["sizes"]
    lines: list[str] = []
    add = lines.append

    def img(name: str, alt: str) -> None:
        if name in plot_paths:
            add(f"![{alt}]({os.path.relpath(plot_paths[name], base)})")
            add("")

    add("# Benchmarks" + (" (smoke run — tiny sizes, numbers mean nothing)" if results["smoke"] else ""))
    add("")
    add(f"Generated by `make bench` (`bench/run.py`) on {results['started']} in {results['seconds'] / 60:.1f} minutes. "
        "Do not edit by hand: run `make bench` again. Raw data and the log of every process: `var/bench/<run>/`.")
    add("")
    load = m["load_average_1_5_15"]
    if load[0] > (m["cores_logical"] or 1) * 0.5:
        add(f"> **The machine was not idle during this run** (load average {load[0]:.1f} at the "
            f"start and {m['load_average_end'][0]:.1f} at the end, on {m['cores_logical']} logical cores). Absolute "
            "numbers are below what this hardware does idle; every comparison ran its two sides one after the "
            "other under the same load, so ratios are more meaningful than absolute rates.")
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
    add("| Broker | one KRaft node (broker+controller) started for the run, heap 768 MiB, same host |")
    add("")

    add("## Targets")
    add("")
    add("| Target | Measured | Verdict | What limits it |")
    add("|---|---|---|---|")
    for t in results["targets"]:
        add(f"| {t['target']} | {t['value']} | {_verdict(t['met'])} | {_cause(t, results)} |")
    add("")

    p = results["produce"]
    add("## 1. Produce")
    add("")
    add(f"{p['count']:,} records each, one producer at a time, topics of 6 partitions. Producer settings for all "
        f"three (mbyn's defaults): `{' '.join(p['producer_props'])}`. ProducerPerformance sends random values of "
        f"`--record-size {p['record_size']}` — the mean size of the generator's envelopes — with "
        "`--throughput -1`. Rates are each producer's own (first send to last acknowledgement; JVM and "
        "interpreter start-up excluded); MB/s counts value bytes, measured by reading records back.")
    add("")
    add("| Producer | records/s | MB/s | value bytes | ratio to ProducerPerformance |")
    add("|---|---:|---:|---:|---:|")
    for r in p["rows"]:
        add(f"| {r['name']} | {_fmt(r['records_per_s'])} | {_fmt(r['mb_per_s'], 2)} | {_fmt(r['value_bytes'])} | "
            f"{r['ratio']:.2f}× |")
    add("")
    img("produce", "produce throughput")

    c = results["consume"]
    add("## 2. Consume → warehouse")
    add("")
    add("The data is stage 1's Python producer output (clickstream + orders). ConsumerPerformance reads the "
        "clickstream topic (it takes one topic) and discards the records; its rate is `fetch.nMsg.sec` (group join "
        "excluded). The exactly-once warehouse-loader (`mbyn consume warehouse-loader --idle-exit 3`) reads every "
        "topic of that prefix into a fresh warehouse; its rate is the steady rate read back from the warehouse "
        "(records loaded after the first batch / (last − first `loaded_at`)), so its start-up and group join are "
        "excluded too. Every run checks that the warehouse holds exactly the produced records.")
    if c.get("postgres_error"):
        add("")
        add(f"PostgreSQL could not be started in this run: {c['postgres_error']}")
    add("")
    add("| Consumer | records | records/s | rows/s | ratio | incl. start-up |")
    add("|---|---:|---:|---:|---:|---:|")
    for r in c["rows"]:
        rows_s = _fmt(r["rows_per_s"]) if "rows_per_s" in r else "—"
        incl = r.get("records_per_s_incl_join", r.get("records_per_s_incl_start", 0))
        add(f"| {r['name']} | {_fmt(r['records'])} | {_fmt(r['records_per_s'])} | {rows_s} | {r['ratio']:.3f}× | "
            f"{_fmt(incl)}/s |")
    add("")
    add("Rows are table rows (clicks + orders + order_items); records are Kafka records.")
    add("")
    img("consume", "consume throughput")

    lat = results["latency"]
    add("## 3. End-to-end latency")
    add("")
    add(f"The generator producer at a fixed rate for {lat['seconds']:.0f} s into fresh topics, one warehouse-loader "
        "(SQLite) already in its group. Latency = `loaded_at − event_time` of every loaded row — both columns exist "
        "in the schema, nothing was added. `event_time` is stamped when the generator builds the record, "
        "`loaded_at` once per batch just before its INSERT and COMMIT (so the commit itself, a few ms, is not in the "
        "number). Measured in the warehouse after the run, not by polling.")
    add("")
    add("| offered msg/s | achieved msg/s | loader batch size | records | p50 ms | p95 ms | p99 ms | max ms |")
    add("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in lat["rows"]:
        batch = r["batch_size"] or f"default ({results['loader_default_batch']})"
        add(f"| {_fmt(r['rate'])} | {_fmt(r['achieved_rate'])} | {batch} | "
            f"{_fmt(r['records'])} | {_fmt(r['p50'])} | {_fmt(r['p95'])} | {_fmt(r['p99'])} | {_fmt(r['max'])} |")
    add("")
    img("latency", "latency percentiles")

    s = results["scaling"]
    add("## 4. Scaling")
    add("")
    add("Loader replicas: K `mbyn consume warehouse-loader` processes started together over stage 1's data "
        "(6 partitions per topic), a fresh warehouse per K, steady rate as in stage 2. Generator instances: K "
        f"generator producers started together, {results['sizes']['generator_total']:,} records in total; rate = "
        "total / the slowest instance's time.")
    add("")
    add("| loader replicas | records/s | rows/s | batches |")
    add("|---:|---:|---:|---:|")
    for r in s["loaders"]:
        add(f"| {r['replicas']} ({r['name'].split('→')[1].strip()}) | {_fmt(r['records_per_s'])} | "
            f"{_fmt(r['rows_per_s'])} | {r['batches']} |")
    add("")
    add("| generator instances | records/s (total) | per instance |")
    add("|---:|---:|---|")
    for r in s["generators"]:
        add(f"| {r['instances']} | {_fmt(r['records_per_s'])} | {', '.join(f'{x:,}' for x in r['per_instance'])} |")
    add("")
    add(f"With {m['cores_logical']} logical cores shared by the broker, the producers or loaders and the database, "
        "more processes than cores cannot add throughput; the curve shows where the machine, not the design, stops "
        "scaling.")
    add("")
    img("scaling", "scaling")

    mem = results["memory"]
    add("## 5. Generator memory")
    add("")
    add(f"`shop_events` iterated in a subprocess without Kafka (generation only), RSS sampled with psutil every "
        f"{mem['every']:,} records. It runs alone after the timed stages (at `nice {mem['niceness']}`) and is "
        f"stopped at the run's time budget. Target size {mem['target_records']:,} records; reached "
        f"{mem['records']:,} in {mem['seconds']:.0f} s ({_fmt(mem['rate'])} records/s, stopped by: "
        f"{mem['stopped_by']}). Growth is measured from the first sample (after {mem['every']:,} records of "
        "warm-up: Faker's providers, the shop vocabulary and the session pool are built by then).")
    add("")
    add("| RSS at start | RSS after warm-up (first sample) | growth to last sample | highest growth |")
    add("|---:|---:|---:|---:|")
    add(f"| {mem['start_rss_mib']:.1f} MiB | {mem['baseline_rss_mib']:.1f} MiB | {mem['growth_last_mib']:+.2f} MiB | "
        f"{mem['growth_max_mib']:+.2f} MiB |")
    add("")
    img("memory", "generator RSS")

    air = results["airflow"]
    add("## 6. Event-driven latency: alert → incident DAG run started")
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

    prof = results.get("profiles", {})
    if prof:
        add("## Profiles of the missed targets")
        add("")
        add("cProfile of the hot path (own time, main thread). Areas group functions by where they live.")
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

    add("## Sizes used and how to reproduce")
    add("")
    add("`make bench` (or `.venv/bin/python bench/run.py [--records N] [--skip-airflow]`); `--smoke` runs tiny "
        "sizes into `var/bench/smoke/`. This run:")
    add("")
    add("| setting | value |")
    add("|---|---|")
    for key, value in sizes.items():
        add(f"| {key} | {value} |")
    add("")
    return "\n".join(lines)
