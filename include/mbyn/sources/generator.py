"""Clickstream + orders generator (Python, Faker): an endless, lazy, reproducible online shop.

``shop_events(seed)`` is a generator: it keeps a fixed pool of concurrent browsing sessions (default
64) and nothing else, so memory stays flat however many records it yields. Each step advances one
session — page views, cart adds/removes, and at checkout an ``order_placed`` event whose amount is the
cart priced in the customer's currency. Same seed → same sequence of ids, keys and payloads (event
times are wall-clock).

``--invalid-ratio`` replaces that fraction of records with deliberately malformed bytes (not JSON,
truncated, wrong types, missing fields), sent unvalidated to exercise the dead-letter path; they are
counted as ``poison`` in the summary.

Keys: clickstream by ``session_id`` (a session's clicks stay ordered), orders by ``order_id``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from faker import Faker

from mbyn.catalog import load_catalog
from mbyn.contracts.envelope import utc_now_iso
from mbyn.options import Args, Option, option
from mbyn.settings import Settings
from mbyn.sources import shop
from mbyn.sources.base import Outgoing, run_stream_cli

SOURCE = "clickstream-generator"
DEVICES = ("desktop", "mobile", "tablet")
DEVICE_WEIGHTS = (5, 8, 1)
# Cumulative weights: ``choices`` accumulates ``weights`` on every call otherwise.
_DEVICE_CUM = tuple(accumulate(DEVICE_WEIGHTS))
_COUNTRY_CUM = tuple(accumulate(shop.COUNTRY_WEIGHTS))
_COUNTRY_IDS = tuple(shop.COUNTRIES)
_QUANTITIES, _QUANTITY_CUM = (1, 2, 3), tuple(accumulate((8, 2, 1)))


@dataclass
class _Session:
    session_id: str
    customer_id: str
    country: str
    currency: str
    device: str
    cart: list[tuple[str, int]] = field(default_factory=list)
    steps: int = 0


_UUID_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID_V4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _uuid(rng: random.Random) -> str:
    """``str(uuid.UUID(int=rng.getrandbits(128), version=4))`` — the same text, without the UUID object."""
    h = f"{rng.getrandbits(128) & _UUID_V4_CLEAR | _UUID_V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _below(rng: random.Random, n: int) -> int:
    """A draw from ``range(n)``: one ``random()`` call (``randrange`` costs ~4x more; n is small, the bias nil)."""
    return int(rng.random() * n)


def _new_session(rng: random.Random) -> _Session:
    customer = shop.customer_id(1 + _below(rng, shop.CUSTOMERS))
    # Most shoppers browse from home; some travel.
    country = shop.home_country(customer) if rng.random() < 0.9 else rng.choices(
        _COUNTRY_IDS, cum_weights=_COUNTRY_CUM)[0]
    return _Session(_uuid(rng), customer, country, shop.COUNTRIES[country],
                    rng.choices(DEVICES, cum_weights=_DEVICE_CUM)[0])


def _poison(rng: random.Random, good: Outgoing) -> Outgoing:
    """A deliberately broken variant of ``good`` (same topic and key)."""
    text = json.dumps(good.value)
    kind = rng.randrange(4)
    if kind == 0:
        raw = b"this is not json"
    elif kind == 1:
        raw = text[: max(1, len(text) // 2)].encode()
    elif kind == 2:
        broken = json.loads(text)
        broken["payload"].pop(next(iter(broken["payload"])))
        raw = json.dumps(broken).encode()
    else:
        broken = json.loads(text)
        broken["schema_version"] = "one"
        raw = json.dumps(broken).encode()
    return Outgoing(good.topic, good.key, raw=raw)


def shop_events(seed: int | None = None, sessions: int = 64, invalid_ratio: float = 0.0) -> Iterator[Outgoing]:
    """Yield clickstream and order records forever (bounded memory: ``sessions`` live sessions)."""
    rng = random.Random(seed)
    fake = Faker()
    fake.seed_instance(seed)
    # Faker's word list once, then a draw per search from Faker's own seeded Random (rng's sequence is
    # untouched): a Faker call per record costs more than the rest of the record.
    words = tuple(fake.get_words_list())
    pick_word = fake.random.choice
    # The shop's fixed vocabulary, built once (bounded: one entry per SKU): ids, categories, product pages.
    skus = tuple(shop.sku(n) for n in range(1, shop.SKUS + 1))
    category_of = {k: shop.category_of(k) for k in skus}
    product_page = {k: f"/product/{k}" for k in skus}
    schema_version = load_catalog().schema_version
    pool = [_new_session(rng) for _ in range(sessions)]

    def envelope(event_type: str, payload: dict[str, Any], trace_id: str) -> dict[str, Any]:
        # ``make_envelope``'s dict (same keys, same order), without its per-call catalog look-up.
        return {"event_id": _uuid(rng), "event_type": event_type, "schema_version": schema_version,
                "event_time": utc_now_iso(), "source": SOURCE, "payload": payload, "trace_id": trace_id}

    def click(s: _Session, event_type: str, page: str, sku: str | None = None) -> Outgoing:
        payload: dict[str, Any] = {"session_id": s.session_id, "customer_id": s.customer_id, "page": page,
                                   "country": s.country, "device": s.device}
        if sku is not None:
            payload["sku"] = sku
            payload["category"] = category_of[sku]
        return Outgoing("clickstream", s.session_id, envelope(event_type, payload, s.session_id))

    while True:
        slot = _below(rng, sessions)
        s = pool[slot]
        s.steps += 1
        roll = rng.random()
        record: Outgoing
        if s.steps > 30 or (s.steps > 3 and roll < 0.04):  # abandoned
            pool[slot] = _new_session(rng)
            continue
        if s.cart and roll < 0.12:  # checkout → order
            order_id = f"O-{_uuid(rng)[:18]}"
            items = [{"sku": k, "category": category_of[k], "quantity": q,
                      "unit_price": shop.price_in(k, s.currency)} for k, q in s.cart]
            amount = round(sum(i["unit_price"] * i["quantity"] for i in items), 2)  # type: ignore[operator]
            yield click(s, "checkout", "/checkout")
            payload = {"order_id": order_id, "customer_id": s.customer_id, "session_id": s.session_id,
                       "country": s.country, "currency": s.currency, "items": items, "amount": amount}
            record = Outgoing("orders", order_id, envelope("order_placed", payload, s.session_id))
            pool[slot] = _new_session(rng)
        elif roll < 0.35 and len(s.cart) < 10:
            sku = skus[_below(rng, shop.SKUS)]
            s.cart.append((sku, rng.choices(_QUANTITIES, cum_weights=_QUANTITY_CUM)[0]))
            record = click(s, "add_to_cart", product_page[sku], sku)
        elif s.cart and roll < 0.40:
            sku, _ = s.cart.pop(_below(rng, len(s.cart)))
            record = click(s, "remove_from_cart", "/cart", sku)
        elif roll < 0.55:
            record = click(s, "page_view", f"/search?q={pick_word(words)}")
        else:
            sku = skus[_below(rng, shop.SKUS)]
            record = click(s, "page_view", product_page[sku], sku)
        if invalid_ratio and rng.random() < invalid_ratio:
            record = _poison(rng, record)
        yield record


OPTIONS: tuple[Option, ...] = (
    option("--seed", type=int, default=None, help="reproducible sequence (default: random)"),
    option("--sessions", type=int, default=64, help="concurrent browsing sessions (memory bound)"),
    option("--invalid-ratio", type=float, default=0.0,
           help="fraction 0..1 of records replaced by malformed bytes (dead-letter testing)"),
)


def run(settings: Settings, args: Args) -> int:
    if not 0.0 <= args.invalid_ratio <= 1.0:
        raise SystemExit("mbyn: --invalid-ratio must be between 0 and 1")
    if args.sessions < 1:
        raise SystemExit("mbyn: --sessions must be at least 1")
    events = shop_events(args.seed, sessions=args.sessions, invalid_ratio=args.invalid_ratio)
    return run_stream_cli(SOURCE, events, settings, args)
