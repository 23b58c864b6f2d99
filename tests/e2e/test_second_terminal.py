"""A second terminal next to `mbyn run --warehouse postgres` in the secured mode: `mbyn status`, `mbyn sql` and
`mbyn dlq list` find the running pipeline through ``var/run/pipeline.json`` (no MBYN_ variable but the var
folder) and answer exactly as with every setting spelled out; nothing the run writes shows a password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from mbyn.local.postgres import LocalPostgres
from mbyn.settings import PROJECT_ROOT, load_settings
from tests.conftest import free_port_block
from tests.plugins.postgres import free_port, private_var_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Nothing streams by itself: the test produces a fixed batch, so the answers settle and can be compared.
SCALE = ("clickstream=0", "payments=0", "shipments=0", "order-enricher=0", "sales-aggregator=0",
         "fraud-detector=0", "lake-archiver=0", "lag-monitor=0", "warehouse-loader=1", "dead-letters=1")


def _mbyn(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _answers(env: dict[str, str]) -> tuple[Any, ...]:
    """What a person reads: status (without its clock and the supervisor's bookkeeping), sql, dlq list."""
    status = _mbyn(env, "status", "--json")
    assert status.returncode in (0, 4, 5), status.stderr[-2000:]
    document = json.loads(status.stdout)
    for volatile in ("generated_at", "workers"):
        document.pop(volatile)
    sql = _mbyn(env, "sql", "SELECT count(*) FROM orders")
    dlq = _mbyn(env, "dlq", "list")
    assert sql.returncode == 0 and dlq.returncode == 0, sql.stderr[-2000:] + dlq.stderr[-2000:]
    return status.returncode, document, sql.stdout, dlq.stdout, status.stderr + sql.stderr + dlq.stderr


def test_second_terminal_talks_to_the_running_secured_postgres_pipeline() -> None:
    with private_var_dir("mbyn-e2e-") as var:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MBYN_")}
        prefix = f"st{uuid.uuid4().hex[:6]}-"
        pg_port = free_port()
        run_env = {**base, "MBYN_VAR_DIR": str(var), "MBYN_KAFKA_PORT": str(free_port_block(1)),
                   "MBYN_KAFKA_CONTROLLER_PORT": str(free_port_block(1)), "MBYN_KAFKA_HEAP": "384m",
                   "MBYN_KAFKA_LIB_DIR": str(PROJECT_ROOT / "var" / "kafka" / "lib"),
                   "MBYN_POSTGRES_PORT": str(pg_port), "MBYN_SECURITY": "scram", "MBYN_TOPIC_PREFIX": prefix,
                   "MBYN_CONSUMER_SESSION_TIMEOUT_S": "6"}
        second = {**base, "MBYN_VAR_DIR": str(var)}  # a new terminal in the project: only its var/ is shared
        record = var / "run" / "pipeline.json"
        log = var.parent / "run.log"
        scale = [a for item in SCALE for a in ("--scale", item)]
        with open(log, "ab") as out:
            run = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "run", "--warehouse", "postgres",
                                    "--no-airflow", *scale], env=run_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 150
            while not record.exists() and run.poll() is None and time.monotonic() < deadline:
                time.sleep(1)
            assert record.exists(), f"no {record}:\n{log.read_text()[-3000:]}"
            assert record.stat().st_mode & 0o777 == 0o600
            stored = json.loads(record.read_text())
            assert stored["pid"] == run.pid and stored["security"] == "scram" and stored["topic_prefix"] == prefix

            store = json.loads((var / "kafka" / "scram-credentials.json").read_text())
            url = LocalPostgres.from_settings(load_settings(var_dir=var, postgres_port=pg_port)).url(role="mbyn_loader")
            pg_passwords = [path.read_text().strip() for path in (var / "postgres").glob("password*")]
            assert len(pg_passwords) == 3 and not [p for p in pg_passwords if p in record.read_text()]
            spelled = {**second, "MBYN_WAREHOUSE_URL": url, "MBYN_SECURITY": "scram", "MBYN_TOPIC_PREFIX": prefix,
                       "MBYN_BOOTSTRAP_SERVERS": stored["bootstrap_servers"]}
            produced = _mbyn({**spelled, "MBYN_KAFKA_USERNAME": "clickstream",
                              "MBYN_KAFKA_PASSWORD": store["clickstream"]},
                             "produce", "clickstream", "--count", "300", "--seed", "7", "--invalid-ratio", "0.05")
            assert produced.returncode == 0, produced.stderr[-2000:]
            spelled |= {"MBYN_KAFKA_USERNAME": "viewer", "MBYN_KAFKA_PASSWORD": store["viewer"]}

            # Compare once the loader has caught up: two answers of the second terminal around the spelled-out one.
            for _ in range(8):
                first, spelled_out, again = _answers(second), _answers(spelled), _answers(second)
                if first[:4] == again[:4] and first[1]["warehouse"]["tables"].get("orders"):
                    break
                time.sleep(3)
            assert first[:4] == again[:4], "the pipeline did not settle"
            code, status, sql, dlq, notes = first
            assert (code, status, sql, dlq) == spelled_out[:4]
            assert status["topic_prefix"] == prefix and status["warehouse"]["reachable"]
            assert status["warehouse_url"] == f"postgresql+psycopg://mbyn_loader:***@127.0.0.1:{pg_port}/mbyn"
            assert status["warehouse"]["tables"]["orders"] > 0 and f"{prefix}orders" in json.dumps(status["topics"])
            assert status["groups"][f"{prefix}warehouse-loader"]["member_count"] == 1
            assert "quarantine is empty" not in dlq  # the malformed 5 % were quarantined
            assert (f"using the running pipeline's warehouse: postgresql+psycopg://mbyn_loader:***@127.0.0.1:{pg_port}/mbyn"
                    in notes) and "security: scram" in notes and f"topic prefix: '{prefix}'" in notes
            assert "running pipeline" not in spelled_out[4]

            secrets = [*pg_passwords, *store.values()]
            logs = [log, var / "postgres" / "postgres.log", *(var / "logs").rglob("*.log"),
                    *(var / "kafka").rglob("stdout.log"), *(var / "kafka").rglob("logs/*.log")]  # not data segments
            texts = {str(p): p.read_text(errors="replace") for p in logs if p.exists()}
            texts["second terminal"] = notes
            leaks = [(where, s[:4] + "…") for where, text in texts.items() for s in secrets if s in text]
            assert not leaks, f"passwords in output or logs: {leaks}"
        finally:
            if run.poll() is None:
                os.kill(run.pid, signal.SIGINT)
            code = run.wait(150)
        assert code == 0, log.read_text()[-3000:]
        assert not record.exists(), "the record must go when the run ends"
        after = _mbyn(second, "sql", "SELECT 1")
        assert "running pipeline" not in after.stderr
