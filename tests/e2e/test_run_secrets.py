"""`mbyn run` in the secured mode with the local PostgreSQL warehouse prints no password and logs none: its
output and every file it writes under ``var/`` (worker logs, broker logs, PostgreSQL's log, state files) are
scanned for the secrets the run generated — the PostgreSQL password and every SCRAM password."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT
from tests.conftest import free_port_block
from tests.plugins.postgres import free_port, private_var_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _secret_stores(var: Path) -> set[Path]:
    """The files whose job is to hold a secret (0600): the only places a password may be written."""
    kafka = var / "kafka"
    return {kafka / "scram-credentials.json", *(var / "postgres").glob("password*"), *kafka.glob("client-*.properties"),
            *kafka.glob("n*-scram/node-*/server.properties"), *var.glob("airflow/*passwords*")}


def _written_files(var: Path) -> list[Path]:
    """Every file under ``var`` except the secret stores, the Kafka logs' record data and PostgreSQL's data."""
    skip = _secret_stores(var)
    found = []
    for path in var.rglob("*"):
        parts = path.relative_to(var).parts
        if not path.is_file() or path in skip or "data" in parts or path.suffix in (".jar", ".parquet"):
            continue
        found.append(path)
    return found


def test_run_prints_and_logs_no_password() -> None:
    airflow_password = f"af-{secrets.token_urlsafe(12)}"
    with private_var_dir("mbyn-secrets-") as var:
        env = {**os.environ, "MBYN_VAR_DIR": str(var), "MBYN_SECURITY": "scram",
               "MBYN_KAFKA_PORT": str(free_port_block(1)), "MBYN_KAFKA_CONTROLLER_PORT": str(free_port_block(1)),
               "MBYN_KAFKA_HEAP": "384m", "MBYN_KAFKA_LIB_DIR": str(PROJECT_ROOT / "var" / "kafka" / "lib"),
               "MBYN_POSTGRES_PORT": str(free_port()), "MBYN_AIRFLOW_PASSWORD": airflow_password,
               "MBYN_CONSUMER_SESSION_TIMEOUT_S": "6"}
        for name in ("MBYN_BOOTSTRAP_SERVERS", "MBYN_TOPIC_PREFIX", "MBYN_WAREHOUSE_URL", "MBYN_KAFKA_USERNAME",
                     "MBYN_KAFKA_PASSWORD"):
            env.pop(name, None)
        run = subprocess.run([sys.executable, "-m", "mbyn.cli", "run", "--no-airflow", "--warehouse", "postgres",
                              "--duration", "45"], env=env, capture_output=True, text=True, timeout=420, check=False)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-3000:]
        # the start-up path ran to the end: the banner shows the warehouse, masked, and where to get the URL
        assert "Warehouse           postgresql+psycopg://mbyn_loader:***@127.0.0.1:" in output, output[-3000:]
        assert "mbyn postgres url" in output

        generated = {f"PostgreSQL {path.name}": path.read_text().strip()
                     for path in (var / "postgres").glob("password*")}
        assert len(generated) == 3  # the superuser, the loader and the reader
        generated["MBYN_AIRFLOW_PASSWORD"] = airflow_password
        scram = json.loads((var / "kafka" / "scram-credentials.json").read_text())
        generated.update({f"SCRAM password of {name}": password for name, password in scram.items()})
        assert len(scram) > 10 and all(len(s) >= 16 for s in generated.values())

        written = _written_files(var)
        assert any(p.match("logs/workers/*") or "workers" in p.parts for p in written), "no worker log to scan"
        assert any(p.name == "server.log" for p in written), "no broker log to scan"
        places = {"the output of mbyn run": output}
        places.update({str(p.relative_to(var)): p.read_text(errors="replace") for p in written})
        leaks = [f"{label} in {where}" for where, text in places.items()
                 for label, secret in generated.items() if secret in text]
        assert not leaks, leaks
