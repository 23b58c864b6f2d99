"""The customers snapshot: a real SQLite / PostgreSQL source database, watermarks, tombstones, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from mbyn.contracts.envelope import validate
from mbyn.errors import ConfigError
from mbyn.settings import Settings, get_settings, load_settings
from mbyn.sources import shop
from mbyn.sources.customers_db import check_identifier, mutate_customers, publish_customer_changes
from tests.helpers.kafka import read_all

pytestmark = pytest.mark.integration


def topic_records(settings: Settings, expect: int | None = None):
    return read_all(settings.bootstrap(), settings.topic_prefix + "customers", expect=expect, timeout=30)


def source_rows(settings: Settings, where: str = "1 = 1", **params: object) -> list[sa.Row]:
    """Read the source table directly (independently of the producer's SQL)."""
    engine = sa.create_engine(settings.source_db())
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT customer_id, deleted_at, updated_at FROM customers WHERE {where}")
            return list(conn.execute(query, params))
    finally:
        engine.dispose()


def newest_change(settings: Settings) -> object:
    engine = sa.create_engine(settings.source_db())
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT MAX(updated_at) FROM customers")).scalar_one()
    finally:
        engine.dispose()


def test_seed_is_published_once_in_batches(topics):
    first = publish_customer_changes(topics, batch_size=2000)
    assert first["seeded"] == shop.CUSTOMERS
    assert first["records"] == first["delivered"] == first["upserts"] == shop.CUSTOMERS
    assert first["commits"] == 3, "5000 rows in batches of 2000: one flush + watermark per batch"
    got = topic_records(topics, expect=shop.CUSTOMERS)
    assert len(got) == shop.CUSTOMERS
    assert {r.key.decode() for r in got} == {shop.customer_id(n) for n in range(1, shop.CUSTOMERS + 1)}
    for r in got[:300]:
        value = r.json()
        validate("customers", value)
        assert value["payload"]["customer_id"] == r.key.decode()
        assert value["payload"]["country"] == shop.home_country(r.key.decode())

    second = publish_customer_changes(topics)
    assert second["seeded"] == 0 and second["records"] == 0
    assert len(topic_records(topics)) == shop.CUSTOMERS


def test_mutations_publish_only_changed_rows_and_deletes_as_tombstones(topics):
    publish_customer_changes(topics)
    before = newest_change(topics)
    counts = mutate_customers(topics, 40, seed=11)
    assert sum(counts.values()) == 40 and counts["deleted"] > 0
    changed = {row.customer_id: row.deleted_at for row in source_rows(topics, "updated_at > :t", t=before)}

    summary = publish_customer_changes(topics, batch_size=7)
    assert summary["records"] == len(changed)
    assert summary["tombstones"] == sum(1 for d in changed.values() if d is not None) > 0
    got = topic_records(topics, expect=shop.CUSTOMERS + len(changed))
    assert len(got) == shop.CUSTOMERS + len(changed)
    last: dict[str, object] = {}
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        last[r.key.decode()] = r.value
    for customer, deleted_at in changed.items():
        if deleted_at is None:
            assert last[customer] is not None
        else:
            assert last[customer] is None, f"{customer} was soft-deleted: expected a tombstone"


def test_an_external_soft_delete_becomes_a_tombstone(topics):
    publish_customer_changes(topics)
    engine = sa.create_engine(topics.source_db())
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:  # another application writing the shop database
        conn.execute(sa.text("UPDATE customers SET deleted_at = :t, updated_at = :t WHERE customer_id = 'C000042'"),
                     {"t": now.strftime("%Y-%m-%d %H:%M:%S.%f")})
    engine.dispose()
    summary = publish_customer_changes(topics)
    assert summary["records"] == summary["tombstones"] == 1
    got = topic_records(topics, expect=shop.CUSTOMERS + 1)
    tombstones = [r for r in got if r.value is None]
    assert [r.key for r in tombstones] == [b"C000042"]


def test_watermark_survives_a_restart_without_duplicates(topics):
    def produce(*extra: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "customers", "--batch-size", "1500",
                                 *extra], capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert produce()["records"] == shop.CUSTOMERS
    state = json.loads((topics.state_dir / "customers-customers.json").read_text())
    assert state["watermark"]["id"] == shop.CUSTOMERS, "all seeded rows share a timestamp: the id breaks the tie"
    before = newest_change(topics)
    changed = produce("--mutate", "25", "--seed", "3")
    expected = {row.customer_id for row in source_rows(topics, "updated_at > :t", t=before)}
    assert changed["records"] == len(expected) and changed["mutated_updated"] + changed["mutated_inserted"] + \
        changed["mutated_deleted"] == 25
    assert produce()["records"] == 0
    got = topic_records(topics, expect=shop.CUSTOMERS + len(expected))
    assert len(got) == shop.CUSTOMERS + len(expected)
    ids = [r.json()["event_id"] for r in got if r.value is not None]
    assert len(ids) == len(set(ids)), "no record was published twice"


def test_postgres_source_by_url(topics, postgres_url, monkeypatch):
    monkeypatch.setenv("MBYN_SOURCE_DB_URL", postgres_url)
    get_settings.cache_clear()
    settings = get_settings()
    assert publish_customer_changes(settings, batch_size=2500)["records"] == shop.CUSTOMERS
    before = newest_change(settings)
    mutate_customers(settings, 15, seed=5)
    expected = {row.customer_id for row in source_rows(settings, "updated_at > :t", t=before)}
    assert publish_customer_changes(settings)["records"] == len(expected) > 0
    assert len(topic_records(settings, expect=shop.CUSTOMERS + len(expected))) == shop.CUSTOMERS + len(expected)


@pytest.mark.parametrize("name", ["customers; DROP TABLE x", "a-b", "1abc", "x" * 64, "c\"d"])
def test_table_names_from_configuration_are_strict_identifiers(name, monkeypatch):
    with pytest.raises(ConfigError, match="MBYN_CUSTOMERS_TABLE"):
        check_identifier(name)
    monkeypatch.setenv("MBYN_CUSTOMERS_TABLE", name)
    with pytest.raises(ConfigError, match="MBYN_CUSTOMERS_TABLE"):
        load_settings()
