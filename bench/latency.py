"""Stage 3 — end-to-end latency: generator at a fixed rate → Kafka → warehouse-loader → committed row.

For each (sink, rate) and each of its runs: fresh topics and a fresh warehouse (SQLite file or PostgreSQL
database), one loader (``--batch-log``) started first and waited for until it owns its partitions, then
the generator producer at that rate for ``seconds``; the loader is stopped once every delivered record
is in the warehouse. Latency of a row = the ``committed_at`` of its batch (taken after COMMIT returned; the
batch log line whose ``loaded_at`` is the row's ``loaded_at``) − the row's ``event_time`` (stamped when
the generator builds the record, before the rate limiter releases it; millisecond resolution, truncated).
The percentiles are over the records built after the first ``WARMUP_S`` seconds of the producer's run (the
producer's connection and first batches, the loader's first fetches, PostgreSQL's cold caches); the p99 over
every record, warm-up included, is kept beside them (``p99_incl_warmup``). The percentiles of a (sink, rate)
are the medians of its runs' percentiles, with their range.
"""

from __future__ import annotations

import math
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.consume import batch_logs, fresh_warehouse
from bench.env import Stage, finish, log, mbyn, run, spread, start, worker

JOIN_TIMEOUT_S = 120
LOADER_IDLE_EXIT_S = 120
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUANTILES = ("p50", "p95", "p99", "max")
WARMUP_S = 3.0  # records built in the producer's first seconds are left out of the judged percentiles


def warmup(seconds: float) -> float:
    """The warm-up left out of a run of ``seconds``: ``WARMUP_S``, at most a quarter of the run (smoke runs)."""
    return min(WARMUP_S, seconds / 4)


def _us(value: datetime) -> int:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


def latencies_ms(url: str, committed: dict[int, int]) -> list[tuple[int, float, float]]:
    """Per clicks/orders row: (event_time µs, committed_at − event_time ms, loaded_at − event_time ms).

    ``committed``: the batch log's ``loaded_at_us`` → ``committed_at_us``.
    """
    from sqlalchemy import select

    from mbyn.warehouse.engine import make_engine
    from mbyn.warehouse.schema import clicks, orders

    engine = make_engine(url)
    out: list[tuple[int, float, float]] = []
    missing = 0
    try:
        with engine.connect() as conn:
            for table in (clicks, orders):
                for event_time, loaded_at in conn.execute(select(table.c.event_time, table.c.loaded_at)):
                    event_us, loaded_us = _us(event_time), _us(loaded_at)
                    commit_us = committed.get(loaded_us)
                    if commit_us is None:
                        missing += 1
                        continue
                    out.append((event_us, (commit_us - event_us) / 1000, (loaded_us - event_us) / 1000))
    finally:
        engine.dispose()
    if missing:
        raise RuntimeError(f"{missing} rows have a loaded_at no batch log line names (loader without --batch-log?)")
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def wait_assigned(log_file: Any, proc: Any, timeout: float = JOIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the loader exited early (status {proc.returncode}); see {log_file}")
        try:
            if "assigned" in log_file.read_text(errors="replace"):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the loader did not join its group within {timeout:.0f}s; see {log_file}")


def committed_records(stage: Stage) -> int:
    return sum(int(b["records"]) for b in batch_logs(stage))


def one_run(stage: Stage, rate: int, seconds: float, batch_size: int | None) -> dict[str, Any]:
    """One loader in its group first, then the generator at ``rate``; the loader is stopped (SIGTERM: it
    finishes and commits its batch) once its batch log counts every delivered record."""
    from mbyn.kafka.admin import apply_topics

    apply_topics(stage.settings)
    # A generous idle exit: the producer's start-up on a busy machine must not look like "no more data".
    args = ["consume", "warehouse-loader", "--idle-exit", str(LOADER_IDLE_EXIT_S),
            "--batch-log", str(stage.folder / "batches-latency.jsonl")]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    loader_log = stage.folder / "loader.log"
    loader = start(mbyn(*args), stage.env(), loader_log)
    started = time.monotonic()
    try:
        wait_assigned(loader_log, loader)
        produced = run(worker("produce-generator", "--rate", str(rate), "--duration", str(seconds), "--seed", "11"),
                       stage.env(), timeout=seconds + 300, log_file=stage.folder / "producer.log",
                       what=f"generator at {rate}/s").summary
        deadline = time.monotonic() + LOADER_IDLE_EXIT_S
        while committed_records(stage) < produced["delivered"] and loader.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        if loader.poll() is None:
            loader.send_signal(signal.SIGTERM)
    except BaseException:
        loader.terminate()
        loader.wait(timeout=60)
        raise
    finish(loader, started, loader_log, "warehouse-loader", timeout=120)
    lines = batch_logs(stage)
    committed = {int(b["loaded_at_us"]): int(b["committed_at_us"]) for b in lines}
    every = latencies_ms(stage.settings.warehouse(), committed)
    if len(every) != produced["delivered"]:
        raise RuntimeError(f"{len(every)} rows loaded, {produced['delivered']} records produced at {rate}/s")
    warm_from = min(e for e, _, _ in every) + int(warmup(seconds) * 1_000_000)
    values = [c for e, c, _ in every if e >= warm_from]
    before_commit = [b for e, _, b in every if e >= warm_from]
    writes_ms = [(int(b["committed_at_us"]) - int(b["loaded_at_us"])) / 1000 for b in lines]
    return {"achieved_rate": produced["records"] / produced["seconds"], "seconds": produced["seconds"],
            "records": len(values), "warmup_records": len(every) - len(values), "batches": len(lines),
            "batch_records_p50": percentile([float(b["records"]) for b in lines], 50),
            "write_ms_p50": percentile(writes_ms, 50), "write_ms_p95": percentile(writes_ms, 95),
            "p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
            "max": max(values), "p99_before_commit": percentile(before_commit, 99),
            "p99_incl_warmup": percentile([c for _, c, _ in every], 99)}


def measure(env: Any, runs: list[tuple[str, int, int | None]], repeats: int, seconds: float) -> dict[str, Any]:
    """``repeats`` runs per (sink, rate, loader batch size); batch size None is the loader's default.

    A PostgreSQL entry is skipped (and said so) when the run has no PostgreSQL.
    """
    rows = []
    for sink, rate, batch_size in runs:
        if sink == "postgresql" and env.postgres is None:
            continue
        done = []
        for i in range(repeats):
            label = f"latency-{sink}-{rate}-b{batch_size or 'default'}-{i + 1}"
            log(f"latency: {sink}, {rate} msg/s for {seconds:.0f}s, batch {batch_size or 'default'}, "
                f"run {i + 1}/{repeats}")
            source = env.stage(label)
            stage = fresh_warehouse(env, source, label, sink) if sink == "postgresql" else source
            done.append(one_run(stage, rate, seconds, batch_size))
            log(f"latency: achieved {done[-1]['achieved_rate']:,.0f}/s, p50 {done[-1]['p50']:.0f} ms, "
                f"p99 {done[-1]['p99']:.0f} ms (commit included)")
        row: dict[str, Any] = {"sink": sink, "rate": rate, "batch_size": batch_size, "runs": done,
                               "records": sum(r["records"] for r in done)}
        for key in (*QUANTILES, "achieved_rate", "p99_before_commit", "p99_incl_warmup", "batch_records_p50",
                    "write_ms_p50", "write_ms_p95"):
            figure = spread([r[key] for r in done])
            row[key], row[f"{key}_min"], row[f"{key}_max"] = figure["median"], figure["min"], figure["max"]
        rows.append(row)
    return {"seconds": seconds, "repeats": repeats, "warmup_s": warmup(seconds), "rows": rows}
