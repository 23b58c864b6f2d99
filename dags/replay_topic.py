"""
### Replay a topic for a consumer group (manual)

Rewinds consumer group **group** on topic **topic** to the first record at or after **from_ts**
and re-processes from there — after a bug fix in a consumer, or to rebuild rows from the log.

* The group must have **no active members**: stop its consumers first. The run fails with the
  group's name and members otherwise (Kafka refuses to move a live group's offsets).
* The committed offsets in Kafka move back (`offsets_for_times`); for the warehouse consumers
  (warehouse-loader, dead-letters), which keep their offsets in the warehouse table `kafka_offsets`,
  those move back too, in one transaction. A partition is never moved forward.
* With `reload` on, one copy of a warehouse consumer runs inside the task until idle and the
  summary reports how many records were re-processed and the row counts before and after — which
  stay the same, because the loaders upsert on business keys. Otherwise (or for other groups) the
  group's consumers re-read on their next start.

* With `dry_run` on, nothing moves: the run previews what would be re-read — per partition the group's
  position now (`from_offset`), the offset it would rewind to (`to_offset`) and the `records` between, for
  `from_ts` — and lists the group's active members (a preview works while they run; the real replay refuses).

The summary is returned as XCom (`return_value`) and logged.
Code: `mbyn.replay.replay`. By hand: `mbyn replay --topic orders --group warehouse-loader --from-ts ...`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from airflow.sdk import Param, dag, task

from mbyn.catalog import load_catalog
from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 0}


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "replay", "operations", "manual"],
    doc_md=__doc__,
    params={
        "topic": Param("orders", type="string", enum=sorted(load_catalog().topics),
                       description="catalog topic to re-read"),
        "group": Param("warehouse-loader", type="string", pattern=r"^[A-Za-z0-9._-]+$",
                       description="consumer name as in `mbyn consume NAME` (the topic prefix is added)"),
        "from_ts": Param(type="string", format="date-time", minLength=10,
                         description="ISO-8601 time, e.g. 2026-11-25T10:00:00Z: re-read records from here on"),
        "reload": Param(True, type="boolean", description="re-load in this task (warehouse consumers only)"),
        "idle_exit": Param(5, type="number", minimum=1, maximum=600,
                           description="seconds without records after which the in-task re-load stops"),
        "dry_run": Param(False, type="boolean",
                         description="only preview what would be re-read (per partition: from, to, records); "
                                     "move nothing"),
    },
)
def replay_topic() -> None:
    @task
    def replay_from_timestamp(params: dict | None = None) -> dict:
        """Rewind the group and re-process (or, dry run, preview); the summary (also in the task log)."""
        from mbyn.replay import replay

        params = params or {}
        summary = replay(get_settings(), params["topic"], params["group"], params["from_ts"],
                         reload=bool(params["reload"]), idle_exit=float(params["idle_exit"]),
                         dry_run=params.get("dry_run") is True)
        logging.getLogger("mbyn.replay").info("replay summary:\n%s", json.dumps(summary, indent=2))
        return summary

    replay_from_timestamp()


replay_topic()
