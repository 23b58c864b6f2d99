"""The targets, their verdicts and the "what limits it — profile — next step" text, from one run's results only.

``targets`` judges issue #14's seven targets (+ alert → DAG) from the raw figures; ``bench/run.py`` stores
its answer and ``bench/report.py`` recomputes it, so BENCHMARKS.md always shows the current rules' verdicts
on the committed figures. A met target gets its note (if any); a missed one gets the measured figures behind
it, that run's cProfile summary (top areas of own time) and the next step.
"""

from __future__ import annotations

from typing import Any

# Targets (never lowered) — issue #14's table, then the alert → DAG target of issue #8.
POSTGRES_ROWS_PER_S = 100_000
COPY_RATIO = 0.5
P99_MS_AT_5K = 100.0
LATENCY_RATE = 5000
PRODUCER_RATIO = 0.5
GENERATOR_PER_S = 50_000
RSS_GROWTH_MB = 10.0
MEMORY_RECORDS = 10_000_000
ALERT_TO_RUN_S = 5.0
#: A baseline (and the side compared with it) counts when it ran ≥ 20 s or ≥ 1M records after its warm-up.
LONG_ENOUGH_S, LONG_ENOUGH_RECORDS = 20.0, 1_000_000
MB_PER_MIB = 1.048576


def long_enough(run: dict[str, Any], count: str = "records") -> bool:
    """A timed run of ≥ 20 s or ≥ 1M records (rows for ``count="rows"``) after its warm-up.

    Judged from the run's raw figures (``records``/``rows`` and ``seconds``), not from a flag stored with them.
    """
    return float(run.get("seconds", 0)) >= LONG_ENOUGH_S or int(run.get(count, 0)) >= LONG_ENOUGH_RECORDS


def _why_not_baseline(key: str, run: dict[str, Any], count: str) -> str:
    """Why a timed run is not a warm, long baseline ("" when it is one)."""
    if key == "cp" and "warmup_records" not in run:  # timed from its fetch time, the JIT warm-up included
        return "no warm-up left out"
    if run.get("warmup_records") == 0:  # e.g. ProducerPerformance done within its first 5-s window: all timed
        return "no warm-up left out"
    if not long_enough(run, count):
        return f"{float(run.get('seconds', 0)):.1f} s, {int(run.get(count, 0)):,} {count}"
    return ""


def short_runs(results: dict[str, Any]) -> dict[str, list[str]]:
    """Per compared side (produce/consume row key, ``copy``): the runs that are not ≥ 20 s or ≥ 1M records after
    a warm-up, each with the reason."""
    out: dict[str, list[str]] = {}
    sides = [(r, "records") for r in results["produce"]["rows"] if r.get("key") in ("pp", "python")]
    sides += [(r, "records") for r in results["consume"]["rows"]]
    for row, count in sides:
        short = [f"{row['name']} run {i} ({why})" for i, x in enumerate(row.get("runs", []), start=1)
                 if (why := _why_not_baseline(row["key"], x, count))]
        if short:
            out[row["key"]] = short
    copy = results["consume"].get("postgres_copy")
    if copy:
        short = [f"PostgreSQL's own `\\copy` run {i} ({why})" for i, x in enumerate(copy["runs"], start=1)
                 if (why := _why_not_baseline("copy", x, "rows"))]
        if short:
            out["copy"] = short
    return out


def _judge(met: bool, short: list[str], unchecked: list[str] | None = None) -> tuple[bool | None, str]:
    """A verdict only on long-enough, checked runs: a met figure on a short or unchecked run is not judged.

    A short baseline is a cold one (a lower rate), which flatters every ratio to it; so a figure that meets
    its target on such runs proves nothing (not judged), while one that misses it still misses.
    """
    problems = []
    if short:
        problems.append("not ≥ 20 s or ≥ 1M records after a warm-up: " + ", ".join(short))
    if unchecked:
        problems.append("the batch log does not match the warehouse: " + ", ".join(unchecked))
    if not problems:
        return met, ""
    return (None if met else False), ("not judged: " if met else "also ") + "; ".join(problems)


def _unchecked(row: dict[str, Any] | None) -> list[str]:
    if not row:
        return []
    return [f"{row['name']} run {i}" for i, x in enumerate(row.get("runs", []), start=1)
            if x.get("log_matches_warehouse") is False]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #14's targets in its order (+ alert → DAG): measured value and met / missed / reported / not measured.

    Computed from the raw figures of ``results`` (the report recomputes them, so a verdict is never older than
    the rules). Each sink is judged on its own; a missing figure is "not measured" (``met`` None), never met;
    a figure that meets its target on a side shorter than 20 s and 1M records is not judged (None).
    """
    consume_rows = {r["key"]: r for r in results["consume"]["rows"]}
    cp, pg, sqlite = consume_rows.get("cp"), consume_rows.get("postgresql"), consume_rows.get("sqlite")
    copy = results["consume"].get("postgres_copy")
    short = short_runs(results)
    out: list[dict[str, Any]] = []

    if pg:
        met, note = _judge(pg["rows_per_s"] >= POSTGRES_ROWS_PER_S, short.get("postgresql", []), _unchecked(pg))
        out.append({"key": "postgres", "value": figure(pg, "rows_per_s", "rows_min", "rows_max", " rows/s"),
                    "met": met, "note": note})
    else:
        out.append({"key": "postgres", "value": "not measured", "met": None})
    out[-1].update(target="loader → PostgreSQL, exactly once, rows/s counted", threshold=f"≥ {POSTGRES_ROWS_PER_S:,}")

    if pg and copy and copy.get("rows_per_s"):
        ratio = pg["rows_per_s"] / copy["rows_per_s"]
        met, note = _judge(ratio >= COPY_RATIO, short.get("postgresql", []) + short.get("copy", []), _unchecked(pg))
        out.append({"key": "copy_ratio", "value": f"{ratio:.2f}× ({pg['rows_per_s']:,.0f} ÷ {copy['rows_per_s']:,.0f} "
                                                  "rows/s, medians)", "met": met, "note": note})
    else:
        out.append({"key": "copy_ratio", "value": "not measured", "met": None})
    out[-1].update(target="loader rows/s ÷ PostgreSQL's own COPY of the same rows (psql `\\copy` from a file, same "
                          "run) — the sink's physical limit", threshold=f"≥ {COPY_RATIO}")

    if cp and cp.get("records_per_s") and (pg or sqlite):
        short_cp = [s for k in ("cp", "postgresql", "sqlite") for s in short.get(k, [])]
        out.append({"key": "consumer_ratio", "met": "reported",
                    "value": "; ".join(f"{sink_name(r['sink'])} {r['records_per_s'] / cp['records_per_s']:.3f}×"
                                       for r in (pg, sqlite) if r)
                    + f" (ConsumerPerformance {cp['records_per_s']:,.0f} records/s over {cp['records']:,} records)",
                    "note": ("not ≥ 20 s or ≥ 1M records after a warm-up: " + ", ".join(short_cp))
                    if short_cp else ""})
    else:
        out.append({"key": "consumer_ratio", "value": "not measured", "met": None})
    out[-1].update(target="loader records/s ÷ ConsumerPerformance records/s (same topics, ≥ 1M records)",
                   threshold="reported")

    at5k = [r for r in results["latency"]["rows"] if r["rate"] == LATENCY_RATE]
    out.append({"key": "latency", "target": "end-to-end p99 at 5k msg/s, commit included",
                "threshold": f"≤ {P99_MS_AT_5K:.0f} ms",
                "value": "; ".join(f"{sink_name(r['sink'])} {figure(r, 'p99', 'p99_min', 'p99_max', ' ms')} (achieved "
                                   f"{r['achieved_rate']:,.0f} msg/s)" for r in at5k) or "5k msg/s not run",
                "met": all(r["p99"] <= P99_MS_AT_5K and r["achieved_rate"] >= 0.95 * LATENCY_RATE for r in at5k)
                if at5k else None,
                "note": "" if all(r["achieved_rate"] >= 0.95 * LATENCY_RATE for r in at5k) else
                "the generator did not reach 95 % of 5k msg/s: a p99 at a lower rate does not count"})

    prod = results["produce"]
    py = next((r for r in prod["rows"] if r.get("key") == "python"), None)
    pp = next((r for r in prod["rows"] if r.get("key") == "pp"), None)
    if py and pp and pp.get("records_per_s"):
        ratio = py["records_per_s"] / pp["records_per_s"]
        met, note = _judge(ratio >= PRODUCER_RATIO, short.get("pp", []) + short.get("python", []))
        out.append({"key": "producer", "value": f"{ratio:.2f}× ({figure(py)} ÷ {figure(pp)} records/s, medians)",
                    "met": met, "note": note})
    else:
        out.append({"key": "producer", "value": "not measured", "met": None})
    out[-1].update(target="Python produce path ÷ ProducerPerformance, same bytes and settings",
                   threshold=f"≥ {PRODUCER_RATIO}")

    gen = results.get("generation")
    out.append({"key": "generation", "target": "Faker generator records/s on one core",
                "threshold": f"≥ {GENERATOR_PER_S:,}",
                "value": f"{figure(gen)} records/s" if gen and gen.get("runs") else "not measured",
                "met": gen["records_per_s"] >= GENERATOR_PER_S if gen and gen.get("runs") else None})

    mem = results.get("memory")
    row: dict[str, Any] = {"key": "memory", "target": "`mbyn produce clickstream` RSS growth over 10M records",
                           "threshold": f"≤ {RSS_GROWTH_MB:.0f} MB", "value": "not measured", "met": None}
    if mem and mem.get("samples"):
        reached = mem["records"] >= MEMORY_RECORDS
        row.update(value=f"{mem['growth_max_mib'] * MB_PER_MIB:+.2f} MB highest "
                         f"({mem['growth_last_mib'] * MB_PER_MIB:+.2f} MB at the end) over {mem['records']:,} records",
                   met=mem["growth_max_mib"] * MB_PER_MIB <= RSS_GROWTH_MB if reached else None,
                   note="" if reached else
                   f"not judged: {mem['records']:,} of {MEMORY_RECORDS:,} records reached ({mem['stopped_by']})")
    out.append(row)

    air = results.get("airflow", {})
    measured = bool(air.get("measured") and air.get("samples"))
    out.append({"key": "airflow", "target": "alert → DAG run started", "threshold": f"≤ {ALERT_TO_RUN_S:.0f} s",
                "value": f"median {air['median_s']:.2f} s, max {air['max_s']:.2f} s over {len(air['samples'])} alerts"
                if measured else "not measured in this run",
                "met": air["max_s"] <= ALERT_TO_RUN_S if measured else None})
    return out


def figure(row: dict[str, Any], key: str = "records_per_s", low: str = "min", high: str = "max",
           unit: str = "") -> str:
    """``median (min–max)`` of a figure repeated over runs; just the value when it ran once."""
    if low not in row or row[low] == row[high]:
        return f"{row[key]:,.0f}{unit}"
    return f"{row[key]:,.0f}{unit} ({row[low]:,.0f}–{row[high]:,.0f})"


def sink_name(key: str) -> str:
    return {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(key, key)


def areas(profile: dict[str, Any] | None, n: int = 4) -> str:
    if not profile:
        return "no profile in this run"
    return ", ".join(f"{area} {share:.0%}" for area, _s, share in profile["areas"][:n])


def _consume(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in results["consume"]["rows"] if r.get("key") == key), None)


def _best_scaling(results: dict[str, Any]) -> str:
    loaders = results.get("scaling", {}).get("loaders", [])
    if not loaders:
        return ""
    best = max(loaders, key=lambda r: r["rows_per_s"])
    return (f" The scaling table's best is {best['rows_per_s']:,.0f} rows/s with {best['replicas']} "
            f"cop{'y' if best['replicas'] == 1 else 'ies'}.")


def _loader_profile(results: dict[str, Any]) -> str:
    loader = results.get("profiles", {}).get("loader")
    sink = f" → {loader['sink']}" if loader and loader.get("sink") else ""
    return f"Profile of the loader{sink} (own time): {areas(loader)}."


def cause(t: dict[str, Any], results: dict[str, Any]) -> str:
    key, met = t["key"], t["met"]
    if met is None:
        return results["airflow"].get("reason", "") if key == "airflow" else t.get("note", "")
    if met is True or met == "reported":
        return t.get("note", "")
    text = {"postgres": _postgres, "copy_ratio": _copy_ratio, "latency": _latency, "producer": _producer,
            "generation": _generation, "memory": _memory, "airflow": _airflow}.get(key)
    why = text(t, results) if text else ""
    return f"{why} ({t['note']})" if t.get("note") else why


def _postgres(t: dict[str, Any], results: dict[str, Any]) -> str:
    pg = _consume(results, "postgresql")
    if not pg or not pg["records_per_s"]:
        return ""
    # rows per record over the same runs (the medians of rows/s and records/s may come from different runs)
    runs = pg.get("runs") or []
    records = sum(int(x.get("records", 0)) for x in runs)
    rows = sum(int(x.get("rows", 0)) for x in runs)
    per_record = rows / records if records else pg["rows_per_s"] / pg["records_per_s"]
    needed = POSTGRES_ROWS_PER_S / per_record
    return (f"{POSTGRES_ROWS_PER_S:,} rows/s is {needed:,.0f} records/s at this data's {per_record:.2f} rows per "
            "record: "
            f"{1e6 / needed:,.1f} µs per record for fetch, decode, validation, row building and the write; one loader "
            f"spends {1e6 / pg['records_per_s']:,.1f} µs of wall time per record. {_loader_profile(results)}"
            f"{_best_scaling(results)} Next step: more loader copies over more partitions on more cores or hosts "
            f"(Architecture.md, \"how far one machine goes\"); on this {results['machine']['cores_logical']}-core "
            "machine the broker, PostgreSQL and the loader share the cores.")


def _copy_ratio(t: dict[str, Any], results: dict[str, Any]) -> str:
    pg = _consume(results, "postgresql")
    copy = results["consume"].get("postgres_copy")
    if not pg or not copy:
        return ""
    return (f"psql's `\\copy` loads {copy['rows_per_s']:,.0f} rows/s into the same tables (no Kafka, no decoding, "
            f"no upsert, no offsets); the loader {pg['rows_per_s']:,.0f}: "
            f"{1e6 / pg['rows_per_s'] - 1e6 / copy['rows_per_s']:,.1f} µs more per row. {_loader_profile(results)} "
            "Next step: the largest area of the profile first; then more copies (the scaling table).")


def _latency(t: dict[str, Any], results: dict[str, Any]) -> str:
    rows = [r for r in results["latency"]["rows"] if r["rate"] == LATENCY_RATE]
    parts = [f"{sink_name(r['sink'])}: p50 {r['p50']:,.0f} ms, p99 {r['p99']:,.0f} ms, p99 before the commit "
             f"{r['p99_before_commit']:,.0f} ms, achieved {r['achieved_rate']:,.0f} msg/s; batches of "
             f"{r.get('batch_records_p50', 0):,.0f} records (median), stamp → commit "
             f"{r.get('write_ms_p50', 0):,.0f} ms median, {r.get('write_ms_p95', 0):,.0f} ms p95" for r in rows]
    wait = results.get("loader_max_wait_ms", 0)
    return ("; ".join(parts) + f". A record waits for its batch to be handed over (as soon as nothing more is "
            f"waiting, at most {wait:.0f} ms, `--max-wait-ms`), for the write and commit of the batch before it, and "
            "for its own. " + _loader_profile(results)
            + " The gap between the p99 before and after the commit is the write itself; the rest is the wait for "
              "the hand-over and for the batch before it. Next step: the largest area of the loader's profile, and "
              "smaller batches at this rate (`--batch-size`, `--max-wait-ms`).")


def _producer(t: dict[str, Any], results: dict[str, Any]) -> str:
    prof = results.get("profiles", {}).get("producer")
    py = next((r for r in results["produce"]["rows"] if r.get("key") == "python"), None)
    cores = ""
    if py and py.get("runs") and all("cpu_seconds" in x for x in py["runs"]):
        cpu = sum(x["cpu_seconds"] for x in py["runs"]) / sum(x["seconds"] for x in py["runs"])
        cores = (f"The Python side spends {1e6 / py['records_per_s']:,.1f} µs of wall time per record in its one "
                 f"thread (a `produce()` call and a delivery callback per record; librdkafka's own threads compress "
                 f"and send), {cpu:.1f} cores in all. ")
    return (f"{cores}Profile of the Python generator producer (own time; it also generates, validates and keys "
            f"every record, which the pre-built-envelope side does not — read its librdkafka share): {areas(prof)}. "
            "Next step: fewer Python "
            "calls per record (a delivery report counted in bulk, `delivery.report.only.error`), then several "
            "producer processes (the scaling table's generator instances).")


def _generation(t: dict[str, Any], results: dict[str, Any]) -> str:
    prof = results.get("profiles", {}).get("producer")
    gen = results["generation"]
    return (f"{1e6 / gen['records_per_s']:,.1f} µs per record on one core (target {1e6 / GENERATOR_PER_S:,.0f} µs). "
            f"Profile of the generator producer (own time): {areas(prof)}. Next step: the largest record-generation "
            "area.")


def _memory(t: dict[str, Any], results: dict[str, Any]) -> str:
    return f"RSS grew {t['value']}; see the memory plot for where. Next step: a heap profile (tracemalloc) of the run."


def _airflow(t: dict[str, Any], results: dict[str, Any]) -> str:
    return ("the path is watcher (shared Kafka stream trigger in the triggerer) → asset event stored → scheduler "
            "loop creates and queues the run → LocalExecutor starts it; each hop waits for its own loop interval.")
