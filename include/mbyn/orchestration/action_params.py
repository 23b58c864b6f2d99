"""The params of the action DAGs (``quarantine_resend``, ``topic_test_message``): their bounds and their checks.

Light on purpose: the DAG files import the bounds at parse time for their params' JSON Schema, and
``mbyn.orchestration.actions`` checks the same bounds again when a task runs (a param typed by a user is hostile
input). A value that is not allowed raises ``ActionError`` naming the param and what is allowed.
"""

from __future__ import annotations

from typing import Any

from mbyn.errors import ActionError

#: Most quarantine ids one ``quarantine_resend`` run takes.
MAX_RESEND_IDS = 500
#: Largest quarantine id (the column is a 32-bit integer on PostgreSQL).
MAX_QUARANTINE_ID = 2**31 - 1
#: Most test messages one ``topic_test_message`` run sends.
MAX_TEST_MESSAGES = 100
#: How many values an error message lists before "…".
SHOWN = 10


def shown(values: list[Any]) -> str:
    """The first SHOWN values, comma-separated, and how many there are in all when there are more."""
    text = ", ".join(str(v) for v in values[:SHOWN])
    return text + (f" … ({len(values)} in all)" if len(values) > SHOWN else "")


def _is_int(value: Any) -> bool:
    """A whole number as JSON Schema's ``integer`` means it (the params' schema): 2 and 2.0, never True or 2.5."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def parse_ids(value: Any) -> list[int]:
    """The ``ids`` param as sorted unique quarantine ids: one id or a list of 1..MAX_RESEND_IDS of them."""
    items = [value] if _is_int(value) else value
    if not isinstance(items, list) or not items:
        raise ActionError(f"ids: expected a list of quarantine ids (whole numbers 1..{MAX_QUARANTINE_ID}), "
                          f"got {repr(value)[:80]}; nothing was re-sent")
    bad = [v for v in items if not _is_int(v) or not 1 <= v <= MAX_QUARANTINE_ID]
    if bad:
        raise ActionError(f"ids: {shown([repr(v)[:40] for v in bad])}: not a quarantine id (a whole number "
                          f"1..{MAX_QUARANTINE_ID}); nothing was re-sent")
    ids = sorted({int(v) for v in items})
    if len(ids) > MAX_RESEND_IDS:
        raise ActionError(f"ids: {len(ids)} ids; one run re-sends at most {MAX_RESEND_IDS}; nothing was re-sent")
    return ids


def parse_count(value: Any) -> int:
    """The ``count`` param: a whole number 1..MAX_TEST_MESSAGES."""
    if not _is_int(value) or not 1 <= value <= MAX_TEST_MESSAGES:
        raise ActionError(f"count: {repr(value)[:40]} is not allowed: a whole number 1..{MAX_TEST_MESSAGES}; "
                          "nothing was sent")
    return int(value)
