"""Producers: one module per source. Each module defines ``add_arguments(parser)`` and ``run(settings, args)``.

``mbyn produce <name>`` looks the name up in ``PRODUCERS``; batch producers also expose a plain function
that Airflow tasks call (see each module).
"""

from __future__ import annotations

from mbyn.registry import WorkerSpec

PRODUCERS: dict[str, WorkerSpec] = {
    spec.name: spec
    for spec in (
        WorkerSpec("clickstream", "mbyn.sources.generator",
                   "Python/Faker generator: endless shop sessions → clickstream + orders"),
        WorkerSpec("fx-rates", "mbyn.sources.fx_rates", "ECB daily euro reference rates (HTTP poll) → fx-rates"),
        WorkerSpec("customers", "mbyn.sources.customers_db", "shop database changes since the watermark → customers"),
        WorkerSpec("inventory", "mbyn.sources.inventory_drop", "CSV / JSON Lines landing files → inventory"),
        WorkerSpec("payments", "mbyn.sources.payments",
                   "Java/kafka-clients payments service: orders → payment outcomes (authorized, declined, ...)"),
        WorkerSpec("shipments", "mbyn.sources.shipments",
                   "Go/franz-go shipment tracker: authorized payments → shipment status changes"),
    )
}
