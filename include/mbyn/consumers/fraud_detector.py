"""fraud-detector: orders ⋈ payments (both keyed by order_id) → ``alerts``, with bounded join state.

Rules (``FraudRules``, pure logic, unit-tested):

* ``amount_mismatch`` — a payment whose amount (or currency) differs from its order's by more than a cent.
  Checked whichever side arrives first. Severity high.
* ``payment_without_order`` — a payment whose order has not arrived ``--timeout`` seconds (default 120)
  of stream time after the payment's event time. Severity medium.
* ``order_velocity`` — more than ``--velocity-threshold`` orders (default 5) by one customer in a
  one-minute tumbling event-time window (``--velocity-window``). Fires once, on the order that crosses
  the threshold. Severity high. Orders are keyed by order_id, so a customer's orders spread over the
  partitions: the count is exact with one copy; with N copies each counts its own share (an undercount).

**Time.** Each partition pair ("task" p = orders[p] + payments[p]) has a stream clock = the smaller of the
largest event times seen on each side, so a side read ahead of the other (a backlog) cannot expire state
the other side will still match; state expires against that clock, not the wall clock. When the
copy is caught up (an empty poll and every assigned partition at its end offset), the clocks advance to
the wall clock, so a lone payment is reported even when no further records arrive.

**Co-partitioning.** Both topics have the same partition count and key, so order and payment of one
order_id sit in the same partition number; the group uses the ``range`` assignor, which gives partition
p of both topics to the same copy (``roundrobin`` would not).

**State and restarts.** Join state lives in memory: orders for ``--timeout`` s (for late payments),
unmatched payments until the timeout, velocity windows until they close. It is bounded by those times.
The committed offset of each partition is the oldest offset still held in state (``offsets_to_commit``),
so a restarted copy — or the new owner after a rebalance — re-reads exactly what it needs to rebuild the
state. Each commit also says how far the copy really read (commit metadata ``mbyn:next=``), so the lag
monitor and the pipeline view show the records in between as *held* by the join window, not as lag.
Re-reading can re-raise an alert that was already sent: ``alert_id`` and ``event_id`` are deterministic
(UUIDv5 of the rule and the payment / customer+window), so downstream de-duplicates (the warehouse-loader
keeps the first row per alert_id). Alerts are flushed before any commit.

Run: ``mbyn consume fraud-detector [--timeout 120] [--velocity-threshold 5]``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from confluent_kafka import KafkaException, TopicPartition

from mbyn.consumers.contract import Batch, ConsumerRuntime, PartitionKey, StreamConsumer
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.consumers.warehouse_sink import shift
from mbyn.errors import ConfigError, SinkUnavailableError
from mbyn.kafka.consumer import held_metadata
from mbyn.kafka.producer import DeliveryError, TopicProducer
from mbyn.options import CONSUMER_OPTIONS, Args, Option, option
from mbyn.settings import Settings
from mbyn.warehouse.engine import parse_time

log = logging.getLogger("mbyn.consumer")

NAME = "fraud-detector"
ALERT_NAMESPACE = uuid.UUID("0f8a2b3c-5d4e-4f60-9a1b-2c3d4e5f6a7b")
TOLERANCE = 0.01


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    amount: float
    currency: str
    event_time: datetime
    source: PartitionKey
    offset: int


@dataclass(frozen=True)
class Payment:
    payment_id: str
    order_id: str
    amount: float
    currency: str
    status: str
    event_time: datetime
    source: PartitionKey
    offset: int


@dataclass(frozen=True)
class Alert:
    """A fraud alert; ``alert_id`` is deterministic so re-raising it is harmless downstream."""

    alert_id: str
    kind: str
    severity: str
    event_time: datetime
    details: str
    order_id: str | None = None
    customer_id: str | None = None

    @property
    def event_id(self) -> str:
        return str(uuid.uuid5(ALERT_NAMESPACE, self.alert_id))

    def payload(self) -> dict[str, Any]:
        p: dict[str, Any] = {"alert_id": self.alert_id, "kind": self.kind, "severity": self.severity,
                             "details": self.details[:2000]}
        if self.order_id is not None:
            p["order_id"] = self.order_id
        if self.customer_id is not None:
            p["customer_id"] = self.customer_id
        return p


def alert_id(kind: str, *parts: str) -> str:
    """``<kind>-<uuid5 of the parts>``: stable across re-processing, at most 64 characters."""
    return f"{kind}-{uuid.uuid5(ALERT_NAMESPACE, '|'.join((kind, *parts)))}"


def minute_floor(t: datetime, window: timedelta) -> datetime:
    seconds = int(window.total_seconds())
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


@dataclass
class _Task:
    """Join state of one partition number (orders[p] + payments[p])."""

    clock: datetime | None = None
    seen: dict[str, datetime] = field(default_factory=dict)  # side ("orders" / "payments") → max event time
    orders: dict[str, Order] = field(default_factory=dict)
    pending: dict[str, Payment] = field(default_factory=dict)  # payment_id → payment without its order yet


class FraudRules:
    """The three rules over per-task join state; feed records in offset order, collect alerts.

    Every method is idempotent for a record seen twice (state is keyed by order_id / payment_id /
    order ids in a velocity window), which is what makes re-reading after a restart safe.
    """

    def __init__(self, timeout: timedelta = timedelta(seconds=120), velocity_threshold: int = 5,
                 velocity_window: timedelta = timedelta(minutes=1)) -> None:
        self.timeout = timeout
        self.velocity_threshold = velocity_threshold
        self.velocity_window = velocity_window
        self.tasks: dict[int, _Task] = {}
        # (customer, window start) → {order_id: order}; across tasks (see the module docstring).
        self.velocity: dict[tuple[str, datetime], dict[str, Order]] = {}

    def task(self, partition: int) -> _Task:
        return self.tasks.setdefault(partition, _Task())

    def on_order(self, order: Order) -> list[Alert]:
        task = self.task(order.source[1])
        alerts = []
        task.orders[order.order_id] = order
        for payment in [p for p in task.pending.values() if p.order_id == order.order_id]:
            del task.pending[payment.payment_id]
            alerts += self._compare(order, payment)
        alerts += self._count(order)
        alerts += self._observe(task, order.source[1], "orders", order.event_time)
        return alerts

    def on_payment(self, payment: Payment) -> list[Alert]:
        task = self.task(payment.source[1])
        alerts: list[Alert] = []
        order = task.orders.get(payment.order_id)
        if order is not None:
            alerts += self._compare(order, payment)
        else:
            task.pending[payment.payment_id] = payment
        alerts += self._observe(task, payment.source[1], "payments", payment.event_time)
        return alerts

    def _observe(self, task: _Task, partition: int, side: str, when: datetime) -> list[Alert]:
        """The task's clock is the *smaller* of the two sides' largest event times: a side read ahead of the
        other (a backlog, or one fetch returning first) must not expire state the other side will match."""
        seen = task.seen.get(side)
        if seen is None or when > seen:
            task.seen[side] = when
        if len(task.seen) < 2:
            return []
        return self.advance(partition, min(task.seen.values()))

    def advance(self, partition: int, now: datetime) -> list[Alert]:
        """Move task ``partition``'s clock to ``now`` (never back); expire state, report lone payments.

        Called with the stream clock on every record and with the wall clock when the copy is caught up."""
        task = self.task(partition)
        if task.clock is not None and now <= task.clock:
            return []
        task.clock = now
        alerts = []
        for payment in sorted(task.pending.values(), key=lambda p: p.offset):
            if shift(payment.event_time, self.timeout) <= now:
                del task.pending[payment.payment_id]
                alerts.append(Alert(
                    alert_id("payment_without_order", payment.payment_id), "payment_without_order", "medium",
                    shift(payment.event_time, self.timeout),
                    f"payment {payment.payment_id} of {payment.amount:.2f} {payment.currency} ({payment.status}) "
                    f"has no order {payment.order_id} after {self.timeout.total_seconds():.0f}s",
                    order_id=payment.order_id))
        for order_id in [o.order_id for o in task.orders.values() if shift(o.event_time, self.timeout) <= now]:
            del task.orders[order_id]
        # Windows span partitions: close one only when the slowest partition's clock has passed it.
        slowest = min((t.clock for t in self.tasks.values() if t.clock is not None), default=now)
        for key in [k for k in self.velocity
                    if shift(k[1], self.velocity_window) <= shift(slowest, -self.timeout)]:
            del self.velocity[key]
        return alerts

    def _compare(self, order: Order, payment: Payment) -> list[Alert]:
        if order.currency == payment.currency and abs(order.amount - payment.amount) <= TOLERANCE:
            return []
        return [Alert(alert_id("amount_mismatch", payment.payment_id), "amount_mismatch", "high",
                      max(order.event_time, payment.event_time),
                      f"payment {payment.payment_id} is {payment.amount:.2f} {payment.currency}, order "
                      f"{order.order_id} is {order.amount:.2f} {order.currency}",
                      order_id=order.order_id, customer_id=order.customer_id)]

    def _count(self, order: Order) -> list[Alert]:
        start = minute_floor(order.event_time, self.velocity_window)
        window = self.velocity.setdefault((order.customer_id, start), {})
        before = len(window)
        window[order.order_id] = order
        if before == self.velocity_threshold and len(window) == self.velocity_threshold + 1:
            return [Alert(alert_id("order_velocity", order.customer_id, start.isoformat()), "order_velocity", "high",
                          order.event_time,
                          f"customer {order.customer_id} placed more than {self.velocity_threshold} orders in the "
                          f"{self.velocity_window.total_seconds():.0f}s window from {start.isoformat()}",
                          order_id=order.order_id, customer_id=order.customer_id)]
        return []

    def held_offsets(self) -> dict[PartitionKey, int]:
        """Per source partition, the oldest offset still held in state (orders, payments, open windows)."""
        held: dict[PartitionKey, int] = {}

        def hold(items: Iterable[Order | Payment]) -> None:
            for item in items:
                if item.offset < held.get(item.source, item.offset + 1):
                    held[item.source] = item.offset

        for task in self.tasks.values():
            hold(task.orders.values())
            hold(task.pending.values())
        for window in self.velocity.values():
            hold(window.values())
        return held

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the state of tasks that went to another copy (it rebuilds them from the commits)."""
        gone = set(partitions)
        for p in gone:
            self.tasks.pop(p, None)
        for key, window in list(self.velocity.items()):
            kept = {oid: o for oid, o in window.items() if o.source[1] not in gone}
            if kept:
                self.velocity[key] = kept
            else:
                del self.velocity[key]

    def size(self) -> int:
        return sum(len(t.orders) + len(t.pending) for t in self.tasks.values()) + len(self.velocity)


def _time(text: str) -> datetime:
    value = parse_time(text)
    assert value is not None
    return value


class FraudDetector(StreamConsumer):
    """orders + payments → alerts; commits only what the join state no longer needs."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = ("orders", "payments")
    kafka_config: ClassVar[Mapping[str, Any]] = {"partition.assignment.strategy": "range"}
    batch_size: int = 1000

    def __init__(self, settings: Settings, rules: FraudRules | None = None) -> None:
        self.settings = settings
        self.rules = rules or FraudRules()
        self.producer: TopicProducer | None = None
        self.runtime: ConsumerRuntime | None = None
        self.next_offsets: dict[PartitionKey, int] = {}
        self.alerts_by_kind: dict[str, int] = {}
        self._last_catch_up_check = 0.0
        self._idle_committed: dict[PartitionKey, int] = {}  # what the last idle commit committed

    def open(self, runtime: ConsumerRuntime) -> None:
        self.runtime = runtime
        counts = {name: runtime.catalog.get(name).partitions for name in self.topics}
        if len(set(counts.values())) != 1:
            raise ConfigError(f"{NAME}: orders and payments must have the same partition count to be joined "
                              f"(include/topics.yaml has {counts})")
        self.producer = TopicProducer(NAME, self.settings)

    def on_assign(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        return None  # committed offsets = oldest state still needed: Kafka's position is the right start

    def on_revoke(self, runtime: ConsumerRuntime, partitions: list[PartitionKey]) -> None:
        self.rules.drop({p for _, p in partitions})
        for key in partitions:
            self.next_offsets.pop(key, None)

    def process_batch(self, batch: Batch) -> None:
        """Feed records to the rules in poll order, send the alerts, flush them (before the commit)."""
        alerts: list[Alert] = []
        for record in batch.records:
            env = record.data
            p = env["payload"]
            when = _time(env["event_time"])
            if record.topic == "orders":
                alerts += self.rules.on_order(Order(p["order_id"], p["customer_id"], float(p["amount"]),
                                                    p["currency"], when, record.partition_key, record.offset))
            else:
                alerts += self.rules.on_payment(Payment(p["payment_id"], p["order_id"], float(p["amount"]),
                                                        p["currency"], p["status"], when, record.partition_key,
                                                        record.offset))
        self.next_offsets.update(batch.next_offsets)
        self._send(alerts)

    def _send(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        assert self.producer is not None
        for alert in alerts:
            envelope = {"event_id": alert.event_id, "event_type": "fraud_alert", "schema_version": 1,
                        # isoformat pads the year to 4 digits (strftime's %Y does not on Linux)
                        "event_time": alert.event_time.astimezone(UTC).replace(tzinfo=None)
                        .isoformat(timespec="milliseconds") + "Z",
                        "source": NAME, "payload": alert.payload()}
            if not self.producer.send("alerts", envelope, alert.alert_id):
                raise AssertionError(f"{NAME} built an invalid alert: {envelope}")
            self.alerts_by_kind[alert.kind] = self.alerts_by_kind.get(alert.kind, 0) + 1
            log.warning("%s: %s %s: %s", NAME, alert.kind, alert.alert_id, alert.details)
        try:
            self.producer.flush_or_raise()
        except DeliveryError as exc:  # the state is idempotent, so retrying the batch re-sends the same alerts
            raise SinkUnavailableError(str(exc)) from exc

    def offsets_to_commit(self, batch: Batch) -> Mapping[PartitionKey, int]:
        """Per partition: the oldest offset still held in join state, else the next offset."""
        held = self.rules.held_offsets()
        return {key: min(offset, held.get(key, offset)) for key, offset in self.next_offsets.items()}

    def on_idle(self, runtime: ConsumerRuntime) -> None:
        """Caught up on every partition: let the clocks follow the wall clock, report lone payments, commit."""
        now = time.monotonic()
        if now - self._last_catch_up_check < 1.0 or not runtime.assignment or not self._caught_up(runtime):
            return
        self._last_catch_up_check = now
        wall = datetime.now(UTC)
        alerts: list[Alert] = []
        for partition in {p for _, p in runtime.assignment}:
            alerts += self.rules.advance(partition, wall)
        if alerts:
            self._send(alerts)
        if alerts or self.offsets_to_commit(Batch([], {})) != self._idle_committed:
            self._commit_now(runtime)  # state expired: fewer records held (what the lag monitor reports)

    def _caught_up(self, runtime: ConsumerRuntime) -> bool:
        self._last_catch_up_check = time.monotonic()
        positions = runtime.kafka.position([TopicPartition(t, p) for t, p in runtime.assignment])
        for tp in positions:
            _, high = runtime.kafka.get_watermark_offsets(tp, timeout=5)
            if high > 0 and tp.offset < high:
                return False
        return True

    def _commit_now(self, runtime: ConsumerRuntime) -> None:
        offsets = self.offsets_to_commit(Batch([], {}))
        if not offsets:
            return
        self._idle_committed = dict(offsets)
        try:
            # The metadata says how far it read: the records in between are held (join state), not waiting.
            runtime.kafka.commit(offsets=[
                TopicPartition(t, p, o, metadata=held_metadata(o, self.next_offsets.get((t, p))))
                for (t, p), o in sorted(offsets.items())], asynchronous=False)
        except KafkaException as exc:  # a rebalance in between: the next owner re-reads and re-alerts (deduped)
            log.warning("%s: commit after idle expiry failed (%s)", NAME, exc)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()

    def summary(self) -> dict[str, Any]:
        return {"alerts": dict(self.alerts_by_kind), "state_items": self.rules.size()}


OPTIONS: tuple[Option, ...] = (
    *CONSUMER_OPTIONS,
    option("--timeout", type=float, default=120.0,
           help="seconds a payment waits for its order (and an order is kept for its payments)"),
    option("--velocity-threshold", type=int, default=5,
           help="alert when a customer places more than this many orders in one window (default 5)"),
    option("--velocity-window", type=float, default=60.0, help="velocity window in seconds (default 60)"),
)


def run(settings: Settings, args: Args) -> int:
    if args.timeout <= 0 or args.velocity_threshold < 1:
        raise SystemExit("mbyn: --timeout must be > 0 and --velocity-threshold >= 1")
    if args.velocity_window < 1 or args.velocity_window != int(args.velocity_window):
        # Windows are whole seconds from the epoch; 0.5 would floor every order into a 0-second window.
        raise SystemExit(f"mbyn: --velocity-window must be a whole number of seconds >= 1, got {args.velocity_window}")
    rules = FraudRules(timedelta(seconds=args.timeout), args.velocity_threshold,
                       timedelta(seconds=args.velocity_window))
    return run_consumer_cli(lambda: FraudDetector(settings, rules), settings, args)
