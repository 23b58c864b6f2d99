"""Stage 6 — producer memory: RSS of the whole ``mbyn produce clickstream`` process over 10M records.

``begin`` creates the stage's catalog topics on the bench broker and starts ``mbyn produce clickstream
--count N --seed S`` (generation, validation, encoding, librdkafka and its threads — everything the
producing process holds). A sampler thread reads the child's RSS with psutil every ``INTERVAL_S``; the
producer's own progress lines (records sent so far, one every 5 s) place each sample on the records axis
(linear between two progress lines). Growth is measured from the first sample after ``every`` records of
warm-up (Faker's providers, the session pool, librdkafka's buffers and connections are up by then) to the
last sample, and to the highest; the target is judged on the highest.

It runs alone, after the timed stages (``begin`` then ``collect``), so it takes no CPU from them, at
``nice`` 10 so that the machine stays responsive. ``collect`` lets it run until ``deadline`` and then
stops it with SIGTERM (the producer flushes and prints its summary); the report says how far it got.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.env import Stage, log, mbyn, start

MIB = 1024 * 1024
NICENESS = 10
INTERVAL_S = 1.0
SEED = 7
#: ``stream_to_kafka``'s progress line: "<source>: N records (R/s) sent=..."
PROGRESS = re.compile(r": (\d+) records \(")


@dataclass
class Sampler:
    proc: subprocess.Popen[str]
    stage: Stage
    records: int
    every: int
    started: float
    started_wall: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, rss bytes)
    thread: threading.Thread | None = None

    def sample(self) -> None:
        """Read the child's RSS every INTERVAL_S until it exits (psutil on its pid: the whole process)."""
        import psutil

        try:
            child = psutil.Process(self.proc.pid)
            while self.proc.poll() is None:
                self.samples.append((time.monotonic() - self.started, child.memory_info().rss))
                time.sleep(INTERVAL_S)
        except psutil.NoSuchProcess:
            pass  # it exited between poll() and the read


def begin(stage: Stage, records: int, every: int) -> Sampler:
    from mbyn.kafka.admin import apply_topics

    apply_topics(stage.settings)
    log(f"memory: `mbyn produce clickstream --count {records:,}` against the bench broker (nice {NICENESS}), "
        f"RSS every {INTERVAL_S:.0f} s")
    cmd = ["nice", "-n", str(NICENESS), *mbyn("produce", "clickstream", "--count", str(records), "--seed", str(SEED))]
    sampler = Sampler(start(cmd, stage.env(), stage.folder / "memory.log"), stage, records, every, time.monotonic(),
                      time.time())
    sampler.thread = threading.Thread(target=sampler.sample, name="rss-sampler", daemon=True)
    sampler.thread.start()
    return sampler


def _records_axis(sampler: Sampler, sent: int, ended: float) -> Callable[[float], int]:
    """Seconds since the start → records sent by then, linear between the producer's progress lines."""
    points = [(0.0, 0)]
    for line in (sampler.stage.folder / "memory.log").read_text(errors="replace").splitlines():
        m = PROGRESS.search(line)
        if m is None:
            continue
        try:  # logging's "%(asctime)s": local time, milliseconds after the comma
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        except ValueError:
            continue
        points.append((stamp - sampler.started_wall, int(m.group(1))))
    points.append((ended, sent))
    points.sort()
    times = [t for t, _ in points]

    def records_at(t: float) -> int:
        i = bisect_left(times, t)
        if i == 0:
            return points[0][1]
        if i >= len(points):
            return points[-1][1]
        (t0, n0), (t1, n1) = points[i - 1], points[i]
        return round(n0 + (n1 - n0) * (t - t0) / (t1 - t0)) if t1 > t0 else n1

    return records_at


def collect(sampler: Sampler, deadline: float) -> dict[str, Any]:
    """Wait until the producer finishes or ``deadline`` (monotonic) passes, then stop it and read the samples."""
    proc = sampler.proc
    stopped_by = "records"
    remaining = deadline - time.monotonic()
    if proc.poll() is None:
        log(f"memory: waiting up to {max(remaining, 0):.0f}s for {sampler.records:,} records")
    try:
        out, _ = proc.communicate(timeout=max(remaining, 1.0))
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
        stopped_by = "time budget of the stage"
    ended = time.monotonic() - sampler.started
    if sampler.thread is not None:
        sampler.thread.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"`mbyn produce clickstream` failed (exit {proc.returncode}); "
                           f"see {sampler.stage.folder / 'memory.log'}")
    summary = next((line for line in reversed(out.splitlines()) if line.startswith("{")), "{}")
    result = json.loads(summary)
    sent = int(result.get("records", 0))
    seconds = float(result.get("seconds") or ended)
    records_at = _records_axis(sampler, sent, ended)
    samples = [(records_at(t), rss) for t, rss in sampler.samples]
    if len(samples) < 2:
        raise RuntimeError(f"the RSS sampler took {len(samples)} sample(s) before the producer stopped")
    warm = next((s for s in samples if s[0] >= sampler.every), samples[-1])
    after = [s for s in samples if s[0] >= warm[0]]
    last = samples[-1]
    growth_last = (last[1] - warm[1]) / MIB
    growth_max = (max(s[1] for s in after) - warm[1]) / MIB
    log(f"memory: {sent:,} records in {seconds:.0f}s ({sent / max(seconds, 1e-9):,.0f}/s), highest RSS growth "
        f"{growth_max:+.2f} MiB")
    return {"what": "The whole `mbyn produce clickstream` process (generation, validation, encoding, librdkafka "
                    "and its threads) against the bench broker",
            "target_records": sampler.records, "records": sent, "seconds": seconds, "stopped_by": stopped_by,
            "rate": sent / max(seconds, 1e-9), "every": sampler.every, "warmup_records": sampler.every,
            "interval_s": INTERVAL_S, "niceness": NICENESS, "producer_summary": result,
            "baseline_rss_mib": warm[1] / MIB, "start_rss_mib": samples[0][1] / MIB,
            "growth_last_mib": growth_last, "growth_max_mib": growth_max, "samples": samples}
