"""Bad input from outside: malformed records written with kcat, broken landing files, unsafe DB names.

Records are written with **kcat** (librdkafka's CLI from the Debian package), an independent client, so
nothing of mbyn's producer validation stands between the bad bytes and the topic. On every raw topic the
same set goes out, interleaved with valid records: not JSON, truncated JSON, binary garbage, a JSON array,
wrong types, a missing field, an unknown field, an impossible date, an unknown schema version, a value
over ``MAX_VALUE_BYTES``, a null key, a null value, and one valid record sent twice. Then the real
``mbyn consume warehouse-loader`` and ``mbyn consume dead-letters`` run, and the tests check that each bad
record is a quarantine row with the expected reason and its original bytes, the valid ones are rows
(the duplicate once), and ``mbyn status --json`` balances.

The warehouse-loader run happens once per warehouse database for the module (``loaded`` fixture: SQLite,
then PostgreSQL); the tests read its results. ``tests/e2e/test_hostile_pipeline.py`` sends the same records
plus more hostile kinds to a pipeline running every consumer group.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import MAX_VALUE_BYTES, encode, make_envelope, validate
from mbyn.settings import Settings, load_settings
from mbyn.warehouse.rows import ROWS
from mbyn.workers import RAW_TOPICS
from tests.plugins.postgres import fresh_database

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat")  # a missing kcat fails the tests (make installs it), never skips them

TABLES = {topic: ROWS[topic].table for topic in RAW_TOPICS}
#: kcat -K / -D separators: control bytes that JSON text never contains unescaped.
KEY_SEP, RECORD_SEP = b"\x1f", b"\x1e"
NOW = "2026-11-25T10:00:00Z"
#: Per topic: a payload field set to a value of the wrong JSON type, and a required field left out.
WRONG_TYPE: dict[str, tuple[str, Any]] = {
    "clickstream": ("device", 7), "orders": ("amount", "three"), "payments": ("amount", "one euro"),
    "customers": ("segment", 5), "inventory": ("quantity", "many"), "fx-rates": ("rate_per_eur", "1.1"),
    "shipments": ("status", 3)}
MISSING: dict[str, str] = {"clickstream": "page", "orders": "items", "payments": "status", "customers": "email",
                           "inventory": "location", "fx-rates": "rate_date", "shipments": "carrier"}
#: Payload dates the loader parses: the pattern in the schema accepts them, the calendar does not.
PAYLOAD_DATES: dict[str, tuple[str, str]] = {"customers": ("updated_at", "2026-02-30T10:00:00Z"),
                                             "inventory": ("updated_at", "2026-11-25T25:61:00Z"),
                                             "fx-rates": ("rate_date", "2026-02-30")}
FX_CURRENCIES = ("USD", "GBP", "JPY")


@dataclass(frozen=True)
class Sent:
    """One record written with kcat. ``reason`` None: valid (must be loaded); else the quarantine reason."""

    topic: str
    label: str
    key: bytes | None
    value: bytes | None
    reason: str | None
    event_id: str | None = None


# Building the records ------------------------------------------------------------------------------------

def valid_envelope(topic: str, n: int, tag: str) -> tuple[str, dict[str, Any]]:
    """(key, envelope) of the ``n``-th valid record for ``topic`` (distinct business keys per ``n``)."""
    if topic == "clickstream":
        key = f"S-{tag}-{n}"
        payload: dict[str, Any] = {"session_id": key, "customer_id": "C000001", "page": f"/p/{n}",
                                   "country": "DE", "device": "mobile"}
        event_type = "page_view"
    elif topic == "orders":
        key = f"O-{tag}-{n}"
        payload = {"order_id": key, "customer_id": "C000001", "session_id": f"S-{tag}", "country": "DE",
                   "currency": "EUR", "amount": 3.0 * n,
                   "items": [{"sku": "SKU-00001", "category": "books", "quantity": n, "unit_price": 3.0}]}
        event_type = "order_placed"
    elif topic == "payments":
        key = f"O-{tag}-{n}"
        payload = {"payment_id": f"P-{tag}-{n}", "order_id": key, "amount": 1.5 * n, "currency": "EUR",
                   "status": "authorized", "method": "card"}
        event_type = "payment_authorized"
    elif topic == "customers":
        key = f"C9{n:05d}"
        payload = {"customer_id": key, "name": f"Name {n}", "email": f"c{n}@example.com", "country": "DE",
                   "segment": "consumer", "updated_at": NOW}
        event_type = "customer_upserted"
    elif topic == "inventory":
        key = f"SKU-{n:05d}"
        payload = {"sku": key, "category": "books", "quantity": 5 * n, "unit_price": 9.5, "location": "FRA-1",
                   "updated_at": NOW}
        event_type = "stock_level"
    elif topic == "fx-rates":
        key = FX_CURRENCIES[n - 1]
        payload = {"currency": key, "rate_date": "2026-11-24", "rate_per_eur": 1.0 + n / 10}
        event_type = "fx_rate"
    elif topic == "shipments":
        key = f"SH-{tag}-{n}"
        payload = {"shipment_id": key, "order_id": f"O-{tag}-{n}", "status": "created", "carrier": "DHL"}
        event_type = "shipment_created"
    else:
        raise AssertionError(topic)
    envelope = dict(make_envelope(event_type, payload, "kcat", event_time=NOW))
    validate(topic, envelope)
    return key, envelope


def garbage(rng: random.Random, size: int) -> bytes:
    """Random bytes that are not UTF-8 and never contain kcat's separators."""
    body = bytes(b for b in rng.randbytes(size * 2) if b not in (KEY_SEP[0], RECORD_SEP[0]))[:size]
    return b"\xff\xfe" + body


def records_for(topic: str, tag: str, rng: random.Random) -> list[Sent]:
    """The valid and bad records for one topic, in the order they are written."""
    compacted = load_catalog().get(topic).compacted
    out: list[Sent] = []

    def good(n: int, label: str = "valid") -> dict[str, Any]:
        key, env = valid_envelope(topic, n, tag)
        out.append(Sent(topic, label, key.encode(), encode(env), None, env["event_id"]))
        return env

    def bad(label: str, value: bytes | None, reason: str, key: bytes | None = b"") -> None:
        out.append(Sent(topic, label, f"bad-{label}".encode() if key == b"" else key, value, reason))

    first = good(1)
    bad("not_json", b"this is not JSON {", "not_json")
    bad("truncated_json", encode(first)[: len(encode(first)) // 2], "not_json")
    bad("binary_garbage", garbage(rng, 256), "not_json")
    second = good(2)
    bad("json_array", b"[1, 2, 3]", "schema_violation")
    field, wrong = WRONG_TYPE[topic]
    bad("wrong_type", encode({**second, "payload": {**second["payload"], field: wrong}}), "schema_violation")
    bad("missing_field", encode({**second, "payload": {k: v for k, v in second["payload"].items()
                                                       if k != MISSING[topic]}}), "schema_violation")
    bad("unknown_field", encode({**second, "payload": {**second["payload"], "note": "surprise"}}),
        "schema_violation")
    bad("impossible_event_time", encode({**second, "event_time": "2026-02-30T10:00:00Z"}), "schema_violation")
    if topic in PAYLOAD_DATES:
        name, text = PAYLOAD_DATES[topic]
        bad("impossible_payload_date", encode({**second, "payload": {**second["payload"], name: text}}),
            "schema_violation")
    bad("unknown_schema_version", encode({**second, "schema_version": 2}), "unknown_schema_version")
    # Valid JSON, valid envelope — but padded past the limit: the size alone is refused.
    bad("oversize", encode(second) + b" " * (MAX_VALUE_BYTES + 1), "oversize")
    if not compacted:  # compacted topics: the broker itself refuses a null key (test below); null = tombstone
        bad("null_key", encode(second), "null_key", key=None)
        bad("null_value", None, "null_value")
    duplicate = out[[s.label for s in out].index("valid", 1)]
    out.append(Sent(topic, "duplicate", duplicate.key, duplicate.value, None, duplicate.event_id))
    good(3)
    return out


def kcat_produce(bootstrap: str, physical: str, records: list[Sent]) -> subprocess.CompletedProcess[bytes]:
    """Write ``records`` in one kcat run: key and value split by 0x1f, records by 0x1e; empty = NULL (-Z)."""
    assert KCAT is not None, "kcat is not installed: `make system-deps` installs it (Debian package kcat)"
    data = b"".join((r.key or b"") + KEY_SEP + (r.value or b"") + RECORD_SEP for r in records)
    assert all(KEY_SEP not in (r.key or b"") and RECORD_SEP not in (r.value or b"") for r in records)
    return subprocess.run([KCAT, "-P", "-b", bootstrap, "-t", physical, "-K", r"\x1f", "-D", r"\x1e", "-Z",
                           "-X", "message.max.bytes=2000000"], input=data, capture_output=True, timeout=60,
                          check=False)


# One load for the module ------------------------------------------------------------------------------------

@dataclass
class Loaded:
    settings: Settings
    sent: list[Sent]
    loader: dict[str, Any]
    letters: dict[str, Any]
    status: subprocess.CompletedProcess[str]

    def query(self, sql: str, **params: Any) -> list[Any]:
        return query(self.settings, sql, **params)


def query(settings: Settings, sql: str, **params: Any) -> list[Any]:
    """Rows of ``sql`` in ``settings``' warehouse (a fresh engine, disposed afterwards)."""
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def mbyn(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mbyn.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loaded(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """Every raw topic fed through kcat, then the loader and the dead-letters sink run to idle — once with the
    warehouse on SQLite, once on PostgreSQL (which enforces the column types and lengths SQLite ignores)."""
    with ExitStack() as stack:
        var = tmp_path_factory.mktemp("bad-input") / "var"
        if request.param == "postgres":
            url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_server")))
        else:
            url = f"sqlite:///{var / 'warehouse.db'}"
        yield load_bad_input(kafka_bootstrap, var, url)


def load_bad_input(kafka_bootstrap: str, var: Path, warehouse_url: str) -> Loaded:
    from mbyn.kafka.admin import apply_topics

    prefix = f"b{uuid.uuid4().hex[:10]}-"
    env = {**os.environ, "MBYN_BOOTSTRAP_SERVERS": kafka_bootstrap, "MBYN_TOPIC_PREFIX": prefix,
           "MBYN_VAR_DIR": str(var), "MBYN_WAREHOUSE_URL": warehouse_url}
    settings = load_settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, var_dir=var,
                             warehouse_url=warehouse_url)
    apply_topics(settings)
    rng = random.Random(7)
    sent: list[Sent] = []
    for topic in RAW_TOPICS:
        records = records_for(topic, prefix, rng)
        result = kcat_produce(kafka_bootstrap, settings.topic_prefix + topic, records)
        assert result.returncode == 0, f"kcat on {topic}: {result.stderr.decode(errors='replace')[-2000:]}"
        sent += records
    loader = summary_of(mbyn(env, "consume", "warehouse-loader", "--idle-exit", "5"))
    letters = summary_of(mbyn(env, "consume", "dead-letters", "--idle-exit", "5"))
    status = mbyn(env, "status", "--json")
    return Loaded(settings, sent, loader, letters, status)


# Tests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", RAW_TOPICS)
def test_each_bad_record_is_quarantined_with_its_reason_and_bytes(loaded: Loaded, topic: str) -> None:
    physical = loaded.settings.topic_prefix + topic
    expected = Counter((s.key, s.value, s.reason) for s in loaded.sent if s.topic == topic and s.reason)
    rows = loaded.query('SELECT "key", value, reason, error_class, consumer_group FROM quarantine '
                        "WHERE topic = :t", t=physical)
    got = Counter((r.key, None if r.value is None else bytes(r.value), r.reason) for r in rows)
    labels = {(s.key, s.value): s.label for s in loaded.sent if s.topic == topic}
    missing = {labels[(k, v)]: reason for (k, v, reason) in expected - got}
    unexpected = [(labels.get((k, v), "?"), reason) for (k, v, reason) in got - expected]
    assert not missing and not unexpected, f"{topic}: not quarantined as expected {missing}; unexpected {unexpected}"
    assert {r.error_class for r in rows} == {"PoisonRecordError"}
    assert {r.consumer_group for r in rows} == {loaded.settings.topic_prefix + "warehouse-loader"}


@pytest.mark.parametrize("topic", RAW_TOPICS)
def test_valid_records_between_them_are_loaded_and_the_duplicate_once(loaded: Loaded, topic: str) -> None:
    valid = [s for s in loaded.sent if s.topic == topic and s.reason is None]
    assert [s.label for s in valid].count("duplicate") == 1
    rows = [r.event_id for r in loaded.query(f"SELECT event_id FROM {TABLES[topic]}")]
    assert sorted(rows) == sorted({str(s.event_id) for s in valid}), f"{topic}: one row per valid record, none extra"


def test_the_runs_account_for_every_record(loaded: Loaded) -> None:
    bad = Counter(s.reason for s in loaded.sent if s.reason)
    assert loaded.loader["dead_letter_reasons"] == dict(bad)
    assert loaded.loader["consumed"] == len(loaded.sent)
    assert loaded.loader["processed"] == len(loaded.sent) - sum(bad.values())
    assert loaded.letters["consumed"] == sum(bad.values()) == loaded.query("SELECT count(*) FROM quarantine")[0][0]


def test_status_says_balanced(loaded: Loaded) -> None:
    assert loaded.status.returncode == 0, f"not balanced:\n{loaded.status.stdout[-4000:]}\n{loaded.status.stderr}"
    doc = json.loads(loaded.status.stdout)
    assert doc["balanced"] is True and doc["problems"] == []
    rec = doc["reconciliation"]["topics"]
    for topic in RAW_TOPICS:
        sent = [s for s in loaded.sent if s.topic == topic]
        assert rec[topic]["records"] == len(sent), topic
        assert rec[topic]["quarantined"] == sum(1 for s in sent if s.reason), topic


@pytest.mark.parametrize("topic", [t for t in RAW_TOPICS if load_catalog().get(t).compacted])
def test_a_null_key_on_a_compacted_topic_is_refused_by_the_broker(topics: Settings, topic: str) -> None:
    from tests.helpers.kafka import read_all

    _, envelope = valid_envelope(topic, 1, "nk")
    result = kcat_produce(topics.bootstrap(), topics.topic_prefix + topic,
                          [Sent(topic, "null_key", None, encode(envelope), None)])
    assert result.returncode != 0
    assert b"Broker failed to validate record" in result.stderr
    assert read_all(topics.bootstrap(), topics.topic_prefix + topic, timeout=10) == []


# File drop: what tests/integration/test_inventory_drop.py does not already cover ---------------------------

INVENTORY_HEADER = "sku,category,quantity,unit_price,location,updated_at\n"


def _row(sku: str = "SKU-00001", **overrides: Any) -> dict[str, Any]:
    from mbyn.sources import shop

    row = {"sku": sku, "category": shop.category_of(sku), "quantity": 5, "unit_price": 9.5, "location": "FRA-1",
           "updated_at": NOW}
    return {**row, **overrides}


def _drop(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    past = time.time() - 60
    os.utime(path, (past, past), follow_symlinks=False)
    return path


def test_landing_files_that_cannot_be_trusted_are_refused_with_a_reason(topics: Settings, tmp_path: Path) -> None:
    from mbyn.sources.inventory_drop import inbox, publish_inventory_files
    from tests.helpers.kafka import read_all

    folder = inbox(topics)
    good_csv = (INVENTORY_HEADER + "SKU-00002,{category},3,1.5,FRA-1,{now}\n").format(
        category=_row("SKU-00002")["category"], now=NOW)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stock.csv").write_text(good_csv)
    folder.mkdir(parents=True)
    os.link(outside / "stock.csv", folder / "hardlink.csv")  # same inode as a file outside the folder
    (folder / "dirlink.csv").symlink_to(outside, target_is_directory=True)
    _drop(folder, "utf16.csv", good_csv.encode("utf-16"))
    _drop(folder, "sheet.xlsx", b"PK\x03\x04 not a csv")
    _drop(folder, "empty.csv", INVENTORY_HEADER.encode())
    _drop(folder, "header.csv", b"sku;category;quantity\nSKU-00001;books;1\n")
    refused = {"hardlink.csv": "hard links", "dirlink.csv": "symbolic link", "utf16.csv": "not UTF-8",
               "sheet.xlsx": "unsupported file type '.xlsx'", "empty.csv": "has no rows",
               "header.csv": "header must name the columns"}

    summary = publish_inventory_files(topics)
    assert summary["files_refused"] == len(refused) and summary["records"] == 0
    error = folder / "error"
    for name, reason in refused.items():
        assert (error / name).exists() or (error / name).is_symlink(), f"{name} not moved to error/"
        note = (error / f"{name}.reason.txt").read_text()
        assert reason in note and "nothing from it was published" in note, f"{name}: {note}"
    assert (outside / "stock.csv").read_text() == good_csv, "the file outside the landing folder is untouched"
    assert read_all(topics.bootstrap(), topics.topic_prefix + "inventory", timeout=10) == []


def test_malformed_json_lines_are_listed_by_line_and_nothing_is_published(topics: Settings) -> None:
    from mbyn.sources.inventory_drop import inbox, publish_inventory_files
    from tests.helpers.kafka import read_all

    lines = [
        json.dumps(_row("SKU-00001")),                                  # 1: good
        '{"sku": "SKU-00002", "category": ',                             # 2: truncated
        "[1, 2, 3]",                                                     # 3: not an object
        json.dumps(_row("SKU-00003", quantity="many")),                  # 4: wrong type
        json.dumps({k: v for k, v in _row("SKU-00004").items() if k != "location"}),  # 5: missing field
        json.dumps({**_row("SKU-00005"), "colour": "red"}),              # 6: unknown field
        json.dumps(_row("SKU-00006", unit_price="NaN")),                 # 7: not a finite number
        json.dumps(_row("SKU-00007", updated_at="2026-11-25T10:00:00")),  # 8: no time zone
        json.dumps(_row("SKU-00008", category="toys" if _row("SKU-00008")["category"] != "toys" else "books")),
        json.dumps(_row("SKU-00009", quantity=True)),                    # 10: a boolean is not a count
    ]
    _drop(inbox(topics), "mixed.jsonl", ("\n".join(lines) + "\n").encode())
    summary = publish_inventory_files(topics)
    assert summary["files_refused"] == 1 and summary["records"] == 0
    reason = (inbox(topics) / "error" / "mixed.jsonl.reason.txt").read_text()
    for line, words in [(2, "not JSON"), (3, "expected a JSON object"), (4, "quantity 'many'"),
                        (5, "missing location"), (6, "unknown field(s) colour"), (7, "unit_price 'NaN'"),
                        (8, "has no time zone"), (9, "does not match the catalog"), (10, "quantity True")]:
        assert f"line {line}: " in reason and words in reason, f"line {line} ({words}) not reported:\n{reason}"
    assert "line 1:" not in reason
    assert read_all(topics.bootstrap(), topics.topic_prefix + "inventory", timeout=10) == []


def test_a_csv_row_with_extra_fields_is_refused(topics: Settings) -> None:
    from mbyn.sources.inventory_drop import inbox, publish_inventory_files

    row = _row("SKU-00001")
    text = INVENTORY_HEADER + ",".join(str(v) for v in row.values()) + ",extra,fields\n"
    _drop(inbox(topics), "wide.csv", text.encode())
    assert publish_inventory_files(topics)["files_refused"] == 1
    assert "line 2: 8 fields, expected 6" in (inbox(topics) / "error" / "wide.csv.reason.txt").read_text()


# DB snapshot: names from configuration --------------------------------------------------------------------

def test_a_configured_table_of_another_shape_fails_clearly_and_publishes_nothing(
        topics: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid identifier naming an existing table with other columns: SourceError, no records, no state."""
    from mbyn.errors import SourceError
    from mbyn.settings import get_settings
    from mbyn.sources.customers_db import publish_customer_changes
    from tests.helpers.kafka import read_all

    monkeypatch.setenv("MBYN_CUSTOMERS_TABLE", "legacy_people")
    get_settings.cache_clear()
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(settings.source_db())
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE legacy_people (person_id INTEGER PRIMARY KEY, full_name TEXT)"))
            conn.execute(sa.text("INSERT INTO legacy_people VALUES (1, 'Ada')"))
    finally:
        engine.dispose()
    with pytest.raises(SourceError, match="legacy_people"):
        publish_customer_changes(settings)
    assert read_all(settings.bootstrap(), settings.topic_prefix + "customers", timeout=10) == []
    assert not list(settings.state_dir.glob("customers*")), "no watermark saved"
