"""Stage 1 — produce: the Python produce path vs Kafka's ProducerPerformance on the same bytes; the Java
payments service; the Faker generator's cost on one core.

* **Same bytes.** ``payloads.txt`` holds ``payloads`` real generator envelopes (``shop_events(seed)``,
  validated and encoded exactly as the producer sends them: clickstream and orders in the generator's mix),
  one per line. ProducerPerformance reads it with ``--payload-file``/``--payload-delimiter`` and picks a
  random line per record; the Python side (``bench/worker.py produce-payloads``: mbyn's ``TopicProducer``
  with mbyn's producer settings, ``send_raw`` of the pre-built bytes) sends the lines in order.
  ProducerPerformance cannot send keys or headers, so neither side does here (the table says so).
* **Same settings.** ``acks``, idempotence, compression, ``linger.ms`` and ``batch.size`` from
  ``mbyn.kafka.producer.PRODUCER_DEFAULTS`` for both (and for the Java payments service, which uses them too);
  each run writes a fresh topic of 6 partitions.
* **Warm, repeated.** Each side runs ``runs`` times, interleaved (PP, Python, PP, Python ...). The Python
  side sends ``warmup`` records and flushes before its timer starts, then times ``records`` records (first
  send … last acknowledgement). ProducerPerformance reports a window every 5 s: its first window (JVM start,
  JIT, metadata) is the warm-up and is left out — rate = (records − first window's) / (time − first
  window's), over ``pp_records`` in all, so that ≥ 1M records are timed (the report flags a run that is
  not). Median and range of the runs.
* **Java payments** ``--synthetic --count java_records``: its own summary's ``send_seconds`` (first send …
  flush, the broker wait excluded); value bytes read back from its topic.
* **Generation** (``bench/worker.py generate``): ``shop_events`` iterated in one single-threaded process,
  no validation, no encoding, no Kafka — records/s on one core, ``runs`` times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from bench.env import BenchEnv, Stage, create_topic, log, mbyn, mean_value_bytes, run, spread, topic_records, worker

PP_CLASS = "org.apache.kafka.tools.ProducerPerformance"
PP_PARTITIONS = 6
MB = 1024 * 1024
#: A ProducerPerformance line: a 5-s window, or (with percentiles) the final total.
PP_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                     r"([\d.]+) ms max latency(?:, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th)?")


@dataclass(frozen=True)
class ProduceSizes:
    """How much stage 1 does (``FULL`` / ``SMOKE``)."""

    runs: int  # repeats of each side (median and range)
    payloads: int  # distinct generator envelopes in the payload file
    warmup: int  # Python side: records sent and flushed before the timer starts
    records: int  # Python side: records timed per run
    pp_records: int  # ProducerPerformance --num-records per run (its first 5-s window is the warm-up)
    java_records: int  # Java payments --synthetic --count
    generation_warmup: int
    generation_records: int  # Faker generator: records timed per run


# pp_records: ProducerPerformance reached ~420k records/s here (2026-12-05): its first 5-s window takes ~2.1M
# records and a run done within that window has no warm-up left out at all, so 5M leaves ≥ 1M timed up to ~800k/s.
FULL = ProduceSizes(runs=3, payloads=50_000, warmup=200_000, records=1_000_000, pp_records=5_000_000,
                    java_records=1_000_000, generation_warmup=50_000, generation_records=500_000)
SMOKE = ProduceSizes(runs=1, payloads=1000, warmup=500, records=3000, pp_records=3000, java_records=1000,
                     generation_warmup=500, generation_records=3000)

DIFFERENCES = (
    "ProducerPerformance sends no keys and no headers (the tool cannot): the Python side sends the same values "
    "unkeyed and without headers too — mbyn's producers key every record and add the source and trace_id "
    "headers (the end-to-end generator row of the consume data set includes them, with generation and validation)",
    "the Python side sends the pre-built bytes as they are (`send_raw`, like ProducerPerformance); mbyn's producers "
    "also check each value against its topic's contract before sending it (the generator row of the consume data "
    "set includes that)",
    "ProducerPerformance picks a random line of the payload file per record; the Python side sends the lines in "
    "order (same values, same mean size)",
    "unkeyed records: Java's sticky partitioner vs librdkafka's (sticky.partitioning.linger.ms, default 10 ms)",
    "buffers: Java's buffer.memory 32 MiB (default) vs librdkafka's queue.buffering.max.messages 200,000 "
    "(mbyn's setting)",
)


def producer_props() -> list[str]:
    """mbyn's producer defaults in Java client terms (``mbyn.kafka.producer.PRODUCER_DEFAULTS``)."""
    from mbyn.kafka.producer import PRODUCER_DEFAULTS as d

    return [f"acks={d['acks']}", f"enable.idempotence={str(d['enable.idempotence']).lower()}",
            f"compression.type={d['compression.type']}", f"linger.ms={d['linger.ms']}",
            f"batch.size={d['batch.size']}"]


def write_payloads(path: Path, seed: int, count: int) -> dict[str, Any]:
    """``count`` generator envelopes, validated and encoded as the producer sends them, one per line."""
    from mbyn.contracts.envelope import encode, validate
    from mbyn.sources.generator import shop_events

    topics: dict[str, int] = {}
    size = 0
    with path.open("wb") as out:
        for record in islice(shop_events(seed), count):
            validate(record.topic, record.value)
            data = encode(record.value)
            if b"\n" in data:  # compact JSON escapes control characters; a newline would split a payload
                raise RuntimeError(f"an encoded envelope contains a newline: {data[:200]!r}")
            out.write(data + b"\n")
            topics[record.topic] = topics.get(record.topic, 0) + 1
            size += len(data)
    return {"records": count, "mean_bytes": round(size / count, 1), "seed": seed, **topics}


def producer_performance(stage: Stage, topic: str, payloads: Path, count: int, log_name: str) -> dict[str, Any]:
    """One ProducerPerformance run; its rate with the first 5-s window (warm-up) left out."""
    from mbyn.local.kafka import java_cmd

    create_topic(stage.settings, topic, PP_PARTITIONS)
    cmd = java_cmd(stage.settings, PP_CLASS, "--topic", topic, "--num-records", str(count),
                   "--payload-file", str(payloads), "--payload-delimiter", "\n", "--throughput", "-1",
                   "--producer-props", f"bootstrap.servers={stage.settings.bootstrap()}", *producer_props(),
                   heap="512m", logs_dir=stage.folder / "logs")
    done = run(cmd, stage.env(), timeout=900, log_file=stage.folder / f"{log_name}.log", what="ProducerPerformance")
    return {**pp_rate(done.stdout), "wall_seconds": round(done.seconds, 2)}


def pp_rate(stdout: str) -> dict[str, Any]:
    """ProducerPerformance's rate after its first 5-s window: (total − window) records / (total − window) time.

    Each line gives records and records/s, so each its duration; a run shorter than one window has no warm-up
    to leave out (the total is the rate).
    """
    lines = [m for m in (PP_LINE.search(line) for line in stdout.splitlines()) if m]
    totals = [m for m in lines if m.group(6) is not None]
    if not totals:
        raise RuntimeError(f"ProducerPerformance printed no summary:\n{stdout[-2000:]}")
    total = totals[-1]
    records, seconds = int(total.group(1)), int(total.group(1)) / float(total.group(2))
    windows = [m for m in lines if m.group(6) is None]
    warm_records, warm_seconds = 0, 0.0
    if windows and int(windows[0].group(1)) < records:
        warm_records = int(windows[0].group(1))
        warm_seconds = warm_records / float(windows[0].group(2))
    timed, timed_s = records - warm_records, seconds - warm_seconds
    return {"records": timed, "seconds": round(timed_s, 3), "records_per_s": timed / timed_s,
            "warmup_records": warm_records, "total_records_per_s": float(total.group(2)),
            "latency_ms": {"avg": float(total.group(4)), "max": float(total.group(5)), "p50": int(total.group(6)),
                           "p95": int(total.group(7)), "p99": int(total.group(8))}}


def python_payloads(stage: Stage, topic: str, payloads: Path, sizes: ProduceSizes, log_name: str) -> dict[str, Any]:
    """One run of mbyn's produce path over the pre-built envelopes (``bench/worker.py produce-payloads``)."""
    create_topic(stage.settings, topic, PP_PARTITIONS)
    done = run(worker("produce-payloads", "--payload-file", str(payloads), "--topic", topic,
                      "--warmup", str(sizes.warmup), "--records", str(sizes.records)),
               stage.env(), timeout=900, log_file=stage.folder / f"{log_name}.log", what="Python produce path")
    s = done.summary
    if s.get("delivered") != sizes.warmup + sizes.records or s.get("failed"):
        raise RuntimeError(f"the Python produce path delivered {s.get('delivered')} of "
                           f"{sizes.warmup + sizes.records}: {s}")
    return {"records": sizes.records, "seconds": round(float(s["seconds"]), 3),
            "records_per_s": sizes.records / float(s["seconds"]), "warmup_records": sizes.warmup,
            "cpu_seconds": round(float(s["cpu_seconds"]), 3), "wall_seconds": round(done.seconds, 2)}


def java_payments(stage: Stage, count: int) -> dict[str, Any]:
    """``mbyn produce payments --synthetic --count N``; the rate from its own summary (first send … flush)."""
    from mbyn.kafka.admin import apply_topics

    apply_topics(stage.settings)
    done = run(mbyn("produce", "payments", "--synthetic", "--count", str(count)), stage.env(), timeout=1800,
               log_file=stage.folder / "java-payments.log", what="Java payments producer")
    summary = done.summary
    if summary.get("delivered") != count:
        raise RuntimeError(f"the Java payments service delivered {summary.get('delivered')} of {count}: {summary}")
    seconds = float(summary["send_seconds"])
    physical = stage.prefix + "payments"
    size = mean_value_bytes(stage.settings, physical)
    return {"records": count, "seconds": seconds, "records_per_s": count / seconds, "value_bytes": round(size, 1),
            "settings": summary.get("producer_settings"), "summary": summary, "wall_seconds": round(done.seconds, 2)}


def _row(key: str, name: str, runs: list[dict[str, Any]], value_bytes: float) -> dict[str, Any]:
    rate = spread([r["records_per_s"] for r in runs])
    for r in runs:
        r["mb_per_s"] = r["records_per_s"] * value_bytes / MB
    return {"key": key, "name": name, "records_per_s": rate["median"], "min": rate["min"], "max": rate["max"],
            "mb_per_s": rate["median"] * value_bytes / MB, "value_bytes": value_bytes,
            "records": int(spread([r["records"] for r in runs])["median"]),
            "seconds": spread([r["seconds"] for r in runs])["median"], "runs": runs}


def measure(env: BenchEnv, sizes: ProduceSizes, seed: int) -> dict[str, Any]:
    """ProducerPerformance and the Python produce path interleaved ``runs`` times, then the Java service."""
    stage = env.stage("produce")
    payloads = stage.folder / "payloads.txt"
    info = write_payloads(payloads, seed, sizes.payloads)
    log(f"produce: {info['records']:,} generator envelopes of {info['mean_bytes']:.0f} bytes (mean) in {payloads}; "
        f"{sizes.runs} run(s) per side")
    pp_runs: list[dict[str, Any]] = []
    py_runs: list[dict[str, Any]] = []
    for i in range(1, sizes.runs + 1):
        pp = producer_performance(stage, f"{stage.prefix}pp-{i}", payloads, sizes.pp_records, f"pp-{i}")
        log(f"produce: run {i}: ProducerPerformance {pp['records_per_s']:,.0f} records/s "
            f"({pp['records']:,} after a warm-up of {pp['warmup_records']:,})")
        pp_runs.append(pp)
        py = python_payloads(stage, f"{stage.prefix}py-{i}", payloads, sizes, f"python-{i}")
        log(f"produce: run {i}: Python produce path {py['records_per_s']:,.0f} records/s")
        py_runs.append(py)
    java = java_payments(env.stage("produce-java"), sizes.java_records)
    log(f"produce: Java payments {java['records_per_s']:,.0f} records/s over {java['records']:,}")
    rows = [_row("pp", "Kafka ProducerPerformance (Java), --payload-file", pp_runs, info["mean_bytes"]),
            _row("python", "mbyn produce path (confluent-kafka), pre-built envelopes", py_runs, info["mean_bytes"]),
            _row("java", "mbyn Java payments --synthetic (kafka-clients)", [java], java["value_bytes"])]
    rows[2]["settings"] = java["settings"]
    for row in rows:
        row["ratio"] = row["records_per_s"] / rows[0]["records_per_s"]
    warmup = (f"Python: {sizes.warmup:,} records sent and flushed before the timer, then {sizes.records:,} timed; "
              f"ProducerPerformance: {sizes.pp_records:,} records, its first 5-s window left out; Java payments: "
              f"{sizes.java_records:,} records from its first send, JVM warm-up included")
    return {"settings": producer_props(), "partitions": PP_PARTITIONS, "payload": info, "warmup": warmup,
            "differences": list(DIFFERENCES),
            "runs": sizes.runs, "rows": rows, "ratio": rows[1]["ratio"]}


def generation(env: BenchEnv, sizes: ProduceSizes, seed: int) -> dict[str, Any]:
    """The Faker generator alone (no validation, encoding or Kafka), one process, ``runs`` times."""
    stage = env.stage("generation")
    runs = []
    for i in range(1, sizes.runs + 1):
        done = run(worker("generate", "--seed", str(seed), "--warmup", str(sizes.generation_warmup),
                          "--records", str(sizes.generation_records)),
                   stage.env(), timeout=600, log_file=stage.folder / f"generate-{i}.log", what="generator")
        s = done.summary
        runs.append({"records": s["records"], "seconds": s["seconds"], "records_per_s": s["records_per_s"],
                     "cpu_seconds": s["cpu_seconds"]})
    rate = spread([r["records_per_s"] for r in runs])
    log(f"generation: {rate['median']:,.0f} records/s on one core (range {rate['min']:,.0f}–{rate['max']:,.0f})")
    return {"records": sizes.generation_records, "warmup": sizes.generation_warmup, "runs": runs,
            "records_per_s": rate["median"], "min": rate["min"], "max": rate["max"],
            "what": "`shop_events(seed)` iterated in one single-threaded process after a warm-up: envelope dicts "
                    "as the producer receives them (ids, Faker words, sessions, prices, event times); no "
                    "validation, encoding or Kafka"}


def python_generator(stage: Stage, count: int, seed: int, profile: str | None = None) -> dict[str, Any]:
    """The generator producer end to end (generation, validation, keys, headers) into the stage's catalog topics.

    Fills the consume stage's data set; value bytes from the records read back per topic.
    """
    args = ["produce-generator", "--count", str(count), "--seed", str(seed)]
    if profile:
        args += ["--profile", profile]
    done = run(worker(*args), stage.env(), timeout=1800, log_file=stage.folder / "python-producer.log",
               what="Python generator producer")
    summary = done.summary
    if summary.get("delivered") != count:
        raise RuntimeError(f"Python generator producer delivered {summary.get('delivered')} of {count}: {summary}")
    total_bytes = 0.0
    per_topic = {}
    for topic in ("clickstream", "orders"):
        physical = stage.prefix + topic
        n = topic_records(stage.settings, physical)
        size = mean_value_bytes(stage.settings, physical) if n else 0.0
        per_topic[topic] = {"records": n, "value_bytes": round(size, 1)}
        total_bytes += n * size
    seconds = float(summary["seconds"])
    return {"name": "mbyn generator producer (generation + validation + produce, keyed, headers)", "records": count,
            "seconds": seconds, "records_per_s": count / seconds, "mb_per_s": total_bytes / MB / seconds,
            "value_bytes": round(total_bytes / count, 1), "per_topic": per_topic,
            "wall_seconds": round(done.seconds, 2)}
