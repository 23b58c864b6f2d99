"""The world a benchmark run measures in: its own broker, its own PostgreSQL, fresh topics per stage.

``BenchEnv.start(root)`` starts a single-node Kafka broker (``mbyn.local.kafka.up`` with
``die_with_parent``, so a killed bench leaves no broker behind) and the project's PostgreSQL, both on
free ports with their data under ``root`` (``var/bench/...``); ``stop()`` stops both. Every stage asks
for ``stage(name)``: settings with a fresh topic prefix (fresh topics and consumer groups) on that
broker, exported as ``MBYN_*`` variables for the subprocesses it starts.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbyn.settings import PROJECT_ROOT, Settings, load_settings

VENV_BIN = Path(sys.executable).parent
KAFKA_LIB = PROJECT_ROOT / "var" / "kafka" / "lib"
BROKER_HEAP = "768m"


def log(message: str) -> None:
    """A progress line on stderr (the bench's only chatter; results go to files)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stage:
    """Settings of one stage: the bench broker, a fresh topic prefix, its own folder and warehouse URL."""

    name: str
    settings: Settings
    folder: Path

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    def env(self, **extra: str) -> dict[str, str]:
        """The process environment with this stage's settings as ``MBYN_*`` variables."""
        env = dict(os.environ)
        env.update({"MBYN_BOOTSTRAP_SERVERS": self.settings.bootstrap(), "MBYN_TOPIC_PREFIX": self.prefix,
                    "MBYN_VAR_DIR": str(self.folder), "MBYN_WAREHOUSE_URL": self.settings.warehouse(),
                    "PYTHONUNBUFFERED": "1"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
        env.update(extra)
        return env


@dataclass
class BenchEnv:
    root: Path
    broker: Settings
    postgres: Settings | None = None
    postgres_error: str = ""
    stages: list[Stage] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, with_postgres: bool = True) -> BenchEnv:
        """Start the broker (and PostgreSQL unless told not to) on free ports under ``root``."""
        from mbyn.local import kafka as cluster

        root.mkdir(parents=True, exist_ok=True)
        broker = load_settings(var_dir=root / "broker", kafka_port=free_port(), kafka_controller_port=free_port(),
                               kafka_nodes=1, kafka_heap=BROKER_HEAP, kafka_lib_dir=KAFKA_LIB)
        log(f"starting the bench broker (heap {BROKER_HEAP}) under {broker.var_dir}")
        state = cluster.up(broker, die_with_parent=True)
        broker = load_settings(**{**_fields(broker), "bootstrap_servers": state.bootstrap_servers})
        env = cls(root=root, broker=broker)
        if with_postgres:
            try:
                env._start_postgres()
            except BaseException:  # Ctrl-C while PostgreSQL starts: stop it (if it got that far) and the broker
                env._stop_half_started_postgres()
                cluster.down(env.broker)
                raise
        return env

    def _stop_half_started_postgres(self) -> None:
        from mbyn.local import postgres as postgres_local

        try:
            postgres_local.down(self.postgres or load_settings(var_dir=self.root / "pg"))
        except Exception as exc:  # noqa: BLE001 - best effort on the way out; the interrupt is what matters
            log(f"could not stop the half-started PostgreSQL: {type(exc).__name__}: {exc}")

    def _start_postgres(self) -> None:
        from mbyn.errors import MbynError
        from mbyn.local import postgres as postgres_local

        pg = load_settings(var_dir=self.root / "pg", postgres_port=free_port())
        log(f"starting PostgreSQL on 127.0.0.1:{pg.postgres_port}")
        try:
            postgres_local.up(pg)
        except MbynError as exc:  # the bench still measures SQLite; the report says why Postgres is missing
            self.postgres_error = f"{type(exc).__name__}: {exc}"
            log(f"PostgreSQL unavailable: {self.postgres_error}")
            return
        self.postgres = pg

    def postgres_database(self, name: str) -> str:
        """A fresh database ``name`` on the bench PostgreSQL; its SQLAlchemy URL."""
        from mbyn.local.postgres import LocalPostgres, ensure_database

        if self.postgres is None:
            raise RuntimeError(f"no PostgreSQL in this run: {self.postgres_error}")
        pg = LocalPostgres.from_settings(self.postgres)
        ensure_database(pg, name)
        return pg.url(name)

    def stage(self, name: str, warehouse_url: str | None = None) -> Stage:
        """Settings with a fresh topic prefix (``b<hex>-``) and folder for stage ``name``."""
        prefix = f"b{uuid.uuid4().hex[:8]}-"
        folder = self.root / "stages" / f"{name}-{prefix.rstrip('-')}"
        folder.mkdir(parents=True, exist_ok=True)
        url = warehouse_url or f"sqlite:///{folder / 'warehouse.db'}"
        settings = load_settings(var_dir=folder, bootstrap_servers=self.broker.bootstrap(), topic_prefix=prefix,
                                 warehouse_url=url, consumer_session_timeout_s=10.0,
                                 kafka_lib_dir=KAFKA_LIB)
        stage = Stage(name, settings, folder)
        self.stages.append(stage)
        return stage

    def stop(self) -> None:
        """Stop PostgreSQL and the broker (each attempted even if the other fails)."""
        from mbyn.local import kafka as cluster
        from mbyn.local import postgres as postgres_local

        try:
            if self.postgres is not None:
                postgres_local.down(self.postgres)
        finally:
            log("stopping the bench broker")
            cluster.down(self.broker)


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in type(settings).model_fields}


# Subprocesses ------------------------------------------------------------------------------------------


@dataclass
class Finished:
    """A finished subprocess: exit code, wall seconds, stdout, and its last JSON line parsed."""

    returncode: int
    seconds: float
    stdout: str
    stderr_tail: str

    @property
    def summary(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return dict(json.loads(line))
                except ValueError:
                    continue
        return {}


def run(cmd: Sequence[str], env: Mapping[str, str], timeout: float, log_file: Path, what: str) -> Finished:
    """Run ``cmd`` to completion; stderr goes to ``log_file``; raise with its tail when it fails."""
    started = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as err:
        result = subprocess.run(list(cmd), env=dict(env), stdout=subprocess.PIPE, stderr=err, text=True,
                                timeout=timeout, check=False, cwd=PROJECT_ROOT)
    finished = Finished(result.returncode, time.monotonic() - started, result.stdout, tail(log_file))
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}); end of {log_file}:\n{finished.stderr_tail}")
    return finished


#: Every background process ``start`` started, so that an interrupted run can stop those still running
#: (``stop_started``): a SIGTERM to the bench reaches none of them, and an exception while waiting for one of
#: several copies (``run_loaders``, the scaling stage) leaves the others running.
STARTED: list[subprocess.Popen[str]] = []


def start(cmd: Sequence[str], env: Mapping[str, str], log_file: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` in the background (stdout piped, stderr to ``log_file``)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as err:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=PROJECT_ROOT)
    STARTED.append(proc)
    return proc


def stop_started(grace_s: float = 15.0) -> int:
    """SIGTERM every process ``start`` started that is still running, SIGKILL after ``grace_s``; how many."""
    alive = [p for p in STARTED if p.poll() is None]
    for proc in alive:
        try:
            proc.terminate()
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    for proc in alive:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    STARTED.clear()
    return len(alive)


def finish(proc: subprocess.Popen[str], started: float, log_file: Path, what: str, timeout: float) -> Finished:
    """Wait for a background process; terminate it after ``timeout`` (and then report the failure)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        raise RuntimeError(f"{what} did not finish within {timeout:.0f}s; end of {log_file}:\n{tail(log_file)}") \
            from None
    finished = Finished(proc.returncode, time.monotonic() - started, out, tail(log_file))
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); end of {log_file}:\n{finished.stderr_tail}")
    return finished


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def mbyn(*args: str) -> list[str]:
    return [str(VENV_BIN / "mbyn"), *args]


def worker(*args: str) -> list[str]:
    """A command line running ``bench/worker.py`` with this interpreter."""
    return [sys.executable, str(PROJECT_ROOT / "bench" / "worker.py"), *args]


# Kafka helpers -----------------------------------------------------------------------------------------


def create_topic(settings: Settings, name: str, partitions: int) -> None:
    """Create a plain (non-catalog) topic, e.g. the one ProducerPerformance writes to."""
    from confluent_kafka.admin import NewTopic

    from mbyn.kafka.clients import admin_client

    client = admin_client(settings)
    futures = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=60)


def topic_records(settings: Settings, physical: str) -> int:
    """How many records the topic holds (sum of high − low watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": f"bench-count-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(physical, timeout=10).topics[physical]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def mean_value_bytes(settings: Settings, physical: str, sample: int = 2000) -> float:
    """Mean value size over up to ``sample`` records read back from the topic (what was really sent).

    Assigns the partitions directly (no group join, which costs seconds on a busy broker).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap(), "group.id": f"bench-size-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    sizes: list[int] = []
    try:
        partitions = consumer.list_topics(physical, timeout=10).topics[physical].partitions
        consumer.assign([TopicPartition(physical, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(sizes) < sample and len(at_end) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    at_end.add(int(msg.partition() or 0))  # partition EOF (or a transient error: stop reading it)
                elif msg.value() is not None:
                    sizes.append(len(msg.value() or b""))
    finally:
        consumer.close()
    return sum(sizes) / len(sizes) if sizes else 0.0


# Figures -----------------------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median and range of repeated runs (the bench's every repeated figure is reported this way)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "n": 0}
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"median": median, "min": ordered[0], "max": ordered[-1], "n": n}


def psql_cmd() -> str:
    """``psql`` of the PostgreSQL install the bench's server runs from (``mbyn.local.postgres``)."""
    from mbyn.local.postgres import find_bin_dir

    candidate = find_bin_dir() / "psql"
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("psql")
    if found is None:
        raise RuntimeError(f"psql not found (no {candidate}, none on PATH)")
    return found


def libpq_env(url: str) -> dict[str, str]:
    """``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``/``PGDATABASE`` of a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {"PGHOST": u.host or "127.0.0.1", "PGPORT": str(u.port or 5432), "PGUSER": u.username or "",
           "PGDATABASE": u.database or ""}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return env


# Machine -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load, OS, Python, Java and Kafka versions."""
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    kafka = sorted(p.name for p in KAFKA_LIB.glob("kafka-clients-*.jar"))
    match = re.search(r"kafka-clients-([\d.]+)\.jar", kafka[0]) if kafka else None
    load = os.getloadavg()
    import confluent_kafka

    return {
        "cpu": cpu,
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        "kafka": match.group(1) if match else "unknown",
        "confluent_kafka": f"{confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})",
    }
