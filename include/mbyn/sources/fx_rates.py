"""FX-rates poller: the ECB's daily euro reference rates over HTTP → topic ``fx-rates`` (key = currency).

Source: the European Central Bank's keyless XML files under ``MBYN_FX_URL`` (default
``https://www.ecb.europa.eu/stats/eurofxref/``): ``eurofxref-daily.xml`` (the latest working day) and
``eurofxref-hist-90d.xml`` (the last 90 days). The first run, with nothing published yet, backfills from
the 90-day file; later runs fetch the daily file (``--history`` forces the 90-day file).

* HTTP with httpx: a per-request timeout (``MBYN_FX_TIMEOUT_S``) and up to ``MBYN_FX_ATTEMPTS``
  attempts with exponential back-off on 5xx, timeouts and connection errors — one log line per failed
  attempt. Other 4xx answers are not retried.
* Strict validation with the standard library's expat parser (DOCTYPE and entity declarations are
  refused, so nothing is ever expanded or fetched): malformed XML, a foreign document, a day without
  rates, a non-positive or non-numeric rate → ``SourceError`` naming the URL and the problem, and
  nothing is published from that response.
* Only currencies of the catalog's enum are published; EUR itself is published with rate 1.0 for every
  day. Records go out oldest day first, so the compacted topic ends with the newest rate per currency.
* De-duplication by natural key ``(rate_date, currency)``: published keys are kept in
  ``var/state/fx-rates.json`` (the newest ``KEEP_DATES`` days per currency), saved only after the broker
  acknowledged the batch. A re-run publishes nothing new; a crash before the save re-sends the same
  event ids (uuid5 of the key).

Offline demo: ``--replay`` (or ``MBYN_FX_REPLAY=1``) serves the recorded responses in
``include/fixtures/ecb/`` from a local ``http.server`` on 127.0.0.1 and polls that instead, logging a
WARNING that the rates are a REPLAY of recorded data.
"""

from __future__ import annotations

import functools
import http.server
import logging
import math
import re
import threading
import xml.parsers.expat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import make_envelope
from mbyn.errors import SourceError
from mbyn.options import Args, Option, option
from mbyn.process import StopFlag, backoff_delays
from mbyn.settings import INCLUDE_DIR, Settings, get_settings, hide_password
from mbyn.sources.batch import BatchRun, event_id, refuse_stream_limits, run_batch, run_batch_cli

log = logging.getLogger("mbyn.source.fx")

SOURCE = "fx-rates-poller"
TOPIC = "fx-rates"
DAILY_FILE = "eurofxref-daily.xml"
HISTORY_FILE = "eurofxref-hist-90d.xml"
FIXTURES_DIR = INCLUDE_DIR / "fixtures" / "ecb"
#: Published dates remembered per currency; older ones can no longer appear in the 90-day file.
KEEP_DATES = 400
#: Refuse bodies larger than this (the 90-day file is about 100 KB).
MAX_BODY_BYTES = 10 * 1024 * 1024

_GESMES_NS = "http://www.gesmes.org/xml/2002-08-01"
_ECB_NS = "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"
_CUBE = f"{_ECB_NS} Cube"
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, order=True)
class FxRate:
    """One reference rate: units of ``currency`` per euro on ``rate_date`` (ISO date)."""

    rate_date: str
    currency: str
    rate_per_eur: float


def catalog_currencies() -> tuple[str, ...]:
    """The currencies the ``fx-rates`` contract allows (the catalog's currency enum)."""
    schema = load_catalog().get(TOPIC).payload_schema or {}
    return tuple(schema["properties"]["currency"]["enum"])


# Parsing -----------------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside expat handlers to abort parsing with a reason."""


def parse_ecb_xml(data: bytes, url: str) -> list[FxRate]:
    """Parse and validate an ECB eurofxref document (daily or history) into rates of every currency listed.

    Raises SourceError naming ``url`` and what is wrong. DTDs and entity declarations are refused
    before anything could be expanded; only the ``gesmes:Envelope`` / ``Cube`` structure is accepted.
    """
    where = hide_password(url)  # MBYN_FX_URL may carry a password: never in a message
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    rates: list[FxRate] = []
    days: dict[str, set[str]] = {}
    current_day: str | None = None
    depth_of_day = -1
    depth = 0
    root: list[str] = []

    def refuse(*_args: object) -> None:
        raise _Refused("DOCTYPE / entity declarations are not allowed")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal current_day, depth_of_day, depth
        depth += 1
        if not root:
            root.append(name)
            if name != f"{_GESMES_NS} Envelope":
                raise _Refused(f"root element is {name.split(' ')[-1]!r}, not an ECB gesmes:Envelope")
        if name != _CUBE:
            return
        if "time" in attrs:
            if current_day is not None:
                raise _Refused("nested <Cube time=...> elements")
            day = attrs["time"]
            try:
                date.fromisoformat(day)
            except ValueError:
                raise _Refused(f"<Cube time={day!r}> is not an ISO date (YYYY-MM-DD)") from None
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                raise _Refused(f"<Cube time={day!r}> is not an ISO date (YYYY-MM-DD)")
            if day in days:
                raise _Refused(f"day {day} appears twice")
            current_day, depth_of_day = day, depth
            days[day] = set()
        elif "currency" in attrs or "rate" in attrs:
            currency, text = attrs.get("currency", ""), attrs.get("rate")
            if current_day is None:
                raise _Refused(f"rate for {currency or '?'} outside a <Cube time=...> element")
            if not _CURRENCY.match(currency):
                raise _Refused(f"currency {currency!r} on {current_day} is not a 3-letter ISO code")
            if text is None:
                raise _Refused(f"{currency} on {current_day} has no rate attribute")
            try:
                value = float(text)
            except ValueError:
                raise _Refused(f"rate for {currency} on {current_day} is {text!r}, not a number") from None
            if not math.isfinite(value) or value <= 0:
                raise _Refused(f"rate for {currency} on {current_day} is {text!r}: must be a positive number")
            if currency in days[current_day]:
                raise _Refused(f"{currency} appears twice on {current_day}")
            days[current_day].add(currency)
            rates.append(FxRate(current_day, currency, value))

    def end(name: str) -> None:
        nonlocal current_day, depth
        if name == _CUBE and depth == depth_of_day:
            current_day = None
        depth -= 1

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise SourceError(f"{where}: malformed XML: {exc}") from None
    except _Refused as exc:
        raise SourceError(f"{where}: invalid ECB response: {exc}") from None
    if not days:
        raise SourceError(f"{where}: invalid ECB response: no rates (no <Cube time=...> element)")
    empty = sorted(day for day, currencies in days.items() if not currencies)
    if empty:
        raise SourceError(f"{where}: invalid ECB response: no rates on {', '.join(empty)}")
    return rates


# HTTP ---------------------------------------------------------------------------------------------------


def fetch(url: str, settings: Settings, stop: StopFlag | None = None) -> bytes:
    """GET ``url`` with the configured timeout; retry 5xx, timeouts and connection errors with back-off.

    At most ``settings.fx_attempts`` attempts, one WARNING line per failed one. Raises SourceError
    naming the URL and the last problem (with a hint about ``--replay`` when the host is unreachable);
    other non-200 answers fail at once, because a retry will not change them.
    """
    import httpx  # noqa: PLC0415 - only to fetch (60 ms); every CLI command imports this module

    stop = stop or StopFlag()
    where = hide_password(url)  # MBYN_FX_URL may carry a password: never in a message or log line
    delays = backoff_delays(initial=0.5, maximum=8.0)
    problem = "no attempt made"
    unreachable = False
    with httpx.Client(timeout=settings.fx_timeout_s, follow_redirects=True,
                      headers={"User-Agent": "mbyn-fx-rates-poller/1"}) as client:
        for attempt in range(1, settings.fx_attempts + 1):
            try:
                response = client.get(url)
            except httpx.TimeoutException:
                problem, unreachable = f"no answer within {settings.fx_timeout_s:g}s (MBYN_FX_TIMEOUT_S)", False
            except httpx.TransportError as exc:
                problem, unreachable = f"connection failed: {exc}", True
            else:
                if response.status_code == 200:
                    if len(response.content) > MAX_BODY_BYTES:
                        raise SourceError(f"{where}: response is {len(response.content)} bytes, "
                                          f"more than the {MAX_BODY_BYTES} allowed")
                    return response.content
                if response.status_code < 500:
                    raise SourceError(f"{where}: HTTP {response.status_code} {response.reason_phrase} (not retried)")
                problem, unreachable = f"HTTP {response.status_code} {response.reason_phrase}", False
            if attempt == settings.fx_attempts:
                log.warning("fx-rates: %s: %s (attempt %d/%d), giving up", where, problem, attempt,
                            settings.fx_attempts)
                break
            delay = next(delays)
            log.warning("fx-rates: %s: %s (attempt %d/%d), retrying in %.1fs", where, problem, attempt,
                        settings.fx_attempts, delay)
            if stop.wait(delay):
                raise SourceError(f"{where}: stopped ({stop.reason}) while retrying after: {problem}")
    hint = (" — offline? `mbyn produce fx-rates --replay` (or MBYN_FX_REPLAY=1) replays recorded ECB data"
            if unreachable else "")
    raise SourceError(f"{where}: {problem} after {settings.fx_attempts} attempt(s){hint}")


class _ReplayHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the fixture folder read-only; request lines go to the debug log, not stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("replay server: " + format, *args)


@contextmanager
def replay_server(folder: str | None = None) -> Iterator[str]:
    """Serve recorded ECB files over real HTTP on 127.0.0.1 (a free port) in a thread; yield the base URL."""
    directory = folder or str(FIXTURES_DIR)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_ReplayHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, name="ecb-replay", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    log.warning("fx-rates: REPLAY — serving RECORDED ECB responses from %s at %s; these are NOT today's live "
                "rates (unset MBYN_FX_REPLAY / drop --replay for the real ECB)", directory, url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Publishing ---------------------------------------------------------------------------------------------


def _publish(run: BatchRun, base_url: str, history: bool | None) -> None:
    published: dict[str, list[str]] = run.state.setdefault("published", {})
    if history is None:
        history = not published  # first run: backfill the last 90 days
    url = base_url + (HISTORY_FILE if history else DAILY_FILE)
    rates = parse_ecb_xml(fetch(url, run.settings, run.stop), url)
    allowed = set(catalog_currencies())
    wanted = [r for r in rates if r.currency in allowed]
    run.stats["skipped_currencies"] = len({r.currency for r in rates} - allowed)
    for day in sorted({r.rate_date for r in rates}):
        wanted.append(FxRate(day, "EUR", 1.0))
        missing = allowed - {"EUR"} - {r.currency for r in rates if r.rate_date == day}
        if missing:
            log.warning("fx-rates: %s has no rate for %s on %s", hide_password(url), ", ".join(sorted(missing)), day)
    run.stats["days"] = len({r.rate_date for r in rates})
    fresh = sorted(r for r in wanted if r.rate_date not in published.get(r.currency, ()))
    run.stats["already_published"] = len(wanted) - len(fresh)
    for rate in fresh:
        payload = {"currency": rate.currency, "rate_date": rate.rate_date, "rate_per_eur": rate.rate_per_eur}
        # ECB rates are published around 16:00 CET: the event time is that moment of the rate's day.
        envelope = make_envelope("fx_rate", payload, SOURCE, event_time=f"{rate.rate_date}T15:00:00.000Z",
                                 event_id=event_id(TOPIC, rate.rate_date, rate.currency))
        run.send(TOPIC, envelope, rate.currency)
    for rate in fresh:
        published.setdefault(rate.currency, []).append(rate.rate_date)
    for currency, dates in published.items():
        published[currency] = sorted(set(dates))[-KEEP_DATES:]
    run.state["last_url"] = hide_password(url)
    run.commit()


def publish_fx_rates(settings: Settings | None = None, *, history: bool | None = None, replay: bool | None = None,
                     stop: StopFlag | None = None) -> dict[str, Any]:
    """Fetch the ECB rates and publish those not published yet; return the summary (the Airflow task entry).

    ``history=None`` backfills from the 90-day file when nothing was published before, else reads the
    daily file. ``replay=None`` follows ``MBYN_FX_REPLAY``. Raises SourceError on a bad or missing response
    (nothing is published from it) and DeliveryError if the broker did not acknowledge the batch.
    """
    settings = settings or get_settings()
    use_replay = settings.fx_replay if replay is None else replay
    if use_replay:
        with replay_server() as url:
            return run_batch(SOURCE, TOPIC, lambda run: _publish(run, url, history), settings, stop=stop)
    return run_batch(SOURCE, TOPIC, lambda run: _publish(run, settings.fx_url, history), settings, stop=stop)


OPTIONS: tuple[Option, ...] = (
    option("--history", action="store_true",
           help=f"fetch {HISTORY_FILE} (last 90 days) instead of {DAILY_FILE} "
                "(default: history on the first run only)"),
    option("--replay", action="store_true",
           help="serve the recorded ECB responses from include/fixtures/ecb over local HTTP "
                "(offline demo; also MBYN_FX_REPLAY=1)"),
)


def run(settings: Settings, args: Args) -> int:
    refuse_stream_limits("fx-rates", args)
    return run_batch_cli(SOURCE, lambda stop: publish_fx_rates(
        settings, history=True if args.history else None, replay=True if args.replay else None, stop=stop))
