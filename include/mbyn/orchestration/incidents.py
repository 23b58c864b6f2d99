"""Fraud alerts → one HTML incident report per alert, under ``<reports_dir>/incidents/<alert_id>.html``.

The incident DAG hands over the asset events of its run; every event is handled (all events since the
previous run land in one run). Handling is idempotent: the file name is the alert id and the file is
replaced atomically, so a redelivered alert (the watcher is at-least-once) rewrites the same report.

A report says what happened (kind, severity, details, when, who raised it), the order and payment
involved and recent context for the customer — read from the warehouse when its tables exist
(``orders``, ``payments``, ``shipments``, ``orders_enriched``; any that has an ``order_id`` /
``customer_id`` column). Without a warehouse the report shows the alert alone and says why.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mbyn.contracts.codec import check_envelope, decode_record
from mbyn.contracts.dead_letters import shorten
from mbyn.errors import PoisonRecordError
from mbyn.files import atomic_write
from mbyn.settings import Settings, get_settings
from mbyn.warehouse.engine import make_engine

log = logging.getLogger("mbyn.incidents")

#: The logical catalog topic alerts arrive on.
ALERTS_TOPIC = "alerts"
ALERT_EVENT_TYPE = "fraud_alert"
#: Stands in for the record key, which the asset watcher's shared stream does not pass on.
_KEY_NOT_SEEN = b"-"

#: Warehouse tables searched for the order / customer of an alert, in report order.
CONTEXT_TABLES = ("orders", "payments", "shipments", "orders_enriched")
ROW_LIMIT = 20


@dataclass
class WarehouseContext:
    """Rows about one alert's order and customer, or the reason there are none."""

    by_order: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_customer: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    note: str = ""


def decode_alert(value: Any) -> dict[str, Any] | None:
    """The envelope of a valid fraud alert, or None with the reason logged. Never raises (``decode_event``)."""
    return decode_event(ALERTS_TOPIC, ALERT_EVENT_TYPE, value)


def decode_event(topic: str, event_type: str, value: Any) -> dict[str, Any] | None:
    """The envelope of a valid ``event_type`` record of the catalog ``topic``, or None with the reason logged.

    Never raises. ``value`` is a raw Kafka value (bytes; None for a record without one), its text, or an already
    decoded envelope (a mapping: the asset-event form of ``EnvelopeStreamTrigger``). Raw values go through the codec
    (``decode_record``); a mapping through the same checks (``check_envelope``): an event stored by an older
    trigger is judged by today's contract. The key is not seen here (the shared stream passes values only):
    the ``null_key`` check belongs to the topic's consumers (the warehouse-loader quarantines a key-less alert).
    """
    try:
        if isinstance(value, Mapping):
            envelope: dict[str, Any] | None = check_envelope(topic, dict(value))
        else:
            raw = value.encode("utf-8", errors="surrogatepass") if isinstance(value, str) else value
            if raw is not None and not isinstance(raw, bytes):
                raise PoisonRecordError("not_json", f"value is a {type(raw).__name__}, not bytes")
            envelope = decode_record(topic, _KEY_NOT_SEEN, raw)
    except PoisonRecordError as exc:
        log.warning("%s: skipped a record (%s): %s", topic, exc.reason, shorten(str(exc), 300))
        return None
    except Exception as exc:  # noqa: BLE001 - the codec raises nothing else; a trigger must outlive any bytes
        log.warning("%s: skipped a record that could not be judged (%s: %s)", topic, type(exc).__name__,
                    shorten(str(exc), 300))
        return None
    if envelope is None or envelope.get("event_type") != event_type:
        log.warning("%s: skipped a record that is not a %s envelope", topic, event_type)
        return None
    return envelope


def alerts_from_events(events: Iterable[Any]) -> list[dict[str, Any]]:
    """The alert envelopes carried by asset events, de-duplicated by alert id (the last one wins).

    ``event.extra["payload"]`` is the envelope as a dict when the watcher is ``AlertStreamTrigger``,
    or its JSON text with the provider's plain ``KafkaSharedStreamTrigger``; both are judged by
    ``decode_alert``. An event without a valid alert (it should never have fired) is skipped with a
    warning rather than failing the run: the warehouse-loader quarantines the record it came from.
    """
    alerts: dict[str, dict[str, Any]] = {}
    for event in events:
        extra = getattr(event, "extra", event)
        envelope = decode_alert(extra.get("payload") if isinstance(extra, Mapping) else None)
        if envelope is not None:
            alerts[str(envelope["payload"]["alert_id"])] = envelope
    return list(alerts.values())


def report_path(settings: Settings, alert_id: str) -> Path:
    """Where the report of ``alert_id`` lives (unsafe characters of the id replaced by ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", alert_id).lstrip(".") or "_"
    return settings.reports_dir / "incidents" / f"{safe}.html"


def warehouse_context(settings: Settings, order_id: str | None, customer_id: str | None) -> WarehouseContext:
    """Rows of the context tables for the order and the customer; empty with a note if there is no warehouse."""
    context = WarehouseContext()
    url = make_url(settings.warehouse())
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        context.note = f"no warehouse yet ({url.database} does not exist): the alert is shown alone"
        return context
    engine = make_engine(settings.warehouse(), read_only=True)
    try:
        with engine.connect() as conn:
            meta = MetaData()
            meta.reflect(conn, only=lambda name, _meta: name in CONTEXT_TABLES)
            for name in CONTEXT_TABLES:
                table: Table | None = meta.tables.get(name)
                if table is None:
                    continue
                for key, value, into in (("order_id", order_id, context.by_order),
                                         ("customer_id", customer_id, context.by_customer)):
                    if value and key in table.c:
                        rows = conn.execute(select(table).where(table.c[key] == value).limit(ROW_LIMIT))
                        into[name] = [dict(row._mapping) for row in rows]
            if not meta.tables:
                context.note = "the warehouse has none of the tables " + ", ".join(CONTEXT_TABLES)
    except SQLAlchemyError as exc:
        # The report is still worth writing; the reason is shown in it and logged.
        log.warning("incident context: warehouse query failed: %s", exc)
        context.note = f"warehouse query failed: {exc.__class__.__name__}: {exc}"
    finally:
        engine.dispose()
    return context


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=muted>no rows</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c)))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(envelope: Mapping[str, Any], context: WarehouseContext, run_id: str | None = None) -> str:
    """The HTML report of one alert (self-contained, no external assets)."""
    alert = envelope["payload"]
    esc = html.escape
    facts = [("Alert", alert["alert_id"]), ("Kind", alert["kind"]), ("Severity", alert["severity"]),
             ("Raised at", envelope.get("event_time", "")), ("Raised by", envelope.get("source", "")),
             ("Order", alert.get("order_id") or "—"), ("Customer", alert.get("customer_id") or "—"),
             ("Event id", envelope.get("event_id", "")), ("Trace id", envelope.get("trace_id") or "—")]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    sections = []
    for title, rows_by_table, key in (("Order and payment involved", context.by_order, alert.get("order_id")),
                                      ("Recent context for the customer", context.by_customer,
                                       alert.get("customer_id"))):
        parts = [f"<h2>{esc(title)}</h2>"]
        if not key:
            parts.append("<p class=muted>the alert names none</p>")
        elif not rows_by_table:
            parts.append(f"<p class=muted>{esc(context.note or 'no matching tables in the warehouse')}</p>")
        for table, rows in rows_by_table.items():
            parts.append(f"<h3>{esc(table)}</h3>{_table(rows)}")
        sections.append("".join(parts))
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    severity = esc(str(alert["severity"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Incident {esc(alert['alert_id'])}: {esc(alert['kind'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; font-size: .9rem; }}
.sev {{ padding: .1rem .5rem; border-radius: .3rem; color: #fff; background: #888; }}
.sev-high {{ background: #b00020; }} .sev-medium {{ background: #d17a00; }} .sev-low {{ background: #2e7d32; }}
.muted {{ color: #777; }} pre {{ background: #f6f6f6; padding: 1rem; overflow-x: auto; }}
</style></head><body>
<h1>Incident {esc(alert['alert_id'])} <span class="sev sev-{severity}">{severity}</span></h1>
<h2>What happened</h2>
<p>{esc(alert['details']) or '<span class=muted>no details</span>'}</p>
<table>{facts_html}</table>
{''.join(sections)}
<h2>The alert as received</h2>
<pre>{esc(json.dumps(envelope, indent=2, sort_keys=True))}</pre>
<p class=muted>Generated {generated}{' by DAG run ' + esc(run_id) if run_id else ''}.
A redelivered alert rewrites this file.</p>
</body></html>
"""


def write_incident_report(envelope: Mapping[str, Any], settings: Settings | None = None,
                          run_id: str | None = None) -> Path:
    """Write (or rewrite) the report of one alert atomically; return its path."""
    settings = settings or get_settings()
    alert = envelope["payload"]
    context = warehouse_context(settings, alert.get("order_id"), alert.get("customer_id"))
    path = report_path(settings, str(alert["alert_id"]))
    atomic_write(path, render_report(envelope, context, run_id))
    log.info("incident %s (%s, %s): %s", alert["alert_id"], alert["kind"], alert["severity"], path)
    return path


def handle_alert_events(events: Iterable[Any], settings: Settings | None = None,
                        run_id: str | None = None) -> list[str]:
    """Write one report per alert carried by ``events``; return the report paths."""
    settings = settings or get_settings()
    return [str(write_incident_report(alert, settings, run_id)) for alert in alerts_from_events(events)]
