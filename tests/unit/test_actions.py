"""The action DAGs' params and templates without a broker: hostile params are refused with the param named,
every test-message template passes its topic's contract with a fresh id per send, and a topic without a template
says why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.catalog import load_catalog
from mbyn.contracts.codec import decode_record
from mbyn.errors import ActionError
from mbyn.kafka.producer import encode_valid
from mbyn.orchestration import actions
from mbyn.orchestration.action_params import (
    MAX_QUARANTINE_ID,
    MAX_RESEND_IDS,
    MAX_TEST_MESSAGES,
    parse_count,
    parse_ids,
)
from mbyn.orchestration.message_templates import SOURCE, TEMPLATES, WRITER, refusal
from mbyn.settings import get_settings
from mbyn.warehouse import init_schema, warehouse_engine
from mbyn.warehouse.schema import quarantine


@pytest.mark.parametrize(("value", "expected"), [(7, [7]), ([3, 1, 3], [1, 3]),
                                                 ([MAX_QUARANTINE_ID], [MAX_QUARANTINE_ID])])
def test_ids_one_or_many(value: Any, expected: list[int]) -> None:
    assert parse_ids(value) == expected


@pytest.mark.parametrize("value", [
    None, [], "1", "1; DROP TABLE quarantine", ["1; DROP TABLE quarantine"], [1, "2"], [True], [0], [-5], [1.5],
    [MAX_QUARANTINE_ID + 1], [10**30], {"id": 1}, list(range(1, MAX_RESEND_IDS + 2)),
])
def test_hostile_ids_are_refused_naming_the_param(value: Any) -> None:
    with pytest.raises(ActionError, match=r"^ids: .*nothing was re-sent$"):
        parse_ids(value)


@pytest.mark.parametrize("value", [0, -1, MAX_TEST_MESSAGES + 1, 10**9, "3", 2.5, float("nan"), True, None, [1]])
def test_hostile_counts_are_refused_naming_the_param(value: Any) -> None:
    with pytest.raises(ActionError, match=rf"^count: .*1\.\.{MAX_TEST_MESSAGES}; nothing was sent$"):
        parse_count(value)


def test_whole_numbers_written_as_floats_are_whole_numbers_as_in_the_params_json_schema() -> None:
    """Airflow's param schema (``type: integer``) lets 2.0 through; the task must not then call it "not whole"."""
    assert parse_count(2.0) == 2 and isinstance(parse_count(2.0), int)
    assert parse_ids([12.0, 3, 12]) == [3, 12] and all(isinstance(i, int) for i in parse_ids([12.0]))


@pytest.mark.parametrize("topic", sorted(TEMPLATES))
def test_every_template_passes_its_topics_contract_with_fresh_ids(topic: str) -> None:
    spec = load_catalog().get(topic)
    assert WRITER in spec.writers, f"{topic}: the Airflow tasks may not write it (catalog writers)"
    assert spec.key is not None
    first, second = TEMPLATES[topic].envelope(), TEMPLATES[topic].envelope()
    for env in (first, second):
        data = encode_valid(topic, env)  # raises ContractError if the template no longer fits the catalog
        assert decode_record(topic, env["payload"][spec.key].encode(), data) == env
        assert env["source"] == SOURCE and "{uid}" not in data.decode() and "{now}" not in data.decode()
    assert first["event_id"] != second["event_id"]
    assert first["payload"][spec.key] != second["payload"][spec.key], "a fresh business key per send"


def test_a_topic_without_a_template_says_why() -> None:
    catalog = load_catalog()
    assert "only payments may write it" in refusal(catalog, "payments")
    assert "replace the real rate" in refusal(catalog, "fx-rates")
    assert refusal(catalog, "orders") == ""
    untemplated = [t for t in catalog.topics if t not in TEMPLATES]
    assert untemplated and all(refusal(catalog, t) for t in untemplated)


def test_a_resend_the_airflow_principal_may_not_write_is_refused_before_anything_is_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secured mode: the tasks write as the ``airflow`` principal, which the ACLs let write only the topics that
    name it among their catalog writers. A quarantined payment (writer: payments-service) re-sent beside an order
    would leave the order sent but not marked replayed when the broker refuses the payment — sent again by the
    next try. So such ids are refused up front, naming the topic, and nothing is sent."""
    monkeypatch.setenv("MBYN_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    monkeypatch.setenv("MBYN_TOPIC_PREFIX", "")
    monkeypatch.setenv("MBYN_SECURITY", "scram")
    monkeypatch.setenv("MBYN_KAFKA_USERNAME", WRITER)
    monkeypatch.setenv("MBYN_KAFKA_PASSWORD", "not-a-secret")  # pragma: allowlist secret - never used
    get_settings.cache_clear()
    try:
        settings = get_settings()
        catalog = load_catalog()
        assert WRITER in catalog.get("orders").writers and WRITER not in catalog.get("payments").writers
        engine = warehouse_engine(settings)
        try:
            init_schema(engine)
            with engine.begin() as conn:
                ids = [conn.execute(sa.insert(quarantine).values(
                    topic=catalog.get(topic).physical, partition=0, offset=0, key=b"k", value=b"{}", reason="x",
                    quarantined_at=datetime.now(UTC))).inserted_primary_key[0] for topic in ("orders", "payments")]
        finally:
            engine.dispose()
        sent: list[Any] = []
        monkeypatch.setattr(actions, "replay", lambda *a, **kw: sent.append((a, kw)) or 0)
        with pytest.raises(ActionError, match=r"^ids: records from payments, which .*'airflow' may not write.*"
                                              r"nothing was re-sent$"):
            actions.resend_quarantined(settings, ids)
        assert sent == [], "nothing may be sent"
        monkeypatch.setenv("MBYN_SECURITY", "open")  # the open mode has no ACLs: both go
        get_settings.cache_clear()
        assert actions.resend_quarantined(get_settings(), ids)["ids"] == ids and len(sent) == 1
    finally:
        get_settings.cache_clear()
