"""order-enricher: orders + fx-rates → ``orders-enriched`` with EUR amounts, exactly once (Kafka transactions).

Consume-transform-produce in one Kafka transaction per batch: the enriched records and the batch's
consumer offsets (``send_offsets_to_transaction`` with the group's metadata) commit together or not at
all, so a reader with ``isolation.level=read_committed`` sees every order exactly once across crashes,
restarts and rebalances (``commit_mode = "transaction"``; the runtime never commits for this group).

* **FX as a table.** Every copy reads ALL partitions of the compacted ``fx-rates`` topic (``FxRates``:
  assign, not subscribe) into ``currency → (rate_per_eur, rate_date)`` before the first batch and again
  before each batch. ``amount_eur = round(amount / rate_per_eur, 2)``; EUR has rate 1 and ``fx_date`` null.
* **Missing rate.** An order in a currency without a rate waits (polling fx-rates) up to ``--fx-wait``
  seconds (default 30) from the first time that currency was needed, then is dead-lettered with reason
  ``no_fx_rate`` — no guessed amount is ever emitted. The wait happens before the transaction begins.
* **transactional.id** = ``<group>-<instance id>``: pass ``--instance-id`` (stable per copy, e.g. ``a``,
  ``b``) so a restarted copy aborts its predecessor's open transaction at once and fences it; without
  it a random id is used and a crashed copy's open transaction blocks read_committed readers until it
  times out (``transaction.timeout.ms`` = 30 s). Zombie fencing across copies comes from the group
  metadata sent with the offsets (KIP-447), not from the id.
* **Determinism.** The enriched envelope's ``event_id`` is a UUIDv5 of the order's event id and its
  ``event_time`` is the order's, so even a non-transactional re-run produces identical records.

Run: ``mbyn consume order-enricher --instance-id a`` (one id per copy; up to 6 copies, one per partition).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, ClassVar

from confluent_kafka import KafkaException

from mbyn.consumers.contract import Batch, CommitMode, ConsumerRuntime, Record, StreamConsumer
from mbyn.consumers.runtime import run_consumer_cli
from mbyn.consumers.tables import FxRates
from mbyn.contracts.envelope import validate
from mbyn.errors import SinkUnavailableError, StateError
from mbyn.kafka.producer import TopicProducer
from mbyn.options import CONSUMER_OPTIONS, Args, Option, option
from mbyn.settings import Settings

log = logging.getLogger("mbyn.consumer")

NAME = "order-enricher"
OUTPUT = "orders-enriched"
#: Namespace of the enriched records' event ids (uuid5 of the order's event id).
ENRICHED_NAMESPACE = uuid.UUID("6c1c3a4e-6f43-4b1e-9a53-0b5f3c2f6e11")
TRANSACTION_TIMEOUT_MS = 30_000


def enrich(order: dict[str, Any], rate: float, rate_date: str | None, source: str = NAME) -> dict[str, Any]:
    """The ``order_enriched`` envelope for an ``order_placed`` envelope and the currency's rate per EUR."""
    p = order["payload"]
    envelope: dict[str, Any] = {
        "event_id": str(uuid.uuid5(ENRICHED_NAMESPACE, order["event_id"])),
        "event_type": "order_enriched",
        "schema_version": order["schema_version"],
        "event_time": order["event_time"],
        "source": source,
        "payload": {"order_id": p["order_id"], "customer_id": p["customer_id"], "country": p["country"],
                    "currency": p["currency"], "amount": p["amount"],
                    "amount_eur": round(p["amount"] / rate, 2), "fx_rate": rate, "fx_date": rate_date},
    }
    if order.get("trace_id"):
        envelope["trace_id"] = order["trace_id"]
    return envelope


class OrderEnricher(StreamConsumer):
    """orders → orders-enriched in one Kafka transaction per batch (offsets included)."""

    name: ClassVar[str] = NAME
    topics: ClassVar[tuple[str, ...]] = ("orders",)
    commit_mode: ClassVar[CommitMode] = "transaction"
    batch_size: int = 500
    retry_timeout_s: float | None = 120.0  # an abortable transaction error that persists means lost partitions

    def __init__(self, settings: Settings, fx_wait_s: float = 30.0) -> None:
        self.settings = settings
        self.fx = FxRates(settings, NAME, max_wait_s=fx_wait_s)
        self.producer: TopicProducer | None = None
        self.runtime: ConsumerRuntime | None = None
        self.transactions = 0
        self.enriched = 0

    def open(self, runtime: ConsumerRuntime) -> None:
        """Load the fx table, then create the transactional producer (fencing a previous incarnation)."""
        self.runtime = runtime
        self.fx.open(runtime.stop)
        suffix = runtime.instance_id or uuid.uuid4().hex[:12]
        transactional_id = f"{runtime.group_id}-{suffix}"
        self.producer = TopicProducer(NAME, self.settings, config={
            "transactional.id": transactional_id, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.timeout.ms": TRANSACTION_TIMEOUT_MS})
        self.producer.raw.init_transactions(60)
        log.info("%s: transactional.id %s ready (fx table: %d currencies)", NAME, transactional_id, len(self.fx.rows))

    def on_idle(self, runtime: ConsumerRuntime) -> None:
        self.fx.refresh(0)

    def process_batch(self, batch: Batch) -> None:
        """Enrich every order (waiting for missing rates first), then produce + offsets in one transaction.

        All-or-nothing: a poison record (no rate after the wait, invalid output) raises before the
        transaction starts; a transaction error aborts it and raises SinkUnavailableError (retried).
        """
        assert self.producer is not None and self.runtime is not None
        if not batch.next_offsets:
            return
        self.fx.refresh(0)
        out = [(record.key_str, self._enrich(record)) for record in batch.records]
        for _, envelope in out:
            validate(OUTPUT, envelope)  # ContractError = poison: the runtime isolates and dead-letters it
        raw = self.producer.raw
        begun = False
        try:
            raw.begin_transaction()
            begun = True
            for key, envelope in out:
                self.producer.send(OUTPUT, envelope, key, validated=True)
            raw.send_offsets_to_transaction(batch.offsets(), self.runtime.group_metadata(), 60)
            self._commit(raw)
            begun = False
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise StateError(f"{NAME}: transactional producer is fenced or broken ({error.str()}); another copy "
                                 "probably runs with the same --instance-id") from exc
            self._abort(raw, begun)
            raise SinkUnavailableError(f"{NAME}: transaction aborted: {error.str()}") from exc
        except BaseException:
            self._abort(raw, begun)
            raise
        self.transactions += 1
        self.enriched += len(out)

    @staticmethod
    def _abort(raw: Any, begun: bool) -> None:
        """Abort a transaction this batch opened, whatever failed inside it (a local produce error too):
        left open, every later ``begin_transaction`` would fail with "Operation not valid in state InTransaction"."""
        if not begun:
            return
        try:
            raw.abort_transaction(60)
        except KafkaException as exc:
            log.warning("%s: aborting the transaction failed too: %s", NAME, exc)

    @staticmethod
    def _commit(raw: Any) -> None:
        """commit_transaction, repeated while librdkafka says the outcome is retriable."""
        for attempt in range(1, 6):
            try:
                raw.commit_transaction(60)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == 5:
                    raise

    def _enrich(self, record: Record) -> dict[str, Any]:
        order = record.data
        rate, rate_date = self.fx.rate(order["payload"]["currency"], self.runtime.stop if self.runtime else None)
        return enrich(order, rate, rate_date)

    def close(self) -> None:
        try:
            if self.producer is not None:
                self.producer.close()  # anything still open was never committed: the broker aborts it
        finally:
            self.fx.close()

    def summary(self) -> dict[str, Any]:
        return {"enriched": self.enriched, "transactions": self.transactions, "fx_currencies": len(self.fx.rows),
                "fx_waits": self.fx.waits}


OPTIONS: tuple[Option, ...] = (
    *CONSUMER_OPTIONS,
    option("--fx-wait", type=float, default=30.0,
           help="seconds to wait for a missing currency's rate before dead-lettering (default 30)"),
)


def run(settings: Settings, args: Args) -> int:
    if args.fx_wait < 0:
        raise SystemExit("mbyn: --fx-wait must be 0 or more seconds")
    return run_consumer_cli(lambda: OrderEnricher(settings, fx_wait_s=args.fx_wait), settings, args)
