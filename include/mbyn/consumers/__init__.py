"""Consumers: one module per consumer group. Each module defines ``add_arguments(parser)`` (optional) and
``run(settings, args)``; ``mbyn consume <name>`` looks the name up in ``CONSUMERS``."""

from __future__ import annotations

from mbyn.registry import WorkerSpec

CONSUMERS: dict[str, WorkerSpec] = {
    spec.name: spec
    for spec in (
        WorkerSpec("warehouse-loader", "mbyn.consumers.warehouse_loader",
                   "raw topics → warehouse tables, exactly once (offsets stored with the rows)"),
        WorkerSpec("dead-letters", "mbyn.consumers.dead_letters",
                   "dead-letters topic → quarantine table, exactly once"),
        WorkerSpec("order-enricher", "mbyn.consumers.order_enricher",
                   "orders + fx-rates → orders-enriched (EUR amounts), exactly once with Kafka transactions"),
        WorkerSpec("sales-aggregator", "mbyn.consumers.sales_aggregator",
                   "orders + fx-rates → sales_by_minute (1-minute event-time windows), exactly once"),
        WorkerSpec("fraud-detector", "mbyn.consumers.fraud_detector",
                   "orders ⋈ payments → alerts (amount mismatch, payment without order, order velocity)"),
        WorkerSpec("lake-archiver", "mbyn.consumers.lake_archiver",
                   "raw topics → Parquet files under var/lake (date/hour partitions)"),
        WorkerSpec("lag-monitor", "mbyn.consumers.lag_monitor",
                   "consumer-group lag of every group of this prefix → lag_samples, every few seconds"),
    )
}
