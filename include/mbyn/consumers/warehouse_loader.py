"""warehouse-loader: the raw topics → warehouse tables, exactly once (group ``<prefix>warehouse-loader``).

Reads clickstream, orders, payments, customers, inventory, fx-rates, shipments and alerts; each batch's
rows and the next offsets of its partitions are written in one database transaction (``kafka_offsets``),
and a (re)started copy seeks to those offsets — see ``WarehouseConsumer``. What each topic becomes (table,
key, columns, row, on conflict, tombstones) is declared once in ``mbyn.warehouse.rows`` and written by its
``upsert_records``: rows are upserted on their business keys, so a record seen twice (a producer re-send with
the same event id) is loaded once.

Records the codec refuses (not JSON, schema violation, oversize, null key, unknown schema_version) and rows
the database refuses (``sink_rejected``) go to dead-letters through the runtime. Run several copies:
``mbyn consume warehouse-loader`` (each copy gets a share of the partitions; SQLite serialises the writes,
PostgreSQL runs them side by side).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from mbyn.consumers.contract import Batch
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.consumers.warehouse_sink import WarehouseConsumer
from mbyn.options import CONSUMER_OPTIONS, Args, Option, option
from mbyn.settings import Settings
from mbyn.warehouse.rows import ROWS, upsert_records

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger("mbyn.consumer")

NAME = "warehouse-loader"


class WarehouseLoader(WarehouseConsumer):
    """Raw catalog topics → facts and dimensions, as ``mbyn.warehouse.rows.ROWS`` declares them."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = tuple(ROWS)  # every topic the warehouse has rows for
    batch_size: int = 5000
    # Batches are handed over as soon as nothing more is waiting (the runtime's adaptive hand-over), so this
    # is only how long an idle poll blocks (``--max-wait-ms``), not a latency.
    batch_timeout: float = 0.05
    # Fetch and decode the next batch while the database writes this one: the loader's hooks keep no state
    # that ``process_batch`` changes (offsets live in the warehouse; upserts are idempotent).
    overlap: ClassVar[bool] = True

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.rows_by_table: dict[str, int] = {}
        self.skipped_tombstones = 0

    def write(self, conn: Connection, batch: Batch) -> int:
        written = 0
        for topic, records in batch.by_topic().items():
            spec = ROWS.get(topic)
            if spec is None:
                raise AssertionError(f"{NAME} has no rows declared for topic {topic!r}")
            loaded = upsert_records(conn, spec, records, self.loaded_at)  # one stamp for the whole batch
            self.skipped_tombstones += loaded.skipped_tombstones
            for table, count in loaded.rows.items():
                self.rows_by_table[table] = self.rows_by_table.get(table, 0) + count
                self.count_rows(table, count)
                written += count
        return written

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rows_by_table": dict(self.rows_by_table),
                "skipped_tombstones": self.skipped_tombstones}


OPTIONS: tuple[Option, ...] = (*CONSUMER_OPTIONS, option(
    "--batch-log", default=None, metavar="FILE",
    help="append one JSON line per committed batch, written after COMMIT returned: loaded_at (every row's "
         "loaded_at in that batch), committed_at (ISO-8601 UTC, µs), loaded_at_us/committed_at_us (µs since the "
         "epoch), records, rows (per table), group, pid — for latency with the commit included and rows counted"))


def run(settings: Settings, args: Args) -> int:
    return run_consumer_cli(lambda: WarehouseLoader(settings, batch_log=getattr(args, "batch_log", None)),
                            settings, args)
