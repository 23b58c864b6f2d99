"""``mbyn run`` / ``mbyn down``: the whole pipeline on one machine, started and stopped as one.

``mbyn run`` brings up, in order: the Kafka cluster, the warehouse (SQLite file, or the local Postgres with
``--warehouse postgres``), the catalog's topics and the warehouse schema, one round of each batch producer
(customers seed, FX rates, an inventory file) so every table has data within seconds, the supervised
producer and consumer copies, and Airflow (`airflow standalone`, unless ``--no-airflow``). Then it prints
where to look and supervises until Ctrl-C / SIGTERM / ``--duration``.

Stopping stops exactly what this run started — workers first (they flush and commit), then Airflow, Postgres
and Kafka — so a cluster you started yourself with ``mbyn kafka up`` keeps running. Data stays under
``var/``: the next ``mbyn run`` resumes where this one stopped. ``mbyn down`` stops a pipeline from another
terminal (or one whose terminal died).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from mbyn.kafka.admin import apply_topics
from mbyn.kafka.security import as_principal, ensure_local_users
from mbyn.local import airflow as local_airflow
from mbyn.local import kafka as cluster
from mbyn.local import postgres as postgres_local
from mbyn.local.processes import stop_process_groups
from mbyn.local.supervisor import Supervisor, parse_scale
from mbyn.process import StopFlag, setup_logging
from mbyn.run_state import read_state, remove_pipeline, state_file, write_pipeline
from mbyn.settings import Settings, hide_password
from mbyn.sources.customers_db import publish_customer_changes
from mbyn.sources.fx_rates import publish_fx_rates
from mbyn.sources.inventory_drop import publish_inventory_files, write_demo_file
from mbyn.warehouse.engine import init_schema, warehouse_engine

log = logging.getLogger("mbyn.run")


def _banner(settings: Settings, airflow_url: str | None, warehouse: str) -> str:
    lines = ["", "=" * 72, "mbyn is running — M producers → Kafka → N consumer groups", "=" * 72,
             f"Kafka bootstrap     {settings.bootstrap()}"]
    # No password on screen (the terminal may be shared or recorded): the banner says where to get them.
    if airflow_url:
        lines += [f"Airflow UI          {airflow_url}   ({local_airflow.login_hint(settings)})",
                  f"Pipeline view       {airflow_url}/plugin/mbyn-pipeline   (or {airflow_url}/mbyn/)"]
    lines += [f"Warehouse           {hide_password(warehouse)}"
              + ("   (full URL: mbyn postgres url)" if hide_password(warehouse) != warehouse else ""),
              '  query it          mbyn sql "SELECT country, count(*) FROM orders GROUP BY country"',
              f"Reports             {settings.reports_dir}   (mbyn report; incidents/ from the alert DAG)",
              f"Worker logs         {settings.logs_dir / 'workers'}",
              "Reconciliation      mbyn status",
              "Stop                Ctrl-C (or `mbyn down` from another terminal)", "=" * 72, ""]
    return "\n".join(lines)


def _seed_batch_sources(settings: Settings) -> None:
    """One round of each batch producer so dimensions are filled before the streams need them."""
    def inventory() -> dict[str, Any]:
        demo = write_demo_file(settings)
        # The file is complete (a hidden temporary file, then renamed): age it past the half-written-file guard.
        old = time.time() - 3600
        os.utime(demo, (old, old))
        return publish_inventory_files(settings)

    for label, call in (("customers", lambda: publish_customer_changes(settings)),
                        ("fx-rates", lambda: publish_fx_rates(settings)),
                        ("inventory", inventory)):
        try:
            log.info("batch producer %s: %s", label, call())
        except Exception as exc:  # noqa: BLE001 - a demo seed failing must not stop the pipeline; Airflow retries
            log.warning("batch producer %s failed: %s (Airflow's DAG will retry on schedule)", label, exc)


def run(settings: Settings, *, duration: float | None = None, scale: Sequence[str] = (), nodes: int | None = None,
        warehouse: str | None = None, start_airflow: bool = True, live_fx: bool = False) -> int:
    """Start the pipeline, supervise it until Ctrl-C / SIGTERM / ``duration`` seconds, stop what it started.

    ``scale``: ``NAME=K`` items over the default copies; ``nodes``: Kafka nodes when it starts the cluster;
    ``warehouse="postgres"``: start the local PostgreSQL (unless ``MBYN_WAREHOUSE_URL`` names a warehouse);
    ``live_fx``: poll the real ECB API instead of the recorded responses. Returns 0, or 130 when stopped
    before the workers started.
    """
    setup_logging()
    stop = StopFlag().install()
    deadline = time.monotonic() + duration if duration else None
    copies = parse_scale(list(scale))
    started: list[str] = []
    env: dict[str, str] = {}
    supervisor: Supervisor | None = None
    airflow_url: str | None = None
    try:
        if cluster.running_state(settings) is None and not settings.bootstrap_servers:
            cluster.up(settings, nodes=nodes)
            started.append("kafka")
        env["MBYN_BOOTSTRAP_SERVERS"] = settings.bootstrap()
        if warehouse == "postgres" and not settings.warehouse_url:
            was_running = postgres_local.status(settings).get("running")
            env["MBYN_WAREHOUSE_URL"] = postgres_local.up(settings)
            if not was_running:
                started.append("postgres")
        if not live_fx and "MBYN_FX_REPLAY" not in os.environ:
            env["MBYN_FX_REPLAY"] = "1"
        os.environ.update(env)  # every child (workers, Airflow) sees the same world
        settings = settings.model_copy(update={
            "bootstrap_servers": env["MBYN_BOOTSTRAP_SERVERS"],
            "warehouse_url": env.get("MBYN_WAREHOUSE_URL", settings.warehouse_url),
            "fx_replay": settings.fx_replay or env.get("MBYN_FX_REPLAY") == "1"})
        for name in ensure_local_users(as_principal(settings)):  # secured: principals newer than the cluster
            log.info("SCRAM user %s added", name)
        for change in apply_topics(as_principal(settings)):  # secured: as admin, and the ACLs too
            if change.action != "unchanged":
                log.info("topic %s: %s %s", change.topic, change.action, change.detail)
        init_schema(warehouse_engine(settings))
        if stop.is_set():
            return 130
        _seed_batch_sources(as_principal(settings, "airflow"))  # what the batch DAGs do, as Airflow would
        supervisor = Supervisor(settings, copies)
        supervisor.start()
        if start_airflow and not stop.is_set():
            was_running = local_airflow.status(settings).get("running")
            state = local_airflow.up(settings)
            if not was_running:
                started.append("airflow")
            airflow_url = state.url
        # what the commands typed next to this run read (mbyn status, sql, dlq, report, replay)
        write_pipeline(settings, pid=os.getpid(), airflow_url=airflow_url)
        print(_banner(settings, airflow_url, settings.warehouse()), file=sys.stderr, flush=True)
        supervisor.supervise(stop, deadline)
    finally:
        remove_pipeline(settings, os.getpid())
        if supervisor is not None:
            supervisor.stop_all()
        _stop_services(settings, started)
    return 0


def _stop_services(settings: Settings, started: list[str]) -> None:
    """Stop what this run started, newest first."""
    for service in reversed(started):
        try:
            if service == "airflow":
                    local_airflow.down(settings)
            elif service == "postgres":
                    postgres_local.down(settings)
            elif service == "kafka":
                cluster.down(settings)
        except Exception as exc:  # noqa: BLE001 - keep stopping the rest; report every failure
            log.error("stopping %s failed: %s", service, exc)


def down(settings: Settings) -> int:
    """Stop workers recorded by a running `mbyn run`, then Airflow, Postgres and Kafka."""
    setup_logging()
    state = read_state(settings) or {}
    supervisor = state.get("supervisor")
    if supervisor:
        try:
            os.kill(int(supervisor), 15)  # the supervisor stops its workers and services itself
            log.info("asked `mbyn run` (pid %s) to stop", supervisor)
        except ProcessLookupError:
            pass
    stop_process_groups([int(p) for p in state.get("workers", {}).values()], grace=30)
    state_file(settings).unlink(missing_ok=True)
    remove_pipeline(settings)
    _stop_services(settings, ["kafka", "postgres", "airflow"])
    return 0
