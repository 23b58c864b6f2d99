"""Stage 1 — produce: Kafka's ProducerPerformance vs the Python generator producer vs the Java payments service.

All three send the same number of records with the same producer settings as mbyn's runtime
(``acks=all``, idempotent, lz4, ``linger.ms=20``, 512 KiB batches) to topics of 6 partitions.
ProducerPerformance sends random values of ``--record-size`` bytes — set to the mean size of the
generator's envelopes, measured from a sample of the same seed, so both move the same bytes. Value
sizes of mbyn's producers are measured by reading records back from their topics. Rates are the
producers' own: records / (first send … last acknowledgement), start-up of the JVM or interpreter
excluded for all three.
"""

from __future__ import annotations

import re
from typing import Any

from bench.env import Stage, create_topic, log, mbyn, mean_value_bytes, run, topic_records, worker

PP_CLASS = "org.apache.kafka.tools.ProducerPerformance"
PP_PARTITIONS = 6
MB = 1024 * 1024
#: The final line of ProducerPerformance.
PP_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                     r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")


def producer_props() -> list[str]:
    """mbyn's producer defaults in Java client terms (``mbyn.kafka.producer.PRODUCER_DEFAULTS``)."""
    from mbyn.kafka.producer import PRODUCER_DEFAULTS as d

    return [f"acks={d['acks']}", f"enable.idempotence={str(d['enable.idempotence']).lower()}",
            f"compression.type={d['compression.type']}", f"linger.ms={d['linger.ms']}",
            f"batch.size={d['batch.size']}"]


def generator_value_bytes(seed: int, sample: int = 3000) -> float:
    """Mean encoded envelope size of the generator's first ``sample`` records (what ProducerPerformance mimics)."""
    from mbyn.contracts.envelope import encode
    from mbyn.sources.generator import shop_events

    sizes = [len(encode(r.value)) for r, _ in zip(shop_events(seed), range(sample), strict=False)]
    return sum(sizes) / len(sizes)


def producer_performance(stage: Stage, count: int, record_size: int) -> dict[str, Any]:
    from mbyn.local.kafka import java_cmd

    topic = f"{stage.prefix}perf"
    create_topic(stage.settings, topic, PP_PARTITIONS)
    cmd = java_cmd(stage.settings, PP_CLASS, "--topic", topic, "--num-records", str(count),
                   "--record-size", str(record_size), "--throughput", "-1",
                   "--producer-props", f"bootstrap.servers={stage.settings.bootstrap()}", *producer_props(),
                   heap="512m", logs_dir=stage.folder / "logs")
    done = run(cmd, stage.env(), timeout=900, log_file=stage.folder / "producer-performance.log",
               what="ProducerPerformance")
    lines = [m for m in (PP_LINE.search(line) for line in done.stdout.splitlines()) if m]
    if not lines:
        raise RuntimeError(f"ProducerPerformance printed no summary:\n{done.stdout[-2000:]}")
    m = lines[-1]
    return {"name": "Kafka ProducerPerformance (Java)", "records": int(m.group(1)), "records_per_s": float(m.group(2)),
            "mb_per_s": float(m.group(3)), "value_bytes": record_size, "seconds": int(m.group(1)) / float(m.group(2)),
            "latency_ms": {"avg": float(m.group(4)), "max": float(m.group(5)), "p50": int(m.group(6)),
                           "p95": int(m.group(7)), "p99": int(m.group(8))},
            "wall_seconds": round(done.seconds, 2)}


def python_generator(stage: Stage, count: int, seed: int, profile: str | None = None) -> dict[str, Any]:
    """The generator producer in its own process; bytes from the records read back per topic."""
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
    return {"name": "mbyn Python generator (confluent-kafka)", "records": count, "seconds": seconds,
            "records_per_s": count / seconds, "mb_per_s": total_bytes / MB / seconds,
            "value_bytes": round(total_bytes / count, 1), "per_topic": per_topic,
            "wall_seconds": round(done.seconds, 2)}


def java_payments(stage: Stage, count: int) -> dict[str, Any]:
    """``mbyn produce payments --synthetic --count N`` (the jar is built by ``mbyn build payments``)."""
    done = run(mbyn("produce", "payments", "--synthetic", "--count", str(count)), stage.env(), timeout=1800,
               log_file=stage.folder / "java-payments.log", what="Java payments producer")
    summary = done.summary
    seconds = float(summary.get("seconds") or done.seconds)
    physical = stage.prefix + "payments"
    n = topic_records(stage.settings, physical)
    if n < count:
        raise RuntimeError(f"the payments topic holds {n} records, expected {count}: {summary}")
    size = mean_value_bytes(stage.settings, physical)
    return {"name": "mbyn Java payments --synthetic (kafka-clients)", "records": count, "seconds": seconds,
            "records_per_s": count / seconds, "mb_per_s": count * size / MB / seconds, "value_bytes": round(size, 1),
            "summary": summary, "wall_seconds": round(done.seconds, 2)}


def measure(pp_stage: Stage, py_stage: Stage, java_stage: Stage, count: int, seed: int) -> dict[str, Any]:
    """Run the three producers one after the other; ratios are to ProducerPerformance's records/s."""
    from mbyn.kafka.admin import apply_topics

    for stage in (py_stage, java_stage):
        apply_topics(stage.settings)
    record_size = round(generator_value_bytes(seed))
    log(f"produce: ProducerPerformance, {count} records of {record_size} bytes")
    pp = producer_performance(pp_stage, count, record_size)
    log(f"produce: ProducerPerformance {pp['records_per_s']:.0f} records/s; now the Python generator producer")
    py = python_generator(py_stage, count, seed)
    log(f"produce: Python generator {py['records_per_s']:.0f} records/s; now the Java payments service")
    java = java_payments(java_stage, count)
    log(f"produce: Java payments {java['records_per_s']:.0f} records/s")
    rows = [pp, py, java]
    for row in rows:
        row["ratio"] = row["records_per_s"] / pp["records_per_s"]
    return {"count": count, "record_size": record_size, "rows": rows, "producer_props": producer_props()}
