"""Stage 2 — consume into the warehouse: Kafka's ConsumerPerformance vs the exactly-once warehouse-loader.

The data set: ``records`` envelopes of the generator producer (``produce.python_generator``: keyed JSON
with headers, clickstream + orders, 6 partitions each) written once; every side reads the same records.

* **ConsumerPerformance** takes one topic, so it reads clickstream, then orders; its rate is their records /
  the sum of their ``fetch.time.ms`` (group join excluded). 3 runs, each in a fresh group.
* **The warehouse-loader** (``mbyn consume warehouse-loader --batch-log FILE``), into SQLite and into
  PostgreSQL — each sink on its own, 3 runs each, every run into a fresh warehouse (a fresh SQLite file or
  PostgreSQL database; offsets live in the warehouse, so each run starts from the earliest offset). A run
  stops when the topics are drained (``--idle-exit``) or after ``duration`` seconds. Its figures come from the
  batch log (one line per committed transaction, ``committed_at`` taken after COMMIT returned): the first
  ``WARMUP_S`` seconds of commits are the warm-up; rows/s = rows of the transactions committed after the
  warm-up / (last − warm-up's last ``committed_at``) — counted rows in the wall-clock window, the commit
  included. The warehouse is then read back: the tables must hold exactly the records the log says were
  committed, never more than were produced, and all of them when the run drained the topics.
* **PostgreSQL's own COPY** of the same rows: the rows of the last PostgreSQL run are written to files
  (``\\copy … TO``) and loaded by ``psql`` ``\\copy … FROM`` into empty tables of the same definition
  (``LIKE … INCLUDING ALL``: keys and indexes) — 3 runs; the sink's physical limit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import Stage, finish, libpq_env, log, mbyn, psql_cmd, run, spread, start

CP_CLASS = "org.apache.kafka.tools.ConsumerPerformance"
CP_INTERVAL_MS = 100  # its detailed-stats interval
CP_WARMUP_S = 0.5  # the first half second after its first record is its warm-up (JIT, first fetches)
PROFILER = Path(__file__).resolve().parent / "profiling.py"
IDLE_EXIT_S = 3
WARMUP_S = 1.0  # commits in the first second after the first commit are the warm-up
LONG_ENOUGH_S, LONG_ENOUGH_RECORDS = 20.0, 1_000_000  # a baseline counts ≥ 20 s or ≥ 1M records after warm-up
TABLES = ("clicks", "orders", "order_items")
RECORD_TABLES = ("clicks", "orders")  # one row per Kafka record of this data set


# ConsumerPerformance -----------------------------------------------------------------------------------


def consumer_performance(stage: Stage, topic: str, messages: int, group: str) -> dict[str, Any]:
    """One ConsumerPerformance process over ``messages`` records of ``topic`` in group ``group``.

    With ``--show-detailed-stats`` it prints the cumulative records every ``CP_INTERVAL_MS``; the warm figure is
    the records read between the first line at least ``CP_WARMUP_S`` after the first record (the JIT and the
    first fetches are the warm-up) and the last line, over the time between them. A topic too small to have a
    line after its warm-up has no warm figure (``warm_records`` 0).
    """
    from mbyn.local.kafka import java_cmd

    cmd = java_cmd(stage.settings, CP_CLASS, "--bootstrap-server", stage.settings.bootstrap(), "--topic", topic,
                   "--messages", str(messages), "--group", group, "--timeout", "30000", "--show-detailed-stats",
                   "--reporting-interval", str(CP_INTERVAL_MS), heap="512m", logs_dir=stage.folder / "logs")
    done = run(cmd, stage.env(), timeout=900, log_file=stage.folder / f"{group}.log", what="ConsumerPerformance")
    if "Exiting before consuming" in done.stdout + done.stderr_tail:
        raise RuntimeError(f"ConsumerPerformance read fewer than {messages} records of {topic}:\n{done.stderr_tail}")
    return {"topic": topic, "messages": messages, **cp_progress(done.stdout),
            "wall_seconds": round(done.seconds, 2)}


def cp_progress(stdout: str, warmup_s: float = CP_WARMUP_S) -> dict[str, Any]:
    """The warm window of ConsumerPerformance's detailed-stats lines (time, threadId, MB, MB/s, records, ...)."""
    points = []
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 10 and re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}$", fields[0]):
            at = datetime.strptime(fields[0], "%Y-%m-%d %H:%M:%S:%f").timestamp()
            points.append((at, int(fields[4]), float(fields[2]), float(fields[7])))
    if not points:
        raise RuntimeError(f"ConsumerPerformance printed no progress line:\n{stdout[-2000:]}")
    first = points[0][0]
    warm = next((i for i, point in enumerate(points) if point[0] >= first + warmup_s), None)
    if warm is None or warm == len(points) - 1:
        records, seconds, mb = 0, 0.0, 0.0
    else:
        records = points[-1][1] - points[warm][1]
        seconds = points[-1][0] - points[warm][0]
        mb = points[-1][2] - points[warm][2]
    return {"warm_records": records, "warm_seconds": round(seconds, 3), "warm_mb": round(mb, 3),
            "warmup_records": points[warm][1] if warm is not None else points[-1][1],
            "records_per_s": records / seconds if seconds else 0.0, "lines": len(points),
            # the whole run (fetch time of every interval), for a data set too small for a warm figure (smoke)
            "all_records": points[-1][1], "all_seconds": round(sum(point[3] for point in points) / 1000, 3)}


def consumer_performance_runs(source: Stage, per_topic: dict[str, int], runs: int) -> dict[str, Any]:
    """``runs`` passes over every topic of the data set; rate = warm records / warm seconds over the topics."""
    passes = []
    for i in range(runs):
        parts = [consumer_performance(source, source.prefix + topic, n, f"{source.prefix}perf-consumer-{i + 1}")
                 for topic, n in per_topic.items() if n]
        records = sum(p["warm_records"] for p in parts)
        seconds = sum(p["warm_seconds"] for p in parts)
        warmup = sum(p["warmup_records"] for p in parts)
        if not records:  # too small a data set for a warm figure: the whole run, judged "no warm-up left out"
            records, warmup = sum(p["all_records"] for p in parts), 0
            seconds = max(sum(p["all_seconds"] for p in parts), 1e-3)
        passes.append({"records": records, "seconds": seconds, "records_per_s": records / seconds,
                       "warmup_records": warmup,
                       "long_enough": seconds >= LONG_ENOUGH_S or records >= LONG_ENOUGH_RECORDS, "topics": parts})
        log(f"consume: ConsumerPerformance run {i + 1}/{runs}: {passes[-1]['records_per_s']:,.0f} records/s over "
            f"{records:,} records after the warm-up")
    rate = spread([p["records_per_s"] for p in passes])
    return {"key": "cp", "name": "Kafka ConsumerPerformance (Java)", "sink": "none (discards)",
            "records": passes[0]["records"], "records_per_s": rate["median"], "min": rate["min"],
            "max": rate["max"], "warmup_s": CP_WARMUP_S, "interval_ms": CP_INTERVAL_MS, "runs": passes}


# The loader and its batch log ----------------------------------------------------------------------------


def run_loaders(stage: Stage, replicas: int, batch_size: int | None = None, timeout: float = 1800,
                profile: str | None = None, duration: float | None = None) -> list[dict[str, Any]]:
    """Start ``replicas`` warehouse-loader processes at once; wait until each exits (idle or ``duration``).

    Each copy writes its batch log to ``<stage folder>/batches-<replicas>x-<i>.jsonl``
    (``batch_logs`` finds them). ``profile``: run the (single) loader under cProfile (all its threads, see
    ``bench/profiling.py``) into that file.
    """
    args = ["consume", "warehouse-loader", "--idle-exit", str(IDLE_EXIT_S)]
    if duration:
        args += ["--duration", str(duration)]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    procs = []
    started = time.monotonic()
    for i in range(replicas):
        name = f"{replicas}x-{i + 1}"
        copy_args = [*args, "--batch-log", str(stage.folder / f"batches-{name}.jsonl")]
        cmd = [sys.executable, str(PROFILER), profile, *copy_args] if profile else mbyn(*copy_args)
        procs.append((start(cmd, stage.env(), stage.folder / f"loader-{name}.log"),
                      stage.folder / f"loader-{name}.log"))
    return [finish(p, started, path, f"warehouse-loader copy {i + 1}/{replicas}", timeout).summary | {
        "wall_seconds": round(time.monotonic() - started, 2)} for i, (p, path) in enumerate(procs)]


def batch_logs(stage: Stage, pattern: str = "batches-*.jsonl") -> list[dict[str, Any]]:
    """Every line of the stage's batch logs, in commit order."""
    lines = []
    for path in sorted(stage.folder.glob(pattern)):
        for line in path.read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))
    return sorted(lines, key=lambda b: int(b["committed_at_us"]))


def _rows(line: dict[str, Any]) -> int:
    return sum(int(n) for n in line.get("rows", {}).values())


def window(lines: list[dict[str, Any]], warmup_s: float = WARMUP_S) -> dict[str, Any]:
    """Records and rows committed after the warm-up, over the wall-clock window they were committed in.

    The window opens at the last commit of the warm-up (the first ``warmup_s`` after the first commit) and
    closes at the last commit. A run too short for that (smoke) falls back to the window from the first
    commit; a single transaction to its own duration (stamp → commit).
    """
    if not lines:
        return {"records": 0, "rows": 0, "seconds": 0.0, "records_per_s": 0.0, "rows_per_s": 0.0, "batches": 0,
                "warmup_records": 0, "method": "no batch"}
    first = int(lines[0]["committed_at_us"])
    warm = [b for b in lines if int(b["committed_at_us"]) <= first + warmup_s * 1e6]
    method = "after warm-up"
    if len(warm) == len(lines):
        warm, method = lines[:1], "after the first commit (run shorter than the warm-up)"
    counted = lines[len(warm):]
    start_us = int(warm[-1]["committed_at_us"])
    if not counted:
        counted, start_us, method = lines, int(lines[0]["loaded_at_us"]), "one transaction, stamp → commit"
    seconds = max((int(lines[-1]["committed_at_us"]) - start_us) / 1e6, 1e-6)
    records = sum(int(b["records"]) for b in counted)
    rows = sum(_rows(b) for b in counted)
    return {"records": records, "rows": rows, "seconds": seconds, "records_per_s": records / seconds,
            "rows_per_s": rows / seconds, "batches": len(counted),
            "warmup_records": sum(int(b["records"]) for b in lines) - records, "method": method}


def table_rows(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from mbyn.warehouse.engine import make_engine
    from mbyn.warehouse.schema import clicks, order_items, orders

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                    for t in (clicks, orders, order_items)}
    finally:
        engine.dispose()


def loader_run(stage: Stage, expected: int, summaries: list[dict[str, Any]],
               warmup_s: float = WARMUP_S) -> dict[str, Any]:
    """One loader run's figures from its batch log, checked against the warehouse (exactly once).

    Raises when the warehouse holds more records than were produced, or fewer when the run drained the topics.
    """
    lines = batch_logs(stage)
    rows = table_rows(stage.settings.warehouse())
    loaded = sum(rows[t] for t in RECORD_TABLES)
    logged_rows: dict[str, int] = {}
    for line in lines:
        for table, n in line.get("rows", {}).items():
            logged_rows[table] = logged_rows.get(table, 0) + int(n)
    drained = loaded == expected
    if loaded > expected:
        raise RuntimeError(f"{stage.name}: the warehouse holds {loaded} records, {expected} were produced")
    if not lines:
        raise RuntimeError(f"{stage.name}: no batch log in {stage.folder} (loader without --batch-log?)")
    stopped = sorted({str(s.get("stopped_by", "?")) for s in summaries})
    if stopped == ["idle"] and loaded != expected:
        raise RuntimeError(f"{stage.name}: the loader went idle with {loaded} of {expected} records loaded")
    measured = window(lines, warmup_s)
    return {**measured, "loaded_records": loaded, "table_rows": rows, "logged_rows": logged_rows,
            "log_matches_warehouse": {t: logged_rows.get(t, 0) for t in TABLES} == rows,
            "long_enough": measured["seconds"] >= LONG_ENOUGH_S or measured["records"] >= LONG_ENOUGH_RECORDS,
            "drained": drained, "stopped_by": stopped, "copies": len(summaries),
            "wall_seconds": max(s["wall_seconds"] for s in summaries),
            "dead_lettered": sum(int(s.get("dead_lettered", 0)) for s in summaries)}


def loader_runs(env: Any, source: Stage, sink: str, expected: int, runs: int, duration: float | None,
                label: str) -> tuple[dict[str, Any], Stage]:
    """``runs`` loader runs into fresh warehouses of ``sink`` ("sqlite" / "postgresql"), one copy each.

    Returns the row (median and range of the runs, every run's figures) and the last run's stage.
    """
    out = []
    stage = source
    for i in range(runs):
        stage = fresh_warehouse(env, source, f"consume-{sink}-{i + 1}", sink)
        out.append(loader_run(stage, expected, run_loaders(stage, 1, duration=duration)))
        log(f"consume: loader → {sink} run {i + 1}/{runs}: {out[-1]['records_per_s']:,.0f} records/s, "
            f"{out[-1]['rows_per_s']:,.0f} rows/s over {out[-1]['seconds']:.1f} s")
    records = spread([r["records_per_s"] for r in out])
    rows = spread([r["rows_per_s"] for r in out])
    return {"key": sink, "name": label, "sink": sink, "records": out[0]["records"],
            "records_per_s": records["median"], "min": records["min"], "max": records["max"],
            "rows_per_s": rows["median"], "rows_min": rows["min"], "rows_max": rows["max"], "runs": out}, stage


def fresh_warehouse(env: Any, source: Stage, name: str, sink: str) -> Stage:
    """A stage reading ``source``'s topics into a fresh warehouse of ``sink``."""
    url = env.postgres_database(f"bench_{name.replace('-', '_')}_{source.prefix.strip('-')}") \
        if sink == "postgresql" else None
    return same_topics(source, env.stage(name, warehouse_url=url))


def same_topics(source: Stage, target: Stage) -> Stage:
    """``target``'s folder and warehouse, reading ``source``'s topics (the same prefix, hence the same group).

    Each run starts from the earliest offsets anyway: exactly-once offsets live in the (fresh) warehouse.
    """
    from mbyn.settings import load_settings

    fields = {name: getattr(target.settings, name) for name in type(target.settings).model_fields}
    settings = load_settings(**{**fields, "topic_prefix": source.prefix})
    return Stage(target.name, settings, target.folder)


# PostgreSQL's own COPY ---------------------------------------------------------------------------------


def _psql(url: str, *commands: str, timeout: float = 1800) -> float:
    """Run ``psql`` with ``commands`` (one ``-c`` each) against ``url``; its wall seconds."""
    import os

    cmd = [psql_cmd(), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        cmd += ["-c", c]
    started = time.monotonic()
    done = subprocess.run(cmd, env={**os.environ, **libpq_env(url)}, capture_output=True, text=True,
                          timeout=timeout, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"psql failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


def postgres_copy(url: str, folder: Path, runs: int) -> dict[str, Any]:
    """PostgreSQL's own load rate of the rows in ``url``'s warehouse: psql ``\\copy FROM`` files, ``runs`` times.

    The rows are written once to text files (``\\copy <table> TO``); each run creates empty tables
    ``LIKE <table> INCLUDING ALL`` (same columns, keys and indexes), times one psql process loading the three
    files (``\\copy … FROM``, each its own transaction, connection included), and drops them.
    """
    files = {t: folder / f"copy-{t}.tsv" for t in TABLES}
    _psql(url, *(f"\\copy {t} TO '{files[t]}'" for t in TABLES))
    rows = {t: sum(1 for _ in files[t].open("rb")) for t in TABLES}
    total = sum(rows.values())
    out = []
    for i in range(runs):
        _psql(url, *(f"DROP TABLE IF EXISTS bench_copy_{t}; CREATE TABLE bench_copy_{t} (LIKE {t} INCLUDING ALL)"
                     for t in TABLES))
        seconds = _psql(url, *(f"\\copy bench_copy_{t} FROM '{files[t]}'" for t in TABLES))
        _psql(url, *(f"DROP TABLE bench_copy_{t}" for t in TABLES))
        out.append({"rows": total, "seconds": seconds, "rows_per_s": total / seconds})
        log(f"consume: PostgreSQL \\copy run {i + 1}/{runs}: {out[-1]['rows_per_s']:,.0f} rows/s")
    for path in files.values():
        path.unlink(missing_ok=True)
    rate = spread([r["rows_per_s"] for r in out])
    return {"rows": total, "rows_by_table": rows, "rows_per_s": rate["median"], "min": rate["min"],
            "max": rate["max"], "runs": out, "tool": "psql \\copy FROM a text file, into LIKE … INCLUDING ALL"}


# The stage -----------------------------------------------------------------------------------------------


def measure(env: Any, source: Stage, per_topic: dict[str, int], runs: int, duration: float | None) -> dict[str, Any]:
    """ConsumerPerformance, then the loader into SQLite and into PostgreSQL, then PostgreSQL's COPY."""
    total = sum(per_topic.values())
    log(f"consume: ConsumerPerformance over {total:,} records ({per_topic}), {runs} runs")
    cp = consumer_performance_runs(source, per_topic, runs)
    sqlite, _ = loader_runs(env, source, "sqlite", total, runs, duration,
                            "mbyn warehouse-loader → SQLite (exactly once)")
    rows = [cp, sqlite]
    copy: dict[str, Any] | None = None
    if env.postgres is not None:
        pg, last = loader_runs(env, source, "postgresql", total, runs, duration,
                               "mbyn warehouse-loader → PostgreSQL (exactly once)")
        rows.append(pg)
        copy = postgres_copy(last.settings.warehouse(), last.folder, runs)
        pg["copy_ratio"] = pg["rows_per_s"] / copy["rows_per_s"]
    for row in rows:
        row["ratio"] = row["records_per_s"] / cp["records_per_s"]
    return {"records": total, "per_topic": per_topic, "runs": runs, "duration": duration, "warmup_s": WARMUP_S,
            "rows": rows, "postgres_copy": copy, "postgres_error": env.postgres_error,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
