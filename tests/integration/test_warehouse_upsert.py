"""The bulk upsert the loaders write with (``upsert_rows`` / ``upsert``), on SQLite and on a real PostgreSQL.

PostgreSQL goes through COPY into a staging table and one ``INSERT … SELECT … ON CONFLICT``; SQLite through
executemany. Both must keep the same semantics: last row per key wins inside a call, ``update=[]`` keeps the
first version, ``update=None`` overwrites, stored values read back as an ORM insert would store them, and a
failed batch leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
import sqlalchemy as sa

from mbyn.errors import WarehouseError
from mbyn.warehouse import init_schema, make_engine, sink_errors, upsert, upsert_rows
from mbyn.warehouse.schema import clicks, customers, fx_rates, orders, quarantine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)
CLICK_COLUMNS = ("event_id", "event_type", "event_time", "loaded_at", "session_id", "customer_id", "page", "sku",
                 "category", "country", "device")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'w.db'}"
    engine = make_engine(url)
    init_schema(engine)
    yield engine
    engine.dispose()


def click(event_id: str, page: str, sku: str | None = None) -> tuple[object, ...]:
    return (event_id, "page_view", T0, T0 + timedelta(seconds=1), "s1", "C000001", page, sku,
            "books" if sku else None, "DE", "mobile")


def test_rows_read_back_as_written_and_duplicates_collapse_to_the_last(engine):
    with engine.begin() as conn:
        sent = upsert_rows(conn, clicks, CLICK_COLUMNS, [click("e1", "/a"), click("e2", "/b", "SKU-00001"),
                                                         click("e1", "/a-again")], ["event_id"])
    assert sent == 2
    with engine.connect() as conn:
        rows = conn.execute(sa.select(clicks).order_by(clicks.c.event_id)).mappings().all()
    assert [r["page"] for r in rows] == ["/a-again", "/b"]
    assert rows[1]["sku"] == "SKU-00001" and rows[0]["sku"] is None
    event_time = rows[0]["event_time"]
    as_utc = event_time.replace(tzinfo=UTC) if event_time.tzinfo is None else event_time.astimezone(UTC)
    assert as_utc == T0, "timestamps keep their milliseconds and their UTC meaning"


def test_update_empty_keeps_the_first_version_and_none_overwrites(engine):
    with engine.begin() as conn:
        upsert_rows(conn, clicks, CLICK_COLUMNS, [click("e1", "/first")], ["event_id"], update=[])
    with engine.begin() as conn:
        upsert_rows(conn, clicks, CLICK_COLUMNS, [click("e1", "/second"), click("e3", "/new")], ["event_id"],
                    update=[])
    with engine.begin() as conn:
        row = {"currency": "USD", "rate_date": date(2026, 1, 2), "event_id": "f", "loaded_at": T0}
        upsert(conn, fx_rates, [{**row, "rate_per_eur": 1.1}], ["currency", "rate_date"])
        # Two upserts into one table in one transaction: the second must not see the first's staged rows.
        upsert(conn, fx_rates, [{**row, "rate_per_eur": 1.2}], ["currency", "rate_date"])
        upsert(conn, fx_rates, [{**row, "rate_date": date(2026, 1, 3), "rate_per_eur": 2.0}],
               ["currency", "rate_date"])
    with engine.connect() as conn:
        pages = dict(conn.execute(sa.select(clicks.c.event_id, clicks.c.page)).all())
        rates = conn.execute(sa.select(fx_rates.c.rate_date, fx_rates.c.rate_per_eur)
                             .order_by(fx_rates.c.rate_date)).all()
    assert pages == {"e1": "/first", "e3": "/new"}
    assert rates == [(date(2026, 1, 2), 1.2), (date(2026, 1, 3), 2.0)]


def test_dict_rows_get_python_side_defaults_and_keyword_columns_work(engine):
    with engine.begin() as conn:
        upsert(conn, customers, [{"customer_id": "C1", "name": "Ada", "loaded_at": T0}], ["customer_id"])
        upsert(conn, quarantine, [{"topic": "t", "partition": 0, "offset": 7, "key": b"\x00k", "reason": "not_json",
                                   "consumer_group": "g", "quarantined_at": T0}],
               ["consumer_group", "topic", "partition", "offset"], update=[])
    with engine.connect() as conn:
        assert conn.execute(sa.select(customers.c.deleted)).scalar_one() is False
        assert conn.execute(sa.select(quarantine.c.offset, quarantine.c.key)).one() == (7, b"\x00k")


def test_a_failing_batch_raises_a_warehouse_error_and_leaves_nothing(engine):
    bad = (None, "page_view", T0, T0, "s1", "C000001", "/x", None, None, "DE", "mobile")  # event_id is the key
    with pytest.raises(WarehouseError), sink_errors("test"), engine.begin() as conn:
        upsert_rows(conn, clicks, CLICK_COLUMNS, [click("e9", "/ok")], ["event_id"])
        upsert_rows(conn, clicks, CLICK_COLUMNS, [bad], ["event_id"])
    with engine.begin() as conn:  # the connection is usable again and the first upsert was rolled back
        assert conn.execute(sa.select(sa.func.count()).select_from(clicks)).scalar_one() == 0
        upsert_rows(conn, clicks, CLICK_COLUMNS, [click("e10", "/after")], ["event_id"])
    with engine.connect() as conn:
        assert conn.execute(sa.select(clicks.c.event_id)).scalars().all() == ["e10"]


def test_unknown_columns_are_refused_with_the_table_named(engine):
    with pytest.raises(WarehouseError, match="clicks: unknown column"), engine.begin() as conn:
        upsert_rows(conn, clicks, ("event_id", "nope"), [("e1", 1)], ["event_id"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_init_schema_brings_an_older_warehouse_up_to_date(request: pytest.FixtureRequest, tmp_path,
                                                          backend: str) -> None:
    """A warehouse made before the quarantine had ``error_traceback`` and the window sums were widened."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE quarantine (id INTEGER PRIMARY KEY, topic VARCHAR(255), "
                                 "reason VARCHAR(64) NOT NULL, quarantined_at TIMESTAMP)")
            conn.exec_driver_sql("CREATE TABLE sales_by_minute (window_start TIMESTAMP, country VARCHAR(2), "
                                 "category VARCHAR(32), revenue_eur NUMERIC(14, 4) NOT NULL, orders INTEGER NOT NULL, "
                                 "avg_basket_eur NUMERIC(14, 4) NOT NULL, late_records INTEGER NOT NULL, "
                                 "updated_at TIMESTAMP NOT NULL, PRIMARY KEY (window_start, country, category))")
        init_schema(engine)
        init_schema(engine)  # idempotent
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("quarantine")}
        assert "error_traceback" in columns
        with engine.begin() as conn:  # a window sum beyond NUMERIC(14, 4) is stored
            conn.execute(sa.text("INSERT INTO sales_by_minute VALUES (:t, 'DE', 'books', :big, 1, :big, 0, :t)"),
                         {"t": T0, "big": 5e13})
            stored = conn.execute(sa.text("SELECT revenue_eur FROM sales_by_minute")).scalar_one()
        assert float(stored) == 5e13
    finally:
        engine.dispose()


@pytest.mark.parametrize("extra_float_digits", [1, 0, -15])
def test_money_is_stored_as_the_text_copy_stored_it_whatever_the_session_float_output(
        postgres_url: str, extra_float_digits: int) -> None:
    """Binary COPY stages money as float8 and converts it through float8's text output, which a database or role
    setting ``extra_float_digits <= 0`` cuts to 15 significant digits: 1.0000499999999999 (Python's shortest digits,
    which the text COPY sent) would become 1.00005000000000 and round to 1.0001 instead of 1.0000."""
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {conn.engine.url.database} SET extra_float_digits = "
                                 f"{extra_float_digits}")
        engine.dispose()  # new sessions take the setting
        init_schema(engine)
        columns = ("order_id", "event_id", "customer_id", "country", "currency", "amount", "item_count", "event_time",
                   "loaded_at")
        amounts = {"o1": 1.0000499999999999, "o2": 0.30004999999999998, "o3": 1234567.0000499999}
        with engine.begin() as conn:
            upsert_rows(conn, orders, columns, [(k, f"e-{k}", "C1", "DE", "EUR", a, 1, T0, T0)
                                                for k, a in amounts.items()], ["order_id"])
        with engine.connect() as conn:
            stored: dict[str, str] = dict(conn.execute(sa.text("SELECT order_id, amount::text FROM orders")).all())
        assert stored == {k: str(Decimal(repr(a)).quantize(Decimal("0.0001"), ROUND_HALF_UP))
                          for k, a in amounts.items()}
    finally:
        engine.dispose()
