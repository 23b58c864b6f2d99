"""
### Clickstream burst (manual)

Sends a burst of simulated shop traffic — page views, carts and the orders they lead to — to the
**clickstream** and **orders** topics. Trigger it with `count` (records) and `rate` (records per second,
empty = as fast as possible) to load-test the consumers or to see data flow in the UI.

Code: `mbyn.sources.generator.shop_events` through `mbyn.sources.base.stream_to_kafka`.
Run by hand: `mbyn produce clickstream --count 1000`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 0}


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "producer", "clickstream", "manual"],
    doc_md=__doc__,
    params={
        "count": Param(1000, type="integer", minimum=1, maximum=5_000_000, description="records to send"),
        "rate": Param(None, type=["null", "number"], exclusiveMinimum=0,
                      description="records per second; empty = as fast as possible"),
        "seed": Param(None, type=["null", "integer"], description="same seed, same sequence; empty = random"),
    },
)
def clickstream_burst() -> None:
    @task
    def send_burst(params: dict | None = None) -> dict:
        """Stream `count` generated records at `rate` and return the producer's counts."""
        from mbyn.sources.base import stream_to_kafka
        from mbyn.sources.generator import SOURCE, shop_events

        params = params or {}
        result = stream_to_kafka(SOURCE, shop_events(params.get("seed")), get_settings(),
                                 count=int(params["count"]), rate=params.get("rate"))
        if result.counters["failed"]:
            raise RuntimeError(f"{result.counters['failed']} record(s) were not delivered: {result.summary()}")
        return result.summary()

    send_burst()


clickstream_burst()
