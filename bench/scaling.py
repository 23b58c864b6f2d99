"""Stage 4 — scaling: warehouse-loader copies 1…K over the partitions, generator instances 1…K.

Loader copies: K processes of ``mbyn consume warehouse-loader`` started together over stage 2's data set
(clickstream and orders, 6 partitions each: a copy gets a share of them) into a fresh PostgreSQL
database per K (SQLite serialises writers, so it cannot scale; without PostgreSQL the SQLite figures are
shown and labelled). Each copy writes its own batch log; rows/s is counted from the merged logs over the
wall-clock window as in stage 2 (``bench.consume.window``), with a longer warm-up (``WARMUP_S``) so that
the group joins and the rebalances while the copies arrive fall in it rather than in the rate. With
``duration`` each K runs that long at most instead of until the topics are drained.

Generator instances: K processes of the generator producer started together, each sending
``total / K`` records to the same fresh topics; the rate is total records / the slowest instance's
own time (first send … last acknowledgement).
"""

from __future__ import annotations

import time
from typing import Any

from bench.consume import fresh_warehouse, loader_run, run_loaders
from bench.env import Stage, finish, log, start, worker

WARMUP_S = 5.0


def loaders(env: Any, source: Stage, total: int, copies: list[int], duration: float | None) -> list[dict[str, Any]]:
    """K copies over ``source``'s topics, each K until idle or for ``duration`` seconds."""
    sink = "postgresql" if env.postgres is not None else "sqlite"
    label = "PostgreSQL" if sink == "postgresql" else "SQLite"
    rows = []
    for k in copies:
        stage = fresh_warehouse(env, source, f"scale-loader-{k}", sink)
        log(f"scaling: {k} loader cop{'y' if k == 1 else 'ies'} → {label}")
        row = loader_run(stage, total, run_loaders(stage, k, duration=duration), warmup_s=WARMUP_S)
        row |= {"name": f"{k} loader(s) → {label}", "sink": sink, "replicas": k}
        log(f"scaling: {k} loader(s) {row['records_per_s']:,.0f} records/s, {row['rows_per_s']:,.0f} rows/s")
        rows.append(row)
    return rows


def generators(env: Any, total: int, instances: list[int]) -> list[dict[str, Any]]:
    from mbyn.kafka.admin import apply_topics

    rows = []
    for k in instances:
        stage = env.stage(f"scale-generator-{k}")
        apply_topics(stage.settings)
        share = total // k
        log(f"scaling: {k} generator instance(s), {share} records each")
        started = time.monotonic()
        procs = [(start(worker("produce-generator", "--count", str(share), "--seed", str(100 + i)), stage.env(),
                        stage.folder / f"generator-{i + 1}.log"), stage.folder / f"generator-{i + 1}.log")
                 for i in range(k)]
        summaries = [finish(p, started, path, f"generator instance {i + 1}/{k}", timeout=1800).summary
                     for i, (p, path) in enumerate(procs)]
        delivered = sum(int(s["delivered"]) for s in summaries)
        if delivered != share * k:
            raise RuntimeError(f"{k} generators delivered {delivered} of {share * k}")
        slowest = max(float(s["seconds"]) for s in summaries)
        rows.append({"instances": k, "records": delivered, "seconds": slowest, "records_per_s": delivered / slowest,
                     "per_instance": [round(int(s["delivered"]) / float(s["seconds"])) for s in summaries]})
        log(f"scaling: {k} generator(s) {rows[-1]['records_per_s']:.0f} records/s")
    return rows
