"""Stage 2 — consume into the warehouse: Kafka's ConsumerPerformance vs the exactly-once warehouse-loader.

The data is what stage 1's Python producer wrote (clickstream + orders under its prefix).
ConsumerPerformance reads the clickstream topic (it takes one topic) and reports ``fetch.nMsg.sec``:
records / fetch time, group join excluded. The loader (``mbyn consume warehouse-loader --idle-exit 3``,
one process per replica) reads every catalog topic of that prefix into a fresh warehouse — SQLite file
or a fresh PostgreSQL database — and its rate is measured the same way, without start-up and group
join: from the warehouse itself, every fact row carries ``loaded_at`` (stamped per batch just before the
INSERT and the commit of that batch), so

    steady rate = records loaded after the first batch / (last loaded_at − first loaded_at).

Rows/s counts table rows (clicks + orders + order_items); records/s counts Kafka records.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from bench.env import Stage, finish, log, mbyn, run, start

CP_CLASS = "org.apache.kafka.tools.ConsumerPerformance"
IDLE_EXIT_S = 3


def consumer_performance(stage: Stage, topic: str, messages: int) -> dict[str, Any]:
    from mbyn.local.kafka import java_cmd

    cmd = java_cmd(stage.settings, CP_CLASS, "--bootstrap-server", stage.settings.bootstrap(), "--topic", topic,
                   "--messages", str(messages), "--group", f"{stage.prefix}perf-consumer", "--timeout", "30000",
                   heap="512m", logs_dir=stage.folder / "logs")
    done = run(cmd, stage.env(), timeout=900, log_file=stage.folder / "consumer-performance.log",
               what="ConsumerPerformance")
    lines = [line for line in done.stdout.splitlines() if re.match(r"^\d{4}-\d\d-\d\d", line.strip())]
    if not lines:
        raise RuntimeError(f"ConsumerPerformance printed no result:\n{done.stdout[-2000:]}")
    fields = [f.strip() for f in lines[-1].split(",")]
    # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    # rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    records = int(fields[4])
    if records < messages:
        raise RuntimeError(f"ConsumerPerformance read {records} of {messages} records")
    return {"name": "Kafka ConsumerPerformance (Java)", "records": records, "mb": float(fields[2]),
            "records_per_s": float(fields[9]), "records_per_s_incl_join": float(fields[5]),
            "rebalance_ms": float(fields[6]), "fetch_ms": float(fields[7]), "sink": "none (discards)",
            "wall_seconds": round(done.seconds, 2)}


def run_loaders(stage: Stage, replicas: int, batch_size: int | None = None, timeout: float = 1800,
                profile: str | None = None, duration: float | None = None) -> list[dict[str, Any]]:
    """Start ``replicas`` warehouse-loader processes at once and wait until each exits idle (or ``duration``).

    ``profile``: run the (single) loader under cProfile, writing the statistics to that file.
    """
    from bench.env import worker

    args = ["consume", "warehouse-loader", "--idle-exit", str(IDLE_EXIT_S)]
    if duration:
        args += ["--duration", str(duration)]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    procs = []
    started = time.monotonic()
    for i in range(replicas):
        cmd = worker("profile-mbyn", profile, *args) if profile else mbyn(*args)
        procs.append((start(cmd, stage.env(), stage.folder / f"loader-{replicas}x-{i + 1}.log"),
                      stage.folder / f"loader-{replicas}x-{i + 1}.log"))
    return [finish(p, started, path, f"warehouse-loader replica {i + 1}/{replicas}", timeout).summary | {
        "wall_seconds": round(time.monotonic() - started, 2)} for i, (p, path) in enumerate(procs)]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def loaded_batches(url: str) -> list[tuple[datetime, int]]:
    """(loaded_at, records) per loader batch, from clicks and orders (one row per Kafka record)."""
    from sqlalchemy import func, select

    from mbyn.warehouse.engine import make_engine
    from mbyn.warehouse.schema import clicks, orders

    engine = make_engine(url)
    counts: dict[datetime, int] = {}
    try:
        with engine.connect() as conn:
            for table in (clicks, orders):
                for loaded_at, n in conn.execute(select(table.c.loaded_at, func.count()).group_by(table.c.loaded_at)):
                    key = _aware(loaded_at)
                    counts[key] = counts.get(key, 0) + int(n)
    finally:
        engine.dispose()
    return sorted(counts.items())


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


def steady_rate(batches: list[tuple[datetime, int]]) -> float | None:
    """Records per second after the first batch (None when there is only one batch)."""
    if len(batches) < 2:
        return None
    span = (batches[-1][0] - batches[0][0]).total_seconds()
    if span <= 0:
        return None
    return sum(n for _, n in batches[1:]) / span


def loader_result(stage: Stage, label: str, replicas: int, expected: int, summaries: list[dict[str, Any]],
                  complete: bool = True) -> dict[str, Any]:
    """Rates of one loader run, read back from its warehouse.

    Raises if a record is missing (``complete``: the loaders ran until idle) or if there are more rows
    than records (never allowed: exactly once).
    """
    url = stage.settings.warehouse()
    batches = loaded_batches(url)
    loaded = sum(n for _, n in batches)
    if loaded > expected or (complete and loaded != expected):
        raise RuntimeError(f"{label}: the warehouse holds {loaded} records, expected {expected} (exactly once)")
    rows = table_rows(url)
    total_rows = sum(rows.values())
    steady = steady_rate(batches)
    wall = max(s["wall_seconds"] for s in summaries) - (IDLE_EXIT_S if complete else 0)
    records_per_s = steady if steady is not None else loaded / wall
    return {"name": label, "replicas": replicas, "records": loaded, "rows": rows, "batches": len(batches),
            "records_per_s": records_per_s, "rows_per_s": records_per_s * total_rows / loaded,
            "records_per_s_incl_start": loaded / wall, "rate_method": "steady" if steady is not None else "wall",
            "consumed": sum(int(s.get("consumed", 0)) for s in summaries),
            "dead_lettered": sum(int(s.get("dead_lettered", 0)) for s in summaries)}


def measure(env: Any, source: Stage, clicks: int, total: int) -> dict[str, Any]:
    """ConsumerPerformance on the clickstream topic, then the loader into SQLite and into PostgreSQL."""
    log(f"consume: ConsumerPerformance over {clicks} clickstream records")
    cp = consumer_performance(source, source.prefix + "clickstream", clicks)
    log(f"consume: ConsumerPerformance {cp['records_per_s']:.0f} records/s; now warehouse-loader → SQLite")
    rows = [cp]
    sqlite = env.stage("consume-sqlite")
    loader_stage = _same_topics(source, sqlite)
    rows.append(loader_result(loader_stage, "mbyn warehouse-loader → SQLite (exactly once)", 1, total,
                              run_loaders(loader_stage, 1)))
    log(f"consume: loader → SQLite {rows[-1]['records_per_s']:.0f} records/s")
    postgres = None
    if env.postgres is not None:
        pg_url = env.postgres_database(f"bench_consume_{source.prefix.strip('-')}")
        loader_stage = _same_topics(source, env.stage("consume-postgres", warehouse_url=pg_url))
        postgres = loader_result(loader_stage, "mbyn warehouse-loader → PostgreSQL (exactly once)", 1, total,
                                 run_loaders(loader_stage, 1))
        rows.append(postgres)
        log(f"consume: loader → PostgreSQL {postgres['records_per_s']:.0f} records/s")
    for row in rows:
        row["ratio"] = row["records_per_s"] / cp["records_per_s"]
    return {"rows": rows, "postgres_error": env.postgres_error}


def _same_topics(source: Stage, target: Stage) -> Stage:
    """``target``'s folder and warehouse, reading ``source``'s topics (the same prefix, hence the same group).

    Each run starts from the earliest offsets anyway: exactly-once offsets live in the (fresh) warehouse.
    """
    from mbyn.settings import load_settings

    fields = {name: getattr(target.settings, name) for name in type(target.settings).model_fields}
    settings = load_settings(**{**fields, "topic_prefix": source.prefix})
    return Stage(target.name, settings, target.folder)
