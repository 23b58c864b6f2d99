"""
### Re-send quarantined records (manual; the pipeline view's "Re-send")

Sends the quarantined records **ids** (the `id` column of the warehouse table `quarantine`, as the pipeline
view and `mbyn sql "SELECT id, topic, reason FROM quarantine"` show them) back to their original topic, with
their original key, value bytes and headers plus `mbyn.replay_of` = the id — after the cause was fixed, so the
consumers process them again. The records are marked replayed once the broker acknowledged them.

* All or nothing: an id that does not exist, has no original topic or was re-sent already fails the run with
  the ids named, and nothing is sent.
* One run at a time: a second run (a double click, another operator) waits for the first, then fails naming
  the ids re-sent already — a record is never sent twice by two runs at once.
* A record several consumer groups quarantined is sent once (every group reads it again).
* A record that fails again is dead-lettered again and quarantined under a new id.

The summary (`ids`, `resent`, `topics`) is returned as XCom (`return_value`).
Code: `mbyn.orchestration.actions.resend_quarantined`. By hand: `mbyn dlq replay [--topic T] [--since TS]`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from mbyn.orchestration.action_params import MAX_QUARANTINE_ID, MAX_RESEND_IDS
from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 0}


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs with the same ids would both pass the "not re-sent yet" check: sent twice
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "dead-letters", "operations", "manual"],
    doc_md=__doc__,
    params={
        "ids": Param(type="array", minItems=1, maxItems=MAX_RESEND_IDS,
                     items={"type": "integer", "minimum": 1, "maximum": MAX_QUARANTINE_ID},
                     description=f"quarantine ids to re-send (1 to {MAX_RESEND_IDS}), e.g. [12, 13]"),
    },
)
def quarantine_resend() -> None:
    @task
    def resend_quarantined(params: dict | None = None) -> dict:
        """Check every id, re-send the records, mark them replayed; the summary."""
        from mbyn.orchestration.actions import resend_quarantined

        return resend_quarantined(get_settings(), (params or {}).get("ids"))

    resend_quarantined()


quarantine_resend()
