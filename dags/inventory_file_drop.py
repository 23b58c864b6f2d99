"""
### Inventory file drop

Waits for stock files dropped into `var/landing/inventory/` (a sensor in `reschedule` mode: it frees
its worker slot between pokes) and publishes their rows to the **inventory** topic (key: sku).
When no file arrives within the run's window the sensor gives up as *skipped*, not failed.
The producer remembers each file's hash, so a re-dropped file is not published twice.

Code: `mbyn.sources.inventory_drop.publish_inventory_files`. Run by hand: `mbyn produce inventory`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import PokeReturnValue, chain, dag, task

from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 1, "retry_delay": timedelta(minutes=1)}


@dag(
    schedule="*/10 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "producer", "inventory", "sensor"],
    doc_md=__doc__,
)
def inventory_file_drop() -> None:
    @task.sensor(poke_interval=30, timeout=9 * 60, mode="reschedule", soft_fail=True)
    def wait_for_inventory_files() -> PokeReturnValue:
        """Succeed as soon as at least one file waits in the landing folder."""
        folder = get_settings().landing_dir / "inventory"
        files = sorted(p.name for p in folder.glob("*")
                       if p.is_file() and not p.name.startswith(".") and p.suffix not in (".part", ".tmp"))
        return PokeReturnValue(is_done=bool(files), xcom_value=files)

    @task
    def publish_inventory_files() -> dict:
        """Publish every waiting file's rows and move the files out of the way."""
        from mbyn.sources.inventory_drop import publish_inventory_files

        return publish_inventory_files()

    chain(wait_for_inventory_files(), publish_inventory_files())


inventory_file_drop()
