"""Stage 5 — generator memory: RSS of a process that only generates records (no Kafka, no encoding).

``bench/worker.py memory`` iterates ``shop_events`` in a subprocess and samples its own RSS (psutil)
every ``every`` records. Growth is measured from the first sample after warm-up (the first ``every``
records: Faker's providers, the shop vocabulary and the session pool are built by then) to the last
sample, and to the highest; the target is judged on the highest.

It runs alone, after the timed stages (``begin`` then ``collect``), so it takes no CPU from them; it still
runs at ``nice`` 10 so that the machine stays responsive. ``collect`` lets it continue until ``deadline``
(the run's time budget) and stops it there; the report says how many records were reached.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bench.env import Stage, log, start, worker

MIB = 1024 * 1024
NICENESS = 10


@dataclass
class Sampler:
    proc: subprocess.Popen[str]
    stage: Stage
    records: int
    every: int
    started: float


def begin(stage: Stage, records: int, every: int) -> Sampler:
    log(f"memory: generating up to {records:,} records (nice {NICENESS}), RSS every {every:,}")
    cmd = ["nice", "-n", str(NICENESS), *worker("memory", "--records", str(records), "--every", str(every))]
    return Sampler(start(cmd, stage.env(), stage.folder / "memory.log"), stage, records, every, time.monotonic())


def collect(sampler: Sampler, deadline: float) -> dict[str, Any]:
    """Wait until the sampler finishes or ``deadline`` (monotonic) passes, then stop it and read its samples."""
    proc = sampler.proc
    stopped_by = "records"
    remaining = deadline - time.monotonic()
    if proc.poll() is None:
        log(f"memory: waiting up to {max(remaining, 0):.0f}s more for the generator sampler")
    try:
        out, _ = proc.communicate(timeout=max(remaining, 1.0))
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        stopped_by = "time budget of the run"
    if proc.returncode not in (0, -15):
        raise RuntimeError(f"the generator memory sampler failed (exit {proc.returncode}); "
                           f"see {sampler.stage.folder / 'memory.log'}")
    samples = [json.loads(line) for line in out.splitlines() if line.startswith('{"records"') and '"rss"' in line
               and "stopped_by" not in line]
    if len(samples) < 2:
        raise RuntimeError(f"the generator memory sampler wrote {len(samples)} sample(s) before it was stopped")
    last = samples[-1]
    seconds = float(last["seconds"])
    warm = next((s for s in samples if s["records"] >= sampler.every), last)
    after = [s for s in samples if s["records"] >= warm["records"]]
    growth_last = (last["rss"] - warm["rss"]) / MIB
    growth_max = (max(s["rss"] for s in after) - warm["rss"]) / MIB
    log(f"memory: {last['records']:,} records in {seconds:.0f}s, highest RSS growth {growth_max:+.2f} MiB")
    return {"target_records": sampler.records, "records": last["records"], "seconds": seconds,
            "stopped_by": stopped_by, "rate": last["records"] / max(seconds, 1e-9), "every": sampler.every,
            "niceness": NICENESS, "baseline_rss_mib": warm["rss"] / MIB, "start_rss_mib": samples[0]["rss"] / MIB,
            "growth_last_mib": growth_last, "growth_max_mib": growth_max,
            "samples": [(s["records"], s["rss"]) for s in samples]}
