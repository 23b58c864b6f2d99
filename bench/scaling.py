"""Stage 4 — scaling: warehouse-loader replicas 1…K over one data set, generator instances 1…K.

Loader replicas: K processes of ``mbyn consume warehouse-loader`` started together over stage 1's
topics (clickstream and orders have 6 partitions each) into a fresh PostgreSQL database per K (SQLite
serialises writers, so it cannot scale; without PostgreSQL the SQLite numbers are shown and labelled).
The rate is the steady rate from ``loaded_at`` (see ``bench.consume``), so group joins and the
rebalances while the replicas arrive are not counted as work. With ``duration`` each K runs for that
long instead of until the topics are drained (the steady rate needs a window, not the whole data set).

Generator instances: K processes of the generator producer started together, each sending
``total / K`` records to the same fresh topics; the rate is total records / the slowest instance's
own time (first send … last acknowledgement).
"""

from __future__ import annotations

import time
from typing import Any

from bench.consume import _same_topics, loader_result, run_loaders
from bench.env import Stage, finish, log, start, worker


def loaders(env: Any, source: Stage, total: int, replicas: list[int], duration: float | None) -> list[dict[str, Any]]:
    """K replicas over ``source``'s topics, each K until idle or for ``duration`` seconds."""
    rows = []
    for k in replicas:
        if env.postgres is not None:
            url = env.postgres_database(f"bench_scale_{source.prefix.strip('-')}_{k}")
            target = env.stage(f"scale-loader-{k}", warehouse_url=url)
            sink = "PostgreSQL"
        else:
            target = env.stage(f"scale-loader-{k}")
            sink = "SQLite"
        stage = _same_topics(source, target)
        log(f"scaling: {k} loader replica(s) → {sink}")
        row = loader_result(stage, f"{k} loader(s) → {sink}", k, total, run_loaders(stage, k, duration=duration),
                            complete=duration is None)
        log(f"scaling: {k} loader(s) {row['records_per_s']:.0f} records/s")
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
