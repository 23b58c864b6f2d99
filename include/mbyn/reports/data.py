"""One UTC day of the warehouse as pandas frames, and the summary tables of the sales report.

``load_day(engine, day)`` reads, with SQLAlchemy Core, the rows whose event time falls in
``[day 00:00 UTC, day+1 00:00 UTC)``: orders and their items, clicks, payments, shipments, fraud alerts,
lag samples (by ``sampled_at``) and dead letters (by ``quarantined_at``), plus every FX rate. A table
that does not exist yet (a warehouse nobody has loaded) reads as empty, so an empty warehouse gives an
empty report instead of an error.

Money is converted to EUR per order: ``amount / rate_per_eur`` with the ECB rate of the order's
currency published on the order's date or, failing that, the latest earlier one, else the earliest
later one (``fx_source = "ecb"``); with no rate loaded for that currency at all, the shop's reference
rate (``mbyn.sources.shop.PRICE_FX``, ``fx_source = "reference"``) — the report says how many orders
needed it. EUR amounts need no rate. Item revenue (``quantity * unit_price``) uses its order's rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select

from mbyn.sources.shop import PRICE_FX
from mbyn.warehouse import schema as s

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql import Select

TOP_PRODUCTS = 10


@dataclass
class DayData:
    """The warehouse rows of one day (frames may be empty, never None)."""

    day: date
    orders: pd.DataFrame  # + rate_per_eur, fx_source, amount_eur
    items: pd.DataFrame  # + revenue_eur
    clicks: pd.DataFrame
    payments: pd.DataFrame
    shipments: pd.DataFrame
    alerts: pd.DataFrame
    lag: pd.DataFrame
    dead_letters: pd.DataFrame
    missing_tables: list[str]

    @property
    def is_empty(self) -> bool:
        """True when the day has no business event at all (orders, clicks, payments, shipments, alerts)."""
        return all(f.empty for f in (self.orders, self.clicks, self.payments, self.shipments, self.alerts))


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[day 00:00, next day 00:00)`` in UTC."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def load_day(engine: Engine, day: date) -> DayData:
    """Read one UTC day of the warehouse (see the module docstring)."""
    start, end = day_bounds(day)
    existing = set(inspect(engine).get_table_names())
    missing = sorted(t for t in ("orders", "order_items", "clicks", "payments", "shipments", "alerts",
                                 "lag_samples", "quarantine", "fx_rates") if t not in existing)

    def read(conn: Connection, table: Table, stmt: Select[Any]) -> pd.DataFrame:
        return _frame(conn, stmt) if table.name in existing else _empty(stmt)

    def in_day(table: Table, column: str = "event_time") -> Select[Any]:
        col = table.c[column]
        return select(table).where(col >= start, col < end)

    with engine.connect() as conn:
        orders = read(conn, s.orders, in_day(s.orders))
        item_stmt = (select(s.order_items.c.order_id, s.order_items.c.line_no, s.order_items.c.sku,
                            s.order_items.c.category, s.order_items.c.quantity, s.order_items.c.unit_price)
                     .join(s.orders, s.orders.c.order_id == s.order_items.c.order_id)
                     .where(s.orders.c.event_time >= start, s.orders.c.event_time < end))
        items = read(conn, s.order_items, item_stmt) if "orders" in existing else _empty(item_stmt)
        clicks = read(conn, s.clicks, select(s.clicks.c.event_type, s.clicks.c.session_id, s.clicks.c.event_time)
                      .where(s.clicks.c.event_time >= start, s.clicks.c.event_time < end))
        payments = read(conn, s.payments, in_day(s.payments))
        shipments = read(conn, s.shipments, in_day(s.shipments))
        alerts = read(conn, s.alerts, in_day(s.alerts).order_by(s.alerts.c.event_time))
        lag = read(conn, s.lag_samples, in_day(s.lag_samples, "sampled_at"))
        dead = read(conn, s.quarantine, select(s.quarantine.c.topic, s.quarantine.c.reason,
                                               s.quarantine.c.consumer_group, s.quarantine.c.quarantined_at)
                    .where(s.quarantine.c.quarantined_at >= start, s.quarantine.c.quarantined_at < end))
        rates = read(conn, s.fx_rates, select(s.fx_rates.c.currency, s.fx_rates.c.rate_date,
                                              s.fx_rates.c.rate_per_eur))
    for frame, column in ((orders, "event_time"), (clicks, "event_time"), (payments, "event_time"),
                          (shipments, "event_time"), (alerts, "event_time"), (lag, "sampled_at"),
                          (dead, "quarantined_at")):
        frame[column] = _utc(frame[column])
    orders = convert_to_eur(orders, rates)
    items = _item_revenue(items, orders)
    return DayData(day, orders, items, clicks, payments, shipments, alerts, lag, dead, missing)


def _frame(conn: Connection, stmt: Select[Any]) -> pd.DataFrame:
    import pandas as pd

    result = conn.execute(stmt)
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def _empty(stmt: Select[Any]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=[c.name for c in stmt.selected_columns])


def _utc(column: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC (SQLite hands back naive UTC values, PostgreSQL aware ones)."""
    import pandas as pd

    return pd.to_datetime(column, utc=True)


def convert_to_eur(orders: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """``orders`` with ``rate_per_eur``, ``fx_source`` (eur | ecb | reference) and ``amount_eur`` added."""
    import pandas as pd

    out = orders.copy()
    if out.empty:
        for column in ("rate_per_eur", "fx_source", "amount_eur"):
            out[column] = pd.Series(dtype="float64" if column != "fx_source" else "object")
        return out
    out["amount"] = out["amount"].astype(float)
    out["_day"] = out["event_time"].dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")
    out["_row"] = range(len(out))
    rate = pd.Series(float("nan"), index=out.index)
    if not rates.empty:
        table = rates.assign(_day=pd.to_datetime(rates["rate_date"]).astype("datetime64[ns]"),
                             rate_per_eur=rates["rate_per_eur"].astype(float))
        table = table.sort_values("_day")[["currency", "_day", "rate_per_eur"]]
        left = out[["_row", "currency", "_day"]].sort_values("_day")
        before = pd.merge_asof(left, table, on="_day", by="currency", direction="backward")
        after = pd.merge_asof(left, table, on="_day", by="currency", direction="forward")
        chosen = before.set_index("_row")["rate_per_eur"].fillna(after.set_index("_row")["rate_per_eur"])
        rate = out["_row"].map(chosen)
    is_eur = out["currency"] == "EUR"
    source = pd.Series("ecb", index=out.index).where(rate.notna(), "reference").where(~is_eur, "eur")
    reference = out["currency"].map(PRICE_FX).astype(float)
    rate = rate.where(rate.notna(), reference).where(~is_eur, 1.0)
    out["rate_per_eur"] = rate
    out["fx_source"] = source
    out["amount_eur"] = out["amount"] / out["rate_per_eur"]
    return out.drop(columns=["_day", "_row"])


def _item_revenue(items: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    out = items.merge(orders[["order_id", "rate_per_eur"]], on="order_id", how="left") if not items.empty \
        else items.assign(rate_per_eur=[])
    out["revenue_eur"] = (out["quantity"].astype(float) * out["unit_price"].astype(float)
                          / out["rate_per_eur"].astype(float)) if not out.empty else []
    return out


# Summary tables (each is one CSV extract and one table or chart of the report) ------------------------

def revenue_by_hour(data: DayData) -> pd.DataFrame:
    """hour (0..23, all present), orders, revenue_eur."""
    import pandas as pd

    hours = pd.DataFrame({"hour": range(24)})
    if data.orders.empty:
        return hours.assign(orders=0, revenue_eur=0.0)
    grouped = (data.orders.assign(hour=data.orders["event_time"].dt.hour)
               .groupby("hour").agg(orders=("order_id", "count"), revenue_eur=("amount_eur", "sum")).reset_index())
    merged = hours.merge(grouped, on="hour", how="left")
    return merged.fillna({"orders": 0, "revenue_eur": 0.0}).astype({"orders": int})


def revenue_by_country(data: DayData) -> pd.DataFrame:
    """country, orders, revenue_eur, avg_basket_eur — largest revenue first."""
    import pandas as pd

    if data.orders.empty:
        return pd.DataFrame(columns=["country", "orders", "revenue_eur", "avg_basket_eur"])
    out = (data.orders.groupby("country")
           .agg(orders=("order_id", "count"), revenue_eur=("amount_eur", "sum")).reset_index())
    out["avg_basket_eur"] = out["revenue_eur"] / out["orders"]
    return out.sort_values(["revenue_eur", "country"], ascending=[False, True]).reset_index(drop=True)


def revenue_by_category(data: DayData) -> pd.DataFrame:
    """category, units, revenue_eur (from order lines) — largest revenue first."""
    import pandas as pd

    if data.items.empty:
        return pd.DataFrame(columns=["category", "units", "revenue_eur"])
    out = (data.items.groupby("category")
           .agg(units=("quantity", "sum"), revenue_eur=("revenue_eur", "sum")).reset_index())
    return out.sort_values(["revenue_eur", "category"], ascending=[False, True]).reset_index(drop=True)


def top_products(data: DayData, limit: int = TOP_PRODUCTS) -> pd.DataFrame:
    """sku, category, units, orders, revenue_eur — the ``limit`` best sellers by revenue."""
    import pandas as pd

    if data.items.empty:
        return pd.DataFrame(columns=["sku", "category", "units", "orders", "revenue_eur"])
    out = (data.items.groupby(["sku", "category"])
           .agg(units=("quantity", "sum"), orders=("order_id", "nunique"), revenue_eur=("revenue_eur", "sum"))
           .reset_index())
    return out.sort_values(["revenue_eur", "sku"], ascending=[False, True]).head(limit).reset_index(drop=True)


def funnel(data: DayData) -> pd.DataFrame:
    """stage, events, of_previous — sessions → orders → authorized payments → delivered shipments.

    Each stage counts the day's own events (a payment of today for yesterday's order counts today), so
    a stage can exceed the previous one around midnight; the ratio is informative, not a cohort.
    """
    import pandas as pd

    def count(frame: pd.DataFrame, column: str, value: str) -> int:
        return int((frame[column] == value).sum()) if not frame.empty else 0

    stages = [
        ("sessions (clicked)", int(data.clicks["session_id"].nunique()) if not data.clicks.empty else 0),
        ("orders placed", len(data.orders)),
        ("payments authorized", count(data.payments, "status", "authorized")),
        ("shipments delivered", count(data.shipments, "status", "delivered")),
    ]
    out = pd.DataFrame(stages, columns=["stage", "events"])
    previous = out["events"].shift(1)
    out["of_previous"] = (out["events"] / previous.where(previous > 0)).round(4)
    return out


def fraud_alerts(data: DayData) -> pd.DataFrame:
    """kind, severity, alerts — the day's fraud alerts counted."""
    import pandas as pd

    if data.alerts.empty:
        return pd.DataFrame(columns=["kind", "severity", "alerts"])
    return (data.alerts.groupby(["kind", "severity"]).size().rename("alerts").reset_index()
            .sort_values(["alerts", "kind"], ascending=[False, True]).reset_index(drop=True))


def lag_over_time(data: DayData) -> pd.DataFrame:
    """sampled_at, consumer_group, lag — total lag of each group over its partitions, per sample."""
    import pandas as pd

    if data.lag.empty:
        return pd.DataFrame(columns=["sampled_at", "consumer_group", "lag"])
    return (data.lag.groupby(["consumer_group", "sampled_at"])["lag"].sum().reset_index()
            [["sampled_at", "consumer_group", "lag"]].sort_values(["sampled_at", "consumer_group"])
            .reset_index(drop=True))


def dead_letters(data: DayData) -> pd.DataFrame:
    """topic, reason, records — the day's quarantined dead letters."""
    import pandas as pd

    if data.dead_letters.empty:
        return pd.DataFrame(columns=["topic", "reason", "records"])
    frame = data.dead_letters.fillna({"topic": "(unknown)"})
    return (frame.groupby(["topic", "reason"]).size().rename("records").reset_index()
            .sort_values(["records", "topic"], ascending=[False, True]).reset_index(drop=True))
