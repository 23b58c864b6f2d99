"""The workers: every producer and consumer mbyn can run, declared once.

This is the only list of workers. ``mbyn produce <name>`` / ``mbyn consume <name>``, ``mbyn run``'s
supervisor (copies, arguments, ``--instance-id``), ``mbyn status`` (the topics a group subscribes to), the
pipeline view (registered producers and their ``source``), the secured mode's principals and ACLs
(consumer groups, transactional ids, monitors) and the compose test all read it; none of them imports a
worker's module to learn these facts. A worker's module is imported only when it runs (or its ``--help``
is shown): it defines ``run(settings, args)``.

``reads`` / ``writes`` are logical topic names and must be exactly the topics of ``include/topics.yaml``
that name the worker among their ``readers`` / ``writers`` (a unit test checks both ways; the catalog
drives the ACLs). Adding a worker: its module, one entry below, its topics in the catalog, one test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mbyn.errors import ConfigError

Kind = Literal["producer", "consumer"]
#: The CLI verb of each kind: ``mbyn produce <name>`` / ``mbyn consume <name>``.
VERBS: dict[Kind, str] = {"producer": "produce", "consumer": "consume"}
DEAD_LETTERS = "dead-letters"


@dataclass(frozen=True)
class Worker:
    """One producer or consumer.

    ``copies`` is how many copies ``mbyn run`` starts by default (0: not started; ``--scale`` may still
    start it) and ``args`` the extra arguments they get. ``tables`` are topics among ``reads`` that the
    worker reads in full as in-memory tables (``consumers.tables.TopicTable``) rather than through
    its group's offsets, so they count for the ACLs but not for its group's lag. ``groups`` are its consumer
    group ids without the topic prefix; left empty it is its name when it reads any topic (none otherwise).
    ``source`` is the envelope ``source`` a producer writes (how the pipeline view recognises its records).
    ``instance_id``: it accepts ``--instance-id`` (static membership; the supervisor passes one per copy).
    ``transactional``: it writes with Kafka transactions (transactional ids ``<prefix><name>-``).
    ``monitor``: it reads no records but describes every group and topic of the prefix.
    ``replay_class``: the ``StreamConsumer`` class in ``module`` that ``mbyn replay`` runs in-process to re-load
    what it rewound (its offsets live in the warehouse); empty: the group's own copies re-read on their next start.
    ``adds_to``: the table its writes add up in (windows, counters) — ``mbyn replay`` refuses such a group,
    because re-read records would count twice.
    ``lag_objective_s``: how many seconds behind its groups may fall before the lag-monitor raises a lag alert
    (``mbyn.consumers.lag_objectives``; None: no objective, never alerted on). A worker that holds records by
    design (a join window) needs an objective above that window.
    ``holds``: why it holds records it has read by design (a join or window): its commits stay behind what it
    processed, and the lag monitor and the pipeline view show that part of its lag as *held*, not waiting.
    """

    name: str
    kind: Kind
    module: str
    help: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    copies: int = 0
    args: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    source: str | None = None
    instance_id: bool = False
    transactional: bool = False
    monitor: bool = False
    replay_class: str = ""
    adds_to: str = ""
    lag_objective_s: float | None = None
    holds: str = ""

    def __post_init__(self) -> None:
        if not self.groups and self.reads:
            object.__setattr__(self, "groups", (self.name,))

    @property
    def verb(self) -> str:
        """``produce`` or ``consume``: the CLI sub-command that runs it."""
        return VERBS[self.kind]

    @property
    def key(self) -> str:
        """``<verb>:<name>``: how ``mbyn run --scale`` and the run-state file name the worker."""
        return f"{self.verb}:{self.name}"

    @property
    def subscribes(self) -> tuple[str, ...]:
        """The topics its consumer group subscribes to: what it reads, less the topics it reads as tables."""
        return tuple(t for t in self.reads if t not in self.tables)


#: The raw topics: what the producers write from outside sources (the loader and the lake archiver read them all).
RAW_TOPICS = ("clickstream", "orders", "payments", "customers", "inventory", "fx-rates", "shipments")


def _declare(*workers: Worker) -> dict[str, Worker]:
    found: dict[str, Worker] = {}
    for w in workers:
        if w.name in found:  # one name is one SCRAM principal and one log file name: unique across kinds
            raise ConfigError(f"worker {w.name!r} is declared twice")
        found[w.name] = w
    return found


#: Every worker by name, producers first; the order is the order of ``mbyn produce`` / ``consume`` help
#: and of the copies ``mbyn run`` starts.
WORKERS: dict[str, Worker] = _declare(
    # Producers ----------------------------------------------------------------------------------------
    Worker("clickstream", "producer", "mbyn.sources.generator",
           "Python/Faker generator: endless shop sessions → clickstream + orders",
           writes=("clickstream", "orders"), source="clickstream-generator",
           copies=2, args=("--rate", "25", "--invalid-ratio", "0.005")),  # a laptop stays responsive
    Worker("fx-rates", "producer", "mbyn.sources.fx_rates", "ECB daily euro reference rates (HTTP poll) → fx-rates",
           writes=("fx-rates",), source="fx-rates-poller"),
    Worker("customers", "producer", "mbyn.sources.customers_db",
           "shop database changes since the watermark → customers",
           writes=("customers",), source="customers-db"),
    Worker("inventory", "producer", "mbyn.sources.inventory_drop", "CSV / JSON Lines landing files → inventory",
           writes=("inventory",), source="inventory-drop"),
    Worker("payments", "producer", "mbyn.sources.payments",
           "Java/kafka-clients payments service: orders → payment outcomes (authorized, declined, ...)",
           reads=("orders",), writes=("payments", DEAD_LETTERS), groups=("payments-service",),
           source="payments-service", copies=2, lag_objective_s=60.0),
    Worker("shipments", "producer", "mbyn.sources.shipments",
           "Go/franz-go shipment tracker: authorized payments → shipment status changes",
           reads=("payments",), writes=("shipments", DEAD_LETTERS), groups=("shipment-tracker",),
           source="shipment-tracker", copies=2, args=("--stage-delay", "5"),
           lag_objective_s=120.0),
    # Consumers ----------------------------------------------------------------------------------------
    Worker("warehouse-loader", "consumer", "mbyn.consumers.warehouse_loader",
           "raw topics → warehouse tables, exactly once (offsets stored with the rows)",
           reads=(*RAW_TOPICS, "alerts"), writes=(DEAD_LETTERS,), copies=2, instance_id=True,
           replay_class="WarehouseLoader", lag_objective_s=30.0),
    Worker("dead-letters", "consumer", "mbyn.consumers.dead_letters",
           "dead-letters topic → quarantine table, exactly once",
           reads=(DEAD_LETTERS,), writes=(DEAD_LETTERS,), copies=1, instance_id=True,
           replay_class="DeadLetterSink", lag_objective_s=60.0),
    Worker("order-enricher", "consumer", "mbyn.consumers.order_enricher",
           "orders + fx-rates → orders-enriched (EUR amounts), exactly once with Kafka transactions",
           reads=("orders", "fx-rates"), tables=("fx-rates",), writes=("orders-enriched", DEAD_LETTERS),
           copies=2, instance_id=True, transactional=True, lag_objective_s=30.0),
    Worker("sales-aggregator", "consumer", "mbyn.consumers.sales_aggregator",
           "orders + fx-rates → sales_by_minute (1-minute event-time windows), exactly once",
           reads=("orders", "fx-rates"), tables=("fx-rates",), writes=(DEAD_LETTERS,), copies=2, instance_id=True,
           adds_to="sales_by_minute", lag_objective_s=300.0),  # windows stay open for --lateness (120 s)
    Worker("fraud-detector", "consumer", "mbyn.consumers.fraud_detector",
           "orders ⋈ payments → alerts (amount mismatch, payment without order, order velocity)",
           reads=("orders", "payments"), writes=("alerts", DEAD_LETTERS), copies=2, instance_id=True,
           lag_objective_s=300.0,  # above its join window (--timeout 120 s): held orders are not lag
           holds="its join window: each order and payment stays in memory up to --timeout (120 s) of stream "
                 "time to be matched, and is committed only once no rule needs it (a restart re-reads them)"),
    Worker("lake-archiver", "consumer", "mbyn.consumers.lake_archiver",
           "raw topics → Parquet files under var/lake (date/hour partitions)",
           reads=RAW_TOPICS, writes=(DEAD_LETTERS,), copies=2, instance_id=True, lag_objective_s=120.0),
    Worker("lag-monitor", "consumer", "mbyn.consumers.lag_monitor",
           "consumer-group lag of every group of this prefix → lag_samples, every few seconds; lag alerts → "
           "ops-alerts", writes=("ops-alerts",), copies=1, monitor=True),
)


def producers() -> list[Worker]:
    """The producers, in declaration order."""
    return [w for w in WORKERS.values() if w.kind == "producer"]


def consumers() -> list[Worker]:
    """The consumers, in declaration order."""
    return [w for w in WORKERS.values() if w.kind == "consumer"]


def worker(kind: Kind, name: str) -> Worker:
    """The ``kind`` worker called ``name``; ConfigError listing the known ones of that kind otherwise."""
    found = WORKERS.get(name)
    if found is None or found.kind != kind:
        known = ", ".join(w.name for w in WORKERS.values() if w.kind == kind)
        raise ConfigError(f"unknown {kind} {name!r}; known: {known}")
    return found


def by_key(key: str) -> Worker:
    """The worker named by ``<verb>:<name>`` (``produce:clickstream``); ConfigError otherwise."""
    verb, _, name = key.partition(":")
    kinds = {v: k for k, v in VERBS.items()}
    if verb not in kinds:
        raise ConfigError(f"{key!r}: expected produce:NAME or consume:NAME")
    return worker(kinds[verb], name)
