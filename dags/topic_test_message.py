"""
### Send test messages to a topic (manual; the pipeline view's "Send test message")

Sends **count** test messages to catalog topic **topic**, built from the topic's template with a fresh
`event_id`, event time and business key per message, each checked against the topic's contract before the
first is sent. Test records are marked (country `ZZ`, ids `test-…`, source `test-message`, header
`mbyn.test_message`) and flow through the pipeline like real ones — a test order is paid, converted, counted
under country ZZ and loaded.

Topics with a template: clickstream, orders, customers, inventory. Any other topic fails the run with the
reason (only its own service may write it, or a test record would change real data) and nothing is sent.

The summary (`topic`, `sent`, `sent_at`, `event_ids`, `keys`) is returned as XCom (`return_value`).
Code: `mbyn.orchestration.actions.send_test_messages`, templates in `mbyn.orchestration.message_templates`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from mbyn.catalog import load_catalog
from mbyn.orchestration.action_params import MAX_TEST_MESSAGES
from mbyn.settings import get_settings

DEFAULT_ARGS = {"owner": "mbyn", "retries": 0}


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["mbyn", "producer", "operations", "manual"],
    doc_md=__doc__,
    params={
        "topic": Param("orders", type="string", enum=sorted(load_catalog().topics),
                       description="catalog topic to send to"),
        "count": Param(1, type="integer", minimum=1, maximum=MAX_TEST_MESSAGES,
                       description=f"test messages to send (1 to {MAX_TEST_MESSAGES})"),
    },
)
def topic_test_message() -> None:
    @task
    def send_test_messages(params: dict | None = None) -> dict:
        """Build, check and send the test messages; the summary."""
        from mbyn.orchestration.actions import send_test_messages

        params = params or {}
        return send_test_messages(get_settings(), params.get("topic"), params.get("count"))

    send_test_messages()


topic_test_message()
