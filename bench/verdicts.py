"""The "what limits it — profile — next step" text of each target, from one run's results only.

A met target gets its note (if any); a missed one gets the measured figures behind it, that run's
cProfile summary (top areas of own time) and the next step.
"""

from __future__ import annotations

from typing import Any


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
    return text(t, results) if text else ""


def _postgres(t: dict[str, Any], results: dict[str, Any]) -> str:
    pg = _consume(results, "postgresql")
    if not pg or not pg["records_per_s"]:
        return ""
    per_record = pg["rows_per_s"] / pg["records_per_s"]
    needed = 100_000 / per_record
    return (f"100,000 rows/s is {needed:,.0f} records/s at this data's {per_record:.2f} rows per record: "
            f"{1e6 / needed:,.1f} µs per record for fetch, decode, validation, row building and the write; one loader "
            f"spends {1e6 / pg['records_per_s']:,.1f} µs of wall time per record. {_loader_profile(results)}"
            f"{_best_scaling(results)} Next step: more loader copies over more partitions on more cores or hosts "
            "(Architecture.md, \"how far one machine goes\"); on this 2-core machine the broker, PostgreSQL and the "
            "loader share the cores.")


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
    rows = [r for r in results["latency"]["rows"] if r["rate"] == 5000]
    parts = [f"{sink_name(r['sink'])}: p50 {r['p50']:,.0f} ms, p99 {r['p99']:,.0f} ms, p99 before the commit "
             f"{r['p99_before_commit']:,.0f} ms, achieved {r['achieved_rate']:,.0f} msg/s; batches of "
             f"{r.get('batch_records_p50', 0):,.0f} records (median), stamp → commit "
             f"{r.get('write_ms_p50', 0):,.0f} ms median, {r.get('write_ms_p95', 0):,.0f} ms p95" for r in rows]
    wait = results.get("loader_max_wait_ms", 0)
    return ("; ".join(parts) + f". A record waits for its batch to be handed over (as soon as nothing more is "
            f"waiting, at most {wait:.0f} ms, `--max-wait-ms`), for the write and commit of the batch before it, and "
            "for its own. " + _loader_profile(results)
            + " Next step: the gap between p99 before and after the commit is the write itself — smaller batches "
              "at low rates (`--batch-size`), and overlapping the next fetch with the write.")


def _producer(t: dict[str, Any], results: dict[str, Any]) -> str:
    prof = results.get("profiles", {}).get("producer")
    py = next((r for r in results["produce"]["rows"] if r.get("key") == "python"), None)
    cores = ""
    if py and py.get("runs") and all("cpu_seconds" in x for x in py["runs"]):
        cpu = sum(x["cpu_seconds"] for x in py["runs"]) / sum(x["seconds"] for x in py["runs"])
        cores = (f"The Python side spends {1e6 / py['records_per_s']:,.1f} µs of wall time per record in its one "
                 f"thread (a `produce()` call and a delivery callback per record; librdkafka's own threads compress "
                 f"and send), {cpu:.1f} cores in all. ")
    return (f"{cores}Profile of the Python generator producer (own time): {areas(prof)}. Next step: fewer Python "
            "calls per record (a delivery report counted in bulk, `delivery.report.only.error`), then several "
            "producer processes (the scaling table's generator instances).")


def _generation(t: dict[str, Any], results: dict[str, Any]) -> str:
    prof = results.get("profiles", {}).get("producer")
    gen = results["generation"]
    return (f"{1e6 / gen['records_per_s']:,.1f} µs per record on one core (target 20 µs). Profile of the "
            f"generator producer (own time): {areas(prof)}. Next step: the largest record-generation area.")


def _memory(t: dict[str, Any], results: dict[str, Any]) -> str:
    return f"RSS grew {t['value']}; see the memory plot for where. Next step: a heap profile (tracemalloc) of the run."


def _airflow(t: dict[str, Any], results: dict[str, Any]) -> str:
    return ("the path is watcher (shared Kafka stream trigger in the triggerer) → asset event stored → scheduler "
            "loop creates and queues the run → LocalExecutor starts it; each hop waits for its own loop interval.")
