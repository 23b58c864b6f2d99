"""Shipment tracker (Go, franz-go): authorized payments → shipment status changes on ``shipments``.

The tracker itself lives in ``include/shipments-go/`` (see its README); this module builds and launches
it so that ``mbyn produce shipments`` works like every other producer.

* ``build(settings)`` runs ``go build`` only when the binary is missing or older than a ``.go``,
  ``go.mod`` or ``go.sum`` file (``mbyn build`` calls it; so does ``run``). ``GOFLAGS=-mod=mod`` lets the
  first build on a fresh machine download the pinned modules through the Go module proxy.
* ``run(settings, args)`` starts the binary with the settings as ``MBYN_*`` variables (bootstrap
  servers, topic prefix, catalog path) in its own process group, forwards SIGTERM/SIGINT to it, and
  returns its exit code: 0 on a clean stop (after its one JSON summary line on stdout), 1 if records
  failed, 2 on a configuration or start-up error.
* ``--count`` counts shipments (each is four events); ``--rate`` paces payments read (or orders
  synthesized) per second; ``--duration`` stops and fast-forwards what is pending.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mbyn.errors import BuildError
from mbyn.options import Args, Option, option
from mbyn.settings import INCLUDE_DIR, Settings
from mbyn.sources.external import run_external

SOURCE = "shipment-tracker"
GO_DIR = INCLUDE_DIR / "shipments-go"
BINARY = GO_DIR / "bin" / "shipment-tracker"
BUILD_TIMEOUT_S = 900  # a first build downloads the modules and compiles franz-go: a few minutes on 2 cores


def _sources() -> list[Path]:
    files = [p for p in GO_DIR.rglob("*.go") if "bin" not in p.relative_to(GO_DIR).parts]
    return [*files, GO_DIR / "go.mod", GO_DIR / "go.sum"]


def needs_build() -> bool:
    """True when the binary is missing or older than any of its sources."""
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _sources() if src.exists())


def build(settings: Settings) -> str:
    """Build the tracker binary if it is missing or stale; return a status line. BuildError on failure."""
    if not needs_build():
        return f"up to date ({BINARY.relative_to(INCLUDE_DIR.parent)})"
    go = shutil.which("go")
    if go is None:
        raise BuildError("the shipment tracker needs the Go toolchain (go ≥ 1.26) on PATH: "
                         "install Go (https://go.dev/doc/install) or `apt-get install golang-go` if new enough")
    print(f"==> go build {GO_DIR.relative_to(INCLUDE_DIR.parent)} (the first build downloads modules)",
          file=sys.stderr, flush=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false"}
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([go, "build", "-trimpath", "-o", str(BINARY), "."], cwd=GO_DIR, env=env,
                                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"go build in {GO_DIR} did not finish within {BUILD_TIMEOUT_S}s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise BuildError(f"go build in {GO_DIR} failed (exit {result.returncode}):\n{tail}")
    return f"built {BINARY.relative_to(INCLUDE_DIR.parent)}"


OPTIONS: tuple[Option, ...] = (
    option("--synthetic", action="store_true",
           help="synthesize orders instead of consuming payments (demos, benchmarks)"),
    option("--stage-delay", type=float, default=3.0,
           help="seconds between two stages of a shipment (default 3; 0: all four at once)"),
    option("--max-pending", type=int, default=10_000,
           help="shipments with stages pending at most (bounded timer queue; default 10000)"),
)


def command(args: Args) -> list[str]:
    """The binary's command line for the parsed ``mbyn produce shipments`` arguments."""
    cmd = [str(BINARY), "--stage-delay", str(args.stage_delay), "--max-pending", str(args.max_pending)]
    if args.synthetic:
        cmd.append("--synthetic")
    for flag, value in (("--count", args.count), ("--rate", args.rate), ("--duration", args.duration)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run(settings: Settings, args: Args) -> int:
    """Build if needed, run the tracker until it exits, forward SIGTERM/SIGINT; return its exit code."""
    if args.stage_delay < 0:
        raise SystemExit("mbyn: --stage-delay must be 0 or more seconds")
    print(f"==> build shipments: {build(settings)}", file=sys.stderr, flush=True)
    return run_external(command(args), settings, stop_timeout=30)
