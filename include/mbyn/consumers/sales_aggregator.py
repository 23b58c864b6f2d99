"""sales-aggregator: orders + fx-rates → ``sales_by_minute``, tumbling one-minute event-time windows, exactly once.

For every order the items are converted to EUR with the ``fx-rates`` table (``FxRates``, read in full by
every copy; a currency without a rate waits up to ``--fx-wait`` s, then the order is dead-lettered with
reason ``no_fx_rate``) and added to the row ``(window_start, country, category)`` where ``window_start``
is the order's envelope ``event_time`` floored to the minute. An order with items in two categories
counts once in each category's row; ``avg_basket_eur = revenue_eur / orders`` per row.

* **Watermark and lateness.** Per source partition, ``watermark = max event time seen − lateness``
  (``--lateness``, default 120 s). An order whose window ended at or before its partition's watermark
  (``window_start + 1 min <= watermark``) is *late*: it is not added to revenue, but counted in the
  ``late_records`` column of its window's row (and ``late_records`` in the summary) and logged. Per
  partition, so the result does not depend on how many copies run or how partitions move between them.
* **Exactly once** (``"sink"`` mode, ``FencedWarehouseConsumer``): the window increments, the stored offsets
  and each partition's max event time (``stream_watermarks``) are written in ONE transaction; a restarted
  copy resumes from both, so re-processing neither double-counts nor changes which records are late.
* **Fenced.** Adding is not idempotent, so every batch first moves its stored offsets with a
  compare-and-set from the position this copy believes is stored (``claim_offsets``). A copy that lost
  its partitions while another moved on finds a different offset there: its transaction is rolled back,
  the batch is dropped uncounted and the copy seeks back to the stored offsets (``on_fenced``).
  ``mbyn replay`` refuses this group (see ``mbyn.replay``): re-reading would add records twice.
* **Early results.** Rows are updated as orders arrive (``updated_at``); a window is final once its
  partitions' watermarks have passed its end.

Run: ``mbyn consume sales-aggregator [--lateness 120]`` (copies share the orders partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import case, select

from mbyn.consumers.contract import Batch, ConsumerRuntime, PartitionKey
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.consumers.tables import FxRates
from mbyn.consumers.warehouse_sink import FencedWarehouseConsumer, shift
from mbyn.options import CONSUMER_OPTIONS, Args, Option, option
from mbyn.settings import Settings
from mbyn.warehouse import dialect_insert, parse_time, schema, sink_errors, utc_now

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger("mbyn.consumer")

NAME = "sales-aggregator"
WINDOW = timedelta(minutes=1)
DEFAULT_LATENESS_S = 120.0

#: (window_start, country, category)
WindowKey = tuple[datetime, str, str]


def window_start(t: datetime) -> datetime:
    """The start of the one-minute tumbling window holding ``t`` (UTC, seconds and below cleared)."""
    return t.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class WindowDelta:
    """What one batch adds to one ``sales_by_minute`` row."""

    revenue_eur: float = 0.0
    orders: int = 0
    late_records: int = 0


@dataclass
class OrderFacts:
    """The part of an order the windows need: where it comes from, when, and EUR revenue per category."""

    partition: PartitionKey
    order_id: str
    event_time: datetime
    country: str
    revenue_by_category: dict[str, float]


@dataclass
class Folded:
    """The result of folding a batch of orders into windows (nothing applied yet)."""

    deltas: dict[WindowKey, WindowDelta] = field(default_factory=dict)
    max_event_times: dict[PartitionKey, datetime] = field(default_factory=dict)
    late: list[OrderFacts] = field(default_factory=list)
    on_time: int = 0


def fold_orders(orders: Iterable[OrderFacts], max_event_times: Mapping[PartitionKey, datetime],
                lateness: timedelta) -> Folded:
    """Assign orders (in offset order per partition) to windows against per-partition watermarks.

    ``max_event_times`` is the state before the batch (not modified); the returned ``max_event_times``
    holds the updated value of every partition the batch touched. An order is late when its window ended
    at or before ``max event time seen so far in its partition − lateness``; its own time then still
    moves the maximum (it cannot, being older).
    """
    out = Folded()
    for order in orders:
        seen = out.max_event_times.get(order.partition, max_event_times.get(order.partition))
        start = window_start(order.event_time)
        is_late = seen is not None and shift(start, WINDOW) <= shift(seen, -lateness)  # no overflow at year 9999
        for category, revenue in order.revenue_by_category.items():
            delta = out.deltas.setdefault((start, order.country, category), WindowDelta())
            if is_late:
                delta.late_records += 1
            else:
                delta.revenue_eur += revenue
                delta.orders += 1
        if is_late:
            out.late.append(order)
        else:
            out.on_time += 1
        if seen is None or order.event_time > seen:
            out.max_event_times[order.partition] = order.event_time
    return out


def revenue_by_category(payload: Mapping[str, Any], rate_per_eur: float) -> dict[str, float]:
    """EUR revenue per item category of an order payload (unit_price × quantity / rate)."""
    out: dict[str, float] = {}
    for item in payload["items"]:
        out[item["category"]] = out.get(item["category"], 0.0) + item["unit_price"] * item["quantity"] / rate_per_eur
    return out


class SalesAggregator(FencedWarehouseConsumer):
    """orders → sales_by_minute with per-partition watermarks stored beside the offsets."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = ("orders",)
    batch_size: int = 2000

    def __init__(self, settings: Settings, lateness_s: float = DEFAULT_LATENESS_S, fx_wait_s: float = 30.0,
                 **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.lateness = timedelta(seconds=lateness_s)
        self.fx = FxRates(settings, NAME, max_wait_s=fx_wait_s)
        self.max_event_times: dict[PartitionKey, datetime] = {}
        self._pending: Folded | None = None
        self.late_records = 0
        self.orders = 0

    def open(self, runtime: ConsumerRuntime) -> None:
        super().open(runtime)
        self.fx.open(runtime.stop)

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> Mapping[PartitionKey, int]:
        """Stored offsets (base class) plus the stored max event time of each assigned partition."""
        offsets = super().on_assign(runtime, partitions)
        self._load_watermarks(partitions)
        return offsets

    def on_revoke(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        super().on_revoke(runtime, partitions)
        for key in partitions:
            self.max_event_times.pop(key, None)

    def on_fenced(self, partitions: list[PartitionKey]) -> None:
        """Back to the stored offsets and to the watermarks stored with them."""
        super().on_fenced(partitions)
        self._load_watermarks(partitions)

    def _load_watermarks(self, partitions: list[PartitionKey]) -> None:
        """``max_event_times`` of ``partitions`` as stored (a partition with no stored row has none)."""
        t = schema.stream_watermarks
        with sink_errors(f"{NAME}: reading watermarks"), self.engine.connect() as conn:
            rows = conn.execute(select(t.c.topic, t.c.partition, t.c.max_event_time)
                                .where(t.c.consumer_group == self.group_id)).all()
        wanted = set(partitions)
        for key in wanted:
            self.max_event_times.pop(key, None)
        for topic, partition, max_time in rows:
            if (topic, int(partition)) in wanted:
                value = max_time if isinstance(max_time, datetime) else parse_time(str(max_time))
                assert value is not None
                self.max_event_times[(topic, int(partition))] = (
                    value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))

    def on_idle(self, runtime: ConsumerRuntime) -> None:
        self.fx.refresh(0)

    def process_batch(self, batch: Batch) -> None:
        """Windows + watermarks + offsets in one fenced transaction; the in-memory watermarks move only after it."""
        self._pending = None
        super().process_batch(batch)
        if self._pending is not None:
            self.max_event_times.update(self._pending.max_event_times)
            self.late_records += len(self._pending.late)
            self.orders += self._pending.on_time
            if self._pending.late:
                examples = ", ".join(f"{o.order_id}@{o.event_time.isoformat()}" for o in self._pending.late[:5])
                log.warning("%s: %d late order(s) counted in late_records, not in revenue (lateness %ss): %s",
                            NAME, len(self._pending.late), self.lateness.total_seconds(), examples)
            self._pending = None

    def write(self, conn: Connection, batch: Batch) -> int:
        self.fx.refresh(0)
        facts: list[OrderFacts] = []
        for record in batch.records:
            envelope = record.data
            p = envelope["payload"]
            rate, _ = self.fx.rate(p["currency"], self.runtime.stop if self.runtime else None)
            event_time = parse_time(envelope["event_time"])
            assert event_time is not None
            facts.append(OrderFacts(record.partition_key, p["order_id"], event_time, p["country"],
                                    revenue_by_category(p, rate)))
        folded = fold_orders(facts, self.max_event_times, self.lateness)
        self._write_windows(conn, folded)
        self._pending = folded
        return len(folded.deltas)

    def _write_windows(self, conn: Connection, folded: Folded) -> None:
        now = utc_now()
        t = schema.sales_by_minute
        rows = [{"window_start": ws, "country": country, "category": category, "revenue_eur": d.revenue_eur,
                 "orders": d.orders, "avg_basket_eur": d.revenue_eur / d.orders if d.orders else 0.0,
                 "late_records": d.late_records, "updated_at": now}
                for (ws, country, category), d in folded.deltas.items()]
        if rows:
            stmt = dialect_insert(conn, t)
            revenue = t.c.revenue_eur + stmt.excluded.revenue_eur
            orders = t.c.orders + stmt.excluded.orders
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["window_start", "country", "category"],
                set_={"revenue_eur": revenue, "orders": orders,
                      # * 1.0: SQLite keeps whole NUMERIC values as integers and would divide as integers
                      "avg_basket_eur": case((orders > 0, revenue * 1.0 / orders), else_=0.0),
                      "late_records": t.c.late_records + stmt.excluded.late_records,
                      "updated_at": stmt.excluded.updated_at}), rows)
        w = schema.stream_watermarks
        marks = [{"consumer_group": self.group_id, "topic": topic, "partition": partition, "max_event_time": when,
                  "updated_at": now} for (topic, partition), when in folded.max_event_times.items()]
        if marks:
            stmt = dialect_insert(conn, w)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["consumer_group", "topic", "partition"],
                set_={"max_event_time": stmt.excluded.max_event_time, "updated_at": stmt.excluded.updated_at}), marks)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.fx.close()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "orders": self.orders, "late_records": self.late_records,
                "lateness_s": self.lateness.total_seconds()}


OPTIONS: tuple[Option, ...] = (
    *CONSUMER_OPTIONS,
    option("--lateness", type=float, default=DEFAULT_LATENESS_S,
           help="allowed lateness in seconds: watermark = max event time seen − lateness (default 120)"),
    option("--fx-wait", type=float, default=30.0,
           help="seconds to wait for a missing currency's rate before dead-lettering (default 30)"),
)


def run(settings: Settings, args: Args) -> int:
    if args.lateness < 0 or args.fx_wait < 0:
        raise SystemExit("mbyn: --lateness and --fx-wait must be 0 or more seconds")
    return run_consumer_cli(lambda: SalesAggregator(settings, lateness_s=args.lateness, fx_wait_s=args.fx_wait),
                            settings, args)
