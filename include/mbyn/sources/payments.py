"""Payments service (Java, kafka-clients 4.1): orders → payment outcomes on ``payments``.

The service itself lives in ``include/payments-java/`` (see its README); this module builds and launches
it so that ``mbyn produce payments`` works like every other producer.

* ``build(settings)`` runs ``mvn -q -B package`` only when the shaded jar is missing or older than
  ``pom.xml`` or any file under ``src/`` (``mbyn build`` calls it; so does ``run``), then runs the jar's
  ``--check`` once under ``-XX:ArchiveClassesAtExit`` to record a class-data-sharing archive beside it:
  the check proves the jar loads the catalog and plans valid payments, and the archive roughly halves
  every later start-up's CPU time. A file lock keeps two launchers from building at once. The first
  build on a fresh machine downloads the pinned plugins and dependencies from Maven Central (a minute
  or so); an up-to-date jar costs nothing.
* ``run(settings, args)`` starts ``java -jar`` with the settings as ``MBYN_*`` variables (bootstrap
  servers, topic prefix, catalog path) in its own process group, forwards SIGTERM/SIGINT to it, and
  returns its exit code: 0 on a clean stop (after its one JSON summary line on stdout), 1 if payments
  could not be delivered or no broker answered, 2 on a usage or catalog error.
* ``--count`` counts payment records sent (a duplicate counts twice); ``--rate`` paces them;
  ``--duration`` and ``--idle-exit`` stop the service, which then sends held (late) payments at once,
  flushes and commits. ``--synthetic`` consumes nothing and generates payment events for benchmarks.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mbyn.catalog import CATALOG_FILE
from mbyn.errors import BuildError
from mbyn.options import Args, Option, option
from mbyn.settings import INCLUDE_DIR, Settings
from mbyn.sources.external import run_external

SOURCE = "payments-service"
JAVA_DIR = INCLUDE_DIR / "payments-java"
JAR = JAVA_DIR / "target" / "payments-service.jar"
#: Class-data-sharing archive recorded from a ``--check`` run of the jar (JDK 17 dynamic AppCDS).
ARCHIVE = JAR.with_suffix(".jsa")
BUILD_TIMEOUT_S = 900  # a first build downloads Maven plugins and dependencies
#: A small service: half a GiB of heap covers the 64 MiB producer buffer and the late-payment queue.
#: JVM log lines (CDS warnings, ...) go to stderr: stdout carries only the JSON summary.
JVM_OPTIONS = ("-Xmx512m", "-XX:+ExitOnOutOfMemoryError", "-Xlog:disable", "-Xlog:all=warning:stderr")


def _sources() -> list[Path]:
    return [JAVA_DIR / "pom.xml", *(p for p in (JAVA_DIR / "src").rglob("*") if p.is_file())]


def needs_build() -> bool:
    """True when the jar is missing or older than ``pom.xml`` or any file under ``src/``."""
    if not JAR.exists():
        return True
    built = JAR.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _sources() if src.exists())


def archive_is_fresh() -> bool:
    """True when the class-data-sharing archive exists and was recorded from the current jar."""
    return ARCHIVE.exists() and JAR.exists() and ARCHIVE.stat().st_mtime >= JAR.stat().st_mtime


def build(settings: Settings) -> str:
    """Build the shaded jar and its start-up archive if missing or stale; return a status line.

    BuildError when the JDK or Maven is missing, the Maven build fails, or the built jar fails its ``--check``.
    """
    if not needs_build() and archive_is_fresh():
        return f"up to date ({JAR.relative_to(INCLUDE_DIR.parent)})"
    mvn, java, javac = shutil.which("mvn"), shutil.which("java"), shutil.which("javac")
    if mvn is None or java is None or javac is None:
        missing = ", ".join(name for name, path in (("mvn", mvn), ("java", java), ("javac", javac)) if path is None)
        raise BuildError(f"building the payments service needs a Java 17 JDK and Maven on PATH ({missing} not "
                         "found): `apt-get install openjdk-17-jdk-headless maven`")
    JAR.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(JAR.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another launcher may be building right now: wait for it
        if not needs_build() and archive_is_fresh():
            return f"up to date ({JAR.relative_to(INCLUDE_DIR.parent)}, built by another process)"
        if needs_build():
            print(f"==> mvn package in {JAVA_DIR.relative_to(INCLUDE_DIR.parent)} (the first build downloads "
                  "plugins and dependencies)", file=sys.stderr, flush=True)
            ARCHIVE.unlink(missing_ok=True)
            _run_build_step([mvn, "-q", "-B", "-Dstyle.color=never", "package"], "mvn package")
            if not JAR.exists():
                raise BuildError(f"mvn package in {JAVA_DIR} succeeded but left no {JAR.name}")
            JAR.touch()  # a reproducible build may keep an old timestamp; the jar must look newer than its sources
        ARCHIVE.unlink(missing_ok=True)
        # Nothing listens on the discard port: the check creates Kafka clients but needs no broker.
        env = {**os.environ, "MBYN_CATALOG": str(CATALOG_FILE), "MBYN_BOOTSTRAP_SERVERS": "127.0.0.1:9",
               "MBYN_TOPIC_PREFIX": ""}
        _run_build_step([java, f"-XX:ArchiveClassesAtExit={ARCHIVE}", *JVM_OPTIONS, "-jar", str(JAR), "--check"],
                        "the jar's --check", env=env)
    return f"built {JAR.relative_to(INCLUDE_DIR.parent)} in {time.monotonic() - started:.0f}s"


def _run_build_step(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(cmd, cwd=JAVA_DIR, env=env, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} in {JAVA_DIR} did not finish within {BUILD_TIMEOUT_S}s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise BuildError(f"{what} in {JAVA_DIR} failed (exit {result.returncode}):\n{tail}")


OPTIONS: tuple[Option, ...] = (
    option("--synthetic", action="store_true",
           help="consume nothing: generate valid payment events as fast as possible or at --rate (benchmarks)"),
    option("--idle-exit", type=float, default=None,
           help="stop after S seconds without new orders once no late payment is pending (tests, batch use)"),
    option("--max-broker-wait", type=float, default=300.0,
           help="give up (exit 1) when no broker answers within S seconds (default 300)"),
)


def command(args: Args) -> list[str]:
    """The ``java`` command line for the parsed ``mbyn produce payments`` arguments."""
    java = shutil.which("java")
    if java is None:
        raise BuildError("the payments service needs Java 17 on PATH: `apt-get install openjdk-17-jre-headless`")
    archive = [f"-XX:SharedArchiveFile={ARCHIVE}"] if archive_is_fresh() else []
    cmd = [java, *JVM_OPTIONS, *archive, "-jar", str(JAR), "--max-broker-wait", str(args.max_broker_wait)]
    if args.synthetic:
        cmd.append("--synthetic")
    for flag, value in (("--count", args.count), ("--rate", args.rate), ("--duration", args.duration),
                        ("--idle-exit", args.idle_exit)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run(settings: Settings, args: Args) -> int:
    """Build if needed, run the service until it exits, forward SIGTERM/SIGINT; return its exit code."""
    for name in ("count", "rate", "duration", "idle_exit", "max_broker_wait"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise SystemExit(f"mbyn: --{name.replace('_', '-')} must be positive, got {value}")
    print(f"==> build payments: {build(settings)}", file=sys.stderr, flush=True)
    return run_external(command(args), settings, stop_timeout=60)
