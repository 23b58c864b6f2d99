"""Stage 3 — end-to-end latency: generator at a fixed rate → Kafka → warehouse-loader → warehouse row.

For each rate: fresh topics, one loader started first and waited for until it owns its partitions, then
the generator producer runs at that rate for a fixed time. Latency per record is the row's
``loaded_at`` minus the envelope's ``event_time`` — both columns already in the schema (nothing added).
``event_time`` is stamped when the generator builds the record (before the rate limiter releases it, so
the producer's own pacing counts against us; millisecond resolution, truncated); ``loaded_at`` is stamped
once per batch just before that batch's INSERT and COMMIT, so the commit itself (a few ms on SQLite) is
not included. Every loaded record counts, including the first ones while the pipeline warms up.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

from bench.consume import _aware
from bench.env import Stage, finish, log, mbyn, run, start, worker

JOIN_TIMEOUT_S = 120
LOADER_IDLE_EXIT_S = 120


def latencies_ms(url: str) -> list[float]:
    """loaded_at − event_time of every clicks and orders row, in milliseconds."""
    from sqlalchemy import select

    from mbyn.warehouse.engine import make_engine
    from mbyn.warehouse.schema import clicks, orders

    engine = make_engine(url)
    out: list[float] = []
    try:
        with engine.connect() as conn:
            for table in (clicks, orders):
                for event_time, loaded_at in conn.execute(select(table.c.event_time, table.c.loaded_at)):
                    out.append((_aware(loaded_at) - _aware(event_time)).total_seconds() * 1000)
    finally:
        engine.dispose()
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


def loaded_count(url: str) -> int:
    from bench.consume import loaded_batches

    return sum(n for _, n in loaded_batches(url))


def one_rate(stage: Stage, rate: int, seconds: float, batch_size: int | None) -> dict[str, Any]:
    """One loader in its group first, then the generator at ``rate``; the loader is stopped (SIGTERM: it
    finishes and commits its batch) once the warehouse holds every delivered record."""
    from mbyn.kafka.admin import apply_topics

    apply_topics(stage.settings)
    # A generous idle exit: the producer's start-up on a busy machine must not look like "no more data".
    args = ["consume", "warehouse-loader", "--idle-exit", str(LOADER_IDLE_EXIT_S)]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    loader_log = stage.folder / "loader.log"
    loader = start(mbyn(*args), stage.env(), loader_log)
    started = time.monotonic()
    url = stage.settings.warehouse()
    try:
        wait_assigned(loader_log, loader)
        produced = run(worker("produce-generator", "--rate", str(rate), "--duration", str(seconds), "--seed", "11"),
                       stage.env(), timeout=seconds + 300, log_file=stage.folder / "producer.log",
                       what=f"generator at {rate}/s").summary
        deadline = time.monotonic() + LOADER_IDLE_EXIT_S
        while loaded_count(url) < produced["delivered"] and loader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if loader.poll() is None:
            loader.send_signal(signal.SIGTERM)
    except BaseException:
        loader.terminate()
        loader.wait(timeout=60)
        raise
    finish(loader, started, loader_log, "warehouse-loader", timeout=120)
    values = latencies_ms(url)
    if len(values) != produced["delivered"]:
        raise RuntimeError(f"{len(values)} rows loaded, {produced['delivered']} records produced at {rate}/s")
    return {"rate": rate, "batch_size": batch_size, "achieved_rate": produced["records"] / produced["seconds"],
            "records": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values)}


def measure(env: Any, runs: list[tuple[int, int | None]], seconds: float) -> dict[str, Any]:
    """One run per (rate, loader batch size) pair; batch size None is the loader's default."""
    rows = []
    for rate, batch_size in runs:
        label = f"latency-{rate}-b{batch_size or 'default'}"
        log(f"latency: {rate} msg/s for {seconds:.0f}s, loader batch size {batch_size or 'default'}")
        row = one_rate(env.stage(label), rate, seconds, batch_size)
        log(f"latency: achieved {row['achieved_rate']:.0f}/s, p50 {row['p50']:.0f} ms, p99 {row['p99']:.0f} ms")
        rows.append(row)
    return {"seconds": seconds, "rows": rows}
