"""Stage 6 — event-driven latency: a fraud alert written to Kafka → the incident DAG run started.

Starts a local ``airflow standalone`` (``mbyn.local.airflow.up``) on free ports under the bench
folder with a DAGs folder holding only ``fraud_incident_report.py``, waits until the DAG is parsed and
unpaused, and sends one warm-up alert (its run includes the triggerer starting the watcher; not
counted). Then, one alert at a time: the alert is produced and acknowledged (``flush_or_raise``) —
that instant is "written to Kafka" — and the API is polled until the run it caused has a
``start_date``. Latency = the run's ``start_date`` (and ``queued_at``) minus the write instant, both
on this machine's clock. The next alert is sent only after that run finished, so every alert gets its
own run. If Airflow does not come up within the start budget, the stage reports why instead.
"""

from __future__ import annotations

import secrets
import shutil
import time
import uuid
from datetime import datetime
from typing import Any

from bench.env import BenchEnv, free_port, log

DAG_ID = "fraud_incident_report"
RUN_TIMEOUT_S = 180.0


def _alert() -> dict[str, Any]:
    from mbyn.contracts.envelope import make_envelope

    payload = {"alert_id": f"A-bench-{uuid.uuid4().hex[:10]}", "kind": "amount_mismatch", "severity": "high",
               "order_id": "O-bench", "customer_id": "C000001", "details": "benchmark alert"}
    return dict(make_envelope("fraud_alert", payload, "bench"))


def _free_pair() -> int:
    """A port p with p and p+1 free (the worker and triggerer log servers)."""
    import socket

    for _ in range(100):
        base = free_port()
        ok = True
        for port in (base, base + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok and base + 1 < 65000:
            return base
    raise RuntimeError("no two consecutive free ports")


def _ts(text: str | None) -> float | None:
    return None if not text else datetime.fromisoformat(text).timestamp()


def _wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def measure(env: BenchEnv, alerts: int, start_budget_s: float) -> dict[str, Any]:
    """Latencies of ``alerts`` alerts; ``{"measured": False, "reason": ...}`` when Airflow cannot be used."""
    from mbyn.contracts.envelope import encode, validate
    from mbyn.errors import MbynError
    from mbyn.kafka.producer import TopicProducer
    from mbyn.local import airflow as local
    from mbyn.settings import load_settings

    base = env.stage("airflow")
    fields = {name: getattr(base.settings, name) for name in type(base.settings).model_fields}
    settings = load_settings(**{**fields, "airflow_port": free_port(), "airflow_log_port": _free_pair(),
                                "airflow_password": secrets.token_urlsafe(12)})
    dags = base.folder / "dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(local.DAGS_FOLDER / "fraud_incident_report.py", dags)
    started = time.monotonic()
    log(f"airflow: starting airflow standalone (budget {start_budget_s:.0f}s)")
    try:
        local.up(settings, timeout_s=start_budget_s, dags_folder=dags)
    except MbynError as exc:
        local.down(settings)
        return {"measured": False, "reason": f"Airflow did not start within {start_budget_s:.0f}s: "
                                             f"{str(exc).splitlines()[0]}"}
    try:
        startup_s = time.monotonic() - started
        log(f"airflow: up after {startup_s:.0f}s; waiting for the DAG and its watcher")
        with local.api_client(settings) as client:
            def dag_active() -> bool:
                r = client.get(f"/api/v2/dags/{DAG_ID}")
                return r.status_code == 200 and not r.json()["is_paused"]

            def runs() -> list[dict[str, Any]]:
                return list(client.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()["dag_runs"])

            try:
                _wait(f"{DAG_ID} to be parsed and unpaused", dag_active, RUN_TIMEOUT_S, 1.0)
            except TimeoutError as exc:
                return {"measured": False, "reason": str(exc), "startup_s": startup_s}
            producer = TopicProducer("bench-fraud-detector", settings)
            samples: list[dict[str, float | None]] = []
            try:
                for i in range(alerts + 1):  # the first one warms the watcher up
                    known = {r["dag_run_id"] for r in runs()}
                    alert = _alert()
                    validate("alerts", alert)
                    # send_raw with the stage's physical name: the catalog's prefix is the process's own.
                    producer.send_raw(settings.topic_prefix + "alerts", encode(alert),
                                      alert["payload"]["alert_id"].encode(), [("source", b"bench")])
                    producer.flush_or_raise()
                    written = time.time()

                    def new_started_run(known: set[str] = known) -> dict[str, Any] | None:
                        fresh = [r for r in runs() if r["dag_run_id"] not in known and r.get("start_date")]
                        return fresh[0] if fresh else None

                    try:
                        run = _wait("the alert's DAG run to start", new_started_run, RUN_TIMEOUT_S)
                    except TimeoutError as exc:
                        return {"measured": False, "reason": f"alert {i}: {exc}", "startup_s": startup_s,
                                "samples": samples}
                    start_s = (_ts(run["start_date"]) or 0) - written
                    queued = _ts(run.get("queued_at"))
                    if i > 0:
                        samples.append({"start_s": start_s, "queued_s": None if queued is None else queued - written})
                    log(f"airflow: alert {i}{' (warm-up)' if i == 0 else ''} → run started after {start_s:.2f}s")

                    def finished(run_id: str = run["dag_run_id"]) -> bool:
                        r = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
                        return r.status_code == 200 and r.json()["state"] in ("success", "failed")

                    _wait("the alert's DAG run to finish", finished, RUN_TIMEOUT_S, 1.0)
            finally:
                producer.close()
        starts = sorted(float(s["start_s"] or 0.0) for s in samples)
        return {"measured": True, "startup_s": startup_s, "samples": samples,
                "median_s": starts[len(starts) // 2], "max_s": starts[-1]}
    finally:
        local.down(settings)
