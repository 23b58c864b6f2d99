"""Settings, catalog, envelope and generator — no broker needed."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest

from mbyn.catalog import load_catalog, parse_catalog
from mbyn.contracts.codec import decode_record
from mbyn.contracts.envelope import MAX_VALUE_BYTES, encode, make_envelope, validate
from mbyn.errors import CatalogError, ConfigError, ContractError, PoisonRecordError
from mbyn.local.kafka import Node, server_properties
from mbyn.settings import load_settings
from mbyn.sources.generator import shop_events

REQUIRED_TOPICS = {"clickstream", "orders", "payments", "customers", "inventory", "fx-rates", "shipments",
                   "orders-enriched", "alerts", "dead-letters"}


def test_wrong_settings_name_the_variable_and_the_rule(monkeypatch):
    monkeypatch.setenv("MBYN_KAFKA_NODES", "2")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MBYN_KAFKA_NODES" in str(err.value) and "1" in str(err.value) and "3" in str(err.value)


def test_bad_bootstrap_servers_are_refused():
    with pytest.raises(ConfigError, match="MBYN_BOOTSTRAP_SERVERS"):
        load_settings(bootstrap_servers="localhost")


def test_settings_are_immutable(tmp_path):
    settings = load_settings(var_dir=tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        settings.kafka_port = 1  # type: ignore[misc]
    assert settings.warehouse() == f"sqlite:///{tmp_path / 'warehouse.db'}"


def test_catalog_has_every_pipeline_topic_with_schemas():
    catalog = load_catalog()
    assert set(catalog.topics) >= REQUIRED_TOPICS
    for name, topic in catalog.topics.items():
        if name != "dead-letters":
            assert catalog.value_schema(name) is not None, name
            assert topic.key, name
    assert catalog.get("customers").compacted and catalog.get("fx-rates").compacted
    assert not catalog.get("orders").compacted


def test_catalog_errors_say_what_is_wrong():
    with pytest.raises(CatalogError, match="partitions"):
        parse_catalog({"envelope": {"schema_version": 1, "schema": {}}, "topics": {"x": {"partitions": 0}}})
    with pytest.raises(CatalogError, match="unknown topic 'nope'"):
        load_catalog().get("nope")


def test_envelope_round_trip_and_validation():
    env = make_envelope("fx_rate", {"currency": "USD", "rate_date": "2026-11-25", "rate_per_eur": 1.05}, "test")
    validate("fx-rates", env)
    assert decode_record("fx-rates", b"USD", encode(env)) == env
    bad = dict(env, payload={"currency": "XXX", "rate_date": "2026-11-25", "rate_per_eur": 1.05})
    with pytest.raises(ContractError, match="payload/currency"):
        validate("fx-rates", bad)
    with pytest.raises(ContractError, match="event_type"):
        validate("fx-rates", dict(env, event_type="order_placed"))


@pytest.mark.parametrize(("data", "reason"), [(None, "null_value"), (b"\xff\xfe", "not_json"),
                                             (b"{not json", "not_json"), (b"x" * (MAX_VALUE_BYTES + 1), "oversize")])
def test_decode_refuses_poison(data, reason):
    with pytest.raises(PoisonRecordError) as info:
        decode_record("orders", b"o-1", data)
    assert info.value.reason == reason


def test_generator_is_reproducible_and_valid():
    first = list(itertools.islice(shop_events(seed=42), 3000))
    second = list(itertools.islice(shop_events(seed=42), 3000))
    assert [(r.topic, r.key, r.value["event_id"]) for r in first] == \
        [(r.topic, r.key, r.value["event_id"]) for r in second]
    topics = {r.topic for r in first}
    assert topics == {"clickstream", "orders"}
    for record in first:
        validate(record.topic, record.value)
    orders = [r.value["payload"] for r in first if r.topic == "orders"]
    assert len({o["currency"] for o in orders}) >= 3, "orders should come in several currencies"
    for order in orders:
        total = sum(i["unit_price"] * i["quantity"] for i in order["items"])
        assert order["amount"] == pytest.approx(total, abs=0.01)


def test_generator_invalid_ratio_emits_poison():
    records = list(itertools.islice(shop_events(seed=1, invalid_ratio=0.2), 2000))
    poison = [r for r in records if r.raw is not None]
    assert 250 < len(poison) < 550
    for record in poison:
        with pytest.raises(ContractError):
            decode_record(record.topic, record.key.encode() if record.key else None, record.raw)


def test_generator_memory_stays_flat():
    """Not a benchmark: a coarse guard that the generator keeps no per-record state."""
    events = shop_events(seed=3)
    for _ in itertools.islice(events, 5000):
        pass
    tracemalloc.start()
    for _ in itertools.islice(events, 20000):
        pass
    before, _ = tracemalloc.get_traced_memory()
    for _ in itertools.islice(events, 40000):
        pass
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 2_000_000


def test_three_node_properties_form_one_quorum(tmp_path):
    nodes = [Node(i, 9092 + i, 19092 + i, tmp_path / f"n{i}") for i in (1, 2, 3)]
    props = dict(line.split("=", 1) for line in server_properties(nodes[0], nodes).splitlines())
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9093"
