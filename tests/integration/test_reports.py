"""The daily sales report against a warehouse loaded from the real broker (SQLite file and PostgreSQL).

One shop day is produced to Kafka with event times on a fixed past date (so the test does not depend on
the wall clock or on midnight), loaded by the warehouse-loader and dead-letters consumers, and the report
is built. Every CSV number is checked against SQL (or plain Python over SQL rows) computed here, the PNGs
are decoded, and an empty day must give a "No data" page.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mbyn.contracts.envelope import make_envelope
from mbyn.settings import Settings
from mbyn.sources import shop
from mbyn.sources.generator import shop_events
from tests.helpers.kafka import end_offsets
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)
CSVS = ("revenue_by_hour", "revenue_by_country", "revenue_by_category", "top_products", "funnel", "fraud_alerts",
        "consumer_lag", "dead_letters")
CHARTS = ("revenue_by_hour", "revenue_by_country", "revenue_by_category", "funnel", "consumer_lag")


warehouse = warehouse_fixture(session_timeout_s=6)


def query(settings: Settings, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(settings.warehouse())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def _at(day: date, fraction: float) -> str:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=86_399 * fraction)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send_shop_day(settings: Settings, day: date = DAY, events: int = 600, seed: int = 5) -> dict[str, int]:
    """Generated clicks and orders spread over ``day``, payments, shipments, alerts, FX rates and 2 poison records."""
    from mbyn.kafka.producer import TopicProducer

    producer = TopicProducer("test-report", settings)
    generated = list(islice(shop_events(seed=seed), events))
    orders = []
    for i, e in enumerate(generated):
        value = {**e.value, "event_time": _at(day, i / len(generated))}
        assert producer.send(e.topic, value, e.key)
        if e.topic == "orders":
            orders.append(value)
    yesterday = (day - timedelta(days=1)).isoformat()
    for currency, rate in shop.PRICE_FX.items():
        if currency != "EUR":  # ECB rates differ a little from the shop's reference prices
            producer.send("fx-rates", dict(make_envelope("fx_rate", {"currency": currency, "rate_date": yesterday,
                                                                       "rate_per_eur": rate * 1.01}, "test")), currency)
    for i, order in enumerate(orders):
        p = order["payload"]
        status = "declined" if i % 5 == 0 else "authorized"
        producer.send("payments", dict(make_envelope(f"payment_{status}", {
            "payment_id": f"P-{i}", "order_id": p["order_id"], "amount": p["amount"], "currency": p["currency"],
            "status": status, "method": "card"}, "test", event_time=_at(day, 0.5 + i / (3 * len(orders))))),
            p["order_id"])
        if i % 3 == 0:
            producer.send("shipments", dict(make_envelope("shipment_delivered", {
                "shipment_id": f"S-{i}", "order_id": p["order_id"], "status": "delivered", "carrier": "DHL"}, "test",
                event_time=_at(day, 0.9))), f"S-{i}")
    for i, (kind, severity) in enumerate((("order_velocity", "high"), ("amount_mismatch", "medium"),
                                          ("order_velocity", "high"))):
        producer.send("alerts", dict(make_envelope("fraud_alert", {
            "alert_id": f"A-{i}", "kind": kind, "severity": severity, "customer_id": "C000001",
            "details": "test"}, "test", event_time=_at(day, 0.7))), f"A-{i}")
    producer.send_raw(settings.topic_prefix + "orders", b"not json", b"O-broken")
    producer.send_raw(settings.topic_prefix + "payments", b"{\"also\": \"not an envelope\"}", b"P-broken")
    producer.flush_or_raise()
    producer.close()
    return {"orders": len(orders)}


def run_until_caught_up(settings: Settings, factory: Any, attempts: int = 4) -> dict[str, int]:
    """Run in-process copies of a warehouse consumer until its stored offsets reach the end offsets.

    One idle-exit run can stop early on a busy machine (a partition's first fetch arriving later than the
    idle window); the stored offsets, not the run, say when everything is loaded. Returns summed counters.
    """
    from mbyn.consumers.runtime import run_consumer

    totals: Counter[str] = Counter()
    for _ in range(attempts):
        consumer = factory(settings)
        summary = run_consumer(consumer, settings, idle_exit=3)
        totals.update({k: summary[k] for k in ("consumed", "processed", "dead_lettered")})
        stored = {(t, int(p)): int(o) for t, p, o in query(
            settings, "SELECT topic, partition, next_offset FROM kafka_offsets WHERE consumer_group = :g",
            g=settings.topic_prefix + consumer.name)}
        if stored == end_offsets(settings, consumer.topics):
            return dict(totals)
    raise AssertionError(f"{factory.__name__} did not catch up after {attempts} runs")


def load_warehouse(settings: Settings) -> None:
    """Run the warehouse-loader and the dead-letters sink until caught up (in-process copies of the real consumers)."""
    from mbyn.consumers.dead_letters import DeadLetterSink
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    loaded = run_until_caught_up(settings, WarehouseLoader)
    assert loaded["processed"] > 0 and loaded["dead_lettered"] == 2, loaded
    quarantined = run_until_caught_up(settings, DeadLetterSink)
    assert quarantined["processed"] == 2, quarantined


def insert_lag_samples(settings: Settings, day: date) -> list[tuple[str, str, int]]:
    """Two groups, three samples each over two partitions; returns (sampled_at ISO, group, summed lag)."""
    from mbyn.warehouse import init_schema, warehouse_engine
    from mbyn.warehouse.schema import lag_samples

    rows, expected = [], []
    for n in range(3):
        at = datetime(day.year, day.month, day.day, 8 + n, tzinfo=UTC)
        for group, base in (("g-loader", 10), ("g-enricher", 3)):
            for partition in (0, 1):
                lag = base * (n + 1) + partition
                rows.append({"sampled_at": at, "consumer_group": group, "topic": "orders", "partition": partition,
                             "end_offset": 1000, "committed_offset": 1000 - lag, "lag": lag})
            expected.append((at.isoformat(), group, 2 * base * (n + 1) + 1))
    engine = warehouse_engine(settings)
    try:
        init_schema(engine)
        with engine.begin() as conn:
            conn.execute(lag_samples.insert(), rows)
    finally:
        engine.dispose()
    return expected


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 1000, f"{path} is missing or tiny"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 100


# Independent expectations (SQL over the warehouse, grouped here) ----------------------------------------

def _day_filter(settings: Settings, column: str = "event_time") -> tuple[str, dict[str, Any]]:
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    if settings.warehouse().startswith("sqlite"):  # SQLAlchemy stores UTC wall time as text on SQLite
        return (f"{column} >= :start AND {column} < :end",
                {"start": start.strftime("%Y-%m-%d %H:%M:%S"), "end": (start + timedelta(days=1))
                 .strftime("%Y-%m-%d %H:%M:%S")})
    return f"{column} >= :start AND {column} < :end", {"start": start, "end": start + timedelta(days=1)}


def expected_orders(settings: Settings) -> list[tuple[str, str, float, Any]]:
    """(order_id, country, amount in EUR, event_time) with the one FX rate loaded per currency (EUR: 1)."""
    where, params = _day_filter(settings, "o.event_time")
    return [(o, c, float(eur), t) for o, c, eur, t in query(settings, f"""
        SELECT o.order_id, o.country, o.amount / COALESCE(f.rate_per_eur, 1.0), o.event_time
        FROM orders o LEFT JOIN fx_rates f ON f.currency = o.currency WHERE {where}""", **params)]


def expected_items(settings: Settings) -> list[tuple[str, str, int, float, str]]:
    where, params = _day_filter(settings, "o.event_time")
    return [(sku, cat, int(q), float(eur), oid) for sku, cat, q, eur, oid in query(settings, f"""
        SELECT i.sku, i.category, i.quantity, i.quantity * i.unit_price / COALESCE(f.rate_per_eur, 1.0), i.order_id
        FROM order_items i JOIN orders o ON o.order_id = i.order_id
        LEFT JOIN fx_rates f ON f.currency = o.currency WHERE {where}""", **params)]


def count(settings: Settings, table: str, condition: str) -> int:
    where, params = _day_filter(settings)
    return int(query(settings, f"SELECT COUNT(*) FROM {table} WHERE {condition} AND {where}", **params)[0][0])


def test_report_numbers_match_the_warehouse(warehouse: Settings) -> None:
    from mbyn.reports import build_sales_report

    sent = send_shop_day(warehouse)
    load_warehouse(warehouse)
    lag_expected = insert_lag_samples(warehouse, DAY)

    index = build_sales_report(warehouse, DAY)

    folder = warehouse.reports_dir / "sales" / DAY.isoformat()
    assert index == folder / "index.html" and index.is_file()
    for name in CSVS:
        assert (folder / f"{name}.csv").is_file(), f"{name}.csv missing"
    for name in CHARTS:
        assert_png(folder / f"{name}.png")
    page = index.read_text()
    assert f"Sales report {DAY.isoformat()}" in page and "No data" not in page
    for name in CHARTS:
        assert f"src='{name}.png'" in page
    assert "http://" not in page and "https://" not in page, "the page must not fetch anything"

    orders = expected_orders(warehouse)
    assert len(orders) == sent["orders"] > 10

    by_country: dict[str, list[float]] = defaultdict(list)
    for _, country, eur, _ in orders:
        by_country[country].append(eur)
    rows = country_rows = read_csv(folder / "revenue_by_country.csv")
    assert {r["country"]: int(r["orders"]) for r in rows} == {c: len(v) for c, v in by_country.items()}
    for r in rows:
        assert float(r["revenue_eur"]) == pytest.approx(sum(by_country[r["country"]]), abs=0.006)
    assert [float(r["revenue_eur"]) for r in rows] == sorted((float(r["revenue_eur"]) for r in rows), reverse=True)

    hours = read_csv(folder / "revenue_by_hour.csv")
    assert [int(r["hour"]) for r in hours] == list(range(24))
    per_hour = Counter(pd_hour(t) for *_, t in orders)
    assert {int(r["hour"]): int(r["orders"]) for r in hours} == {h: per_hour.get(h, 0) for h in range(24)}
    assert sum(float(r["revenue_eur"]) for r in hours) == pytest.approx(sum(e for _, _, e, _ in orders), abs=0.15)

    items = expected_items(warehouse)
    by_category: dict[str, float] = defaultdict(float)
    units: dict[str, int] = defaultdict(int)
    by_sku: dict[str, float] = defaultdict(float)
    for sku, category, quantity, eur, _ in items:
        by_category[category] += eur
        units[category] += quantity
        by_sku[sku] += eur
    rows = read_csv(folder / "revenue_by_category.csv")
    assert {r["category"]: int(r["units"]) for r in rows} == dict(units)
    for r in rows:
        assert float(r["revenue_eur"]) == pytest.approx(by_category[r["category"]], abs=0.006)
    top = read_csv(folder / "top_products.csv")
    best = sorted(by_sku.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [r["sku"] for r in top] == [sku for sku, _ in best]
    assert [float(r["revenue_eur"]) for r in top] == pytest.approx([v for _, v in best], abs=0.006)

    where, params = _day_filter(warehouse)
    sessions = query(warehouse, f"SELECT COUNT(DISTINCT session_id) FROM clicks WHERE {where}", **params)[0][0]
    funnel = {r["stage"]: int(r["events"]) for r in read_csv(folder / "funnel.csv")}
    assert funnel == {
        "sessions (clicked)": sessions,
        "orders placed": len(orders),
        "payments authorized": count(warehouse, "payments", "status = 'authorized'"),
        "shipments delivered": count(warehouse, "shipments", "status = 'delivered'"),
    }
    assert funnel["payments authorized"] > 0 and funnel["shipments delivered"] > 0

    alerts = {(r["kind"], r["severity"]): int(r["alerts"]) for r in read_csv(folder / "fraud_alerts.csv")}
    assert alerts == {(k, s): int(n) for k, s, n in query(
        warehouse, f"SELECT kind, severity, COUNT(*) FROM alerts WHERE {where} GROUP BY kind, severity", **params)}
    assert alerts == {("order_velocity", "high"): 2, ("amount_mismatch", "medium"): 1}

    lag = [(datetime.fromisoformat(r["sampled_at"]).isoformat(), r["consumer_group"], int(r["lag"]))
           for r in read_csv(folder / "consumer_lag.csv")]
    assert sorted(lag) == sorted(lag_expected)

    # The loader and the sink consumed everything: the reconciliation must say so.
    assert "Reconciliation: <span class='ok'>balanced</span>" in page, page[page.find("Pipeline health"):][:1500]

    # Dead letters are counted on the day they were quarantined (today), in that day's report.
    quarantined_day = query(warehouse, "SELECT MIN(quarantined_at) FROM quarantine")[0][0]
    quarantined_day = (quarantined_day if isinstance(quarantined_day, datetime)
                       else datetime.fromisoformat(str(quarantined_day))).date()
    build_sales_report(warehouse, quarantined_day)
    dead = read_csv(warehouse.reports_dir / "sales" / quarantined_day.isoformat() / "dead_letters.csv")
    assert sorted((r["topic"], r["reason"], int(r["records"])) for r in dead) == sorted(
        (t, reason, int(n)) for t, reason, n in query(
            warehouse, "SELECT topic, reason, COUNT(*) FROM quarantine GROUP BY topic, reason"))
    assert sum(int(r["records"]) for r in dead) == 2

    # latest.html points at the newest day, not at the last one built.
    newest = max(DAY, quarantined_day).isoformat()
    assert f"url=sales/{newest}/index.html" in (warehouse.reports_dir / "latest.html").read_text()

    # A rebuild replaces the folder atomically and leaves no staging folders behind.
    build_sales_report(warehouse, DAY)
    leftovers = [p.name for p in (warehouse.reports_dir / "sales").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert read_csv(folder / "revenue_by_country.csv") == country_rows


def pd_hour(value: Any) -> int:
    """The UTC hour of a timestamp as the driver returns it (aware on PostgreSQL, naive UTC on SQLite)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (moment.astimezone(UTC) if moment.tzinfo else moment).hour


def test_empty_warehouse_gives_a_no_data_page(mbyn_env: Settings) -> None:
    from mbyn.reports import build_sales_report

    index = build_sales_report(mbyn_env, DAY)

    page = index.read_text()
    assert f"No data for {DAY.isoformat()}" in page
    folder = index.parent
    for name in CSVS:
        assert (folder / f"{name}.csv").is_file()
    assert list(folder.glob("*.png")) == [], "no charts without data"
    assert read_csv(folder / "revenue_by_country.csv") == []
    assert f"url=sales/{DAY.isoformat()}/index.html" in (mbyn_env.reports_dir / "latest.html").read_text()


def test_report_command_writes_under_out(mbyn_env: Settings, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    result = subprocess.run([str(Path(sys.executable).parent / "mbyn"), "report", "--date", DAY.isoformat(),
                             "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    index = out / "sales" / DAY.isoformat() / "index.html"
    assert result.stdout.strip() == str(index)
    assert "No data for" in index.read_text()

    bad = subprocess.run([str(Path(sys.executable).parent / "mbyn"), "report", "--date", "2026-13-01"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "expected a date YYYY-MM-DD" in bad.stderr


def test_eur_conversion_takes_the_days_rate_else_the_nearest_else_the_reference() -> None:
    import pandas as pd

    from mbyn.reports.data import convert_to_eur

    orders = pd.DataFrame({
        "order_id": ["eur", "usd-same-day", "usd-before-first-rate", "gbp-no-rate"],
        "currency": ["EUR", "USD", "USD", "GBP"],
        "amount": [10.0, 11.0, 12.0, 8.5],
        "event_time": pd.to_datetime(["2026-11-20T10:00Z", "2026-11-20T23:59Z", "2026-11-01T00:00Z",
                                      "2026-11-20T10:00Z"], utc=True),
    })
    rates = pd.DataFrame({"currency": ["USD", "USD", "USD"],
                          "rate_date": [date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 25)],
                          "rate_per_eur": [1.0, 1.1, 2.0]})

    out = convert_to_eur(orders, rates).set_index("order_id")

    assert out.loc["eur", ["rate_per_eur", "fx_source"]].tolist() == [1.0, "eur"]
    assert out.loc["usd-same-day", "amount_eur"] == pytest.approx(10.0)  # 11 / 1.1, the rate of that day
    assert out.loc["usd-before-first-rate", "amount_eur"] == pytest.approx(12.0)  # earliest rate (11-19)
    assert out.loc["gbp-no-rate", "fx_source"] == "reference"
    assert out.loc["gbp-no-rate", "amount_eur"] == pytest.approx(8.5 / shop.PRICE_FX["GBP"])
