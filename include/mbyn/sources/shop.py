"""The shop's shared vocabulary: customers, SKUs, countries and currencies every producer agrees on.

All functions are pure and derive values from ids, so producers in different processes (and the
customers database seed) agree without sharing state — and nothing here grows with time.
"""

from __future__ import annotations

import hashlib

CUSTOMERS = 5000
SKUS = 2000
CATEGORIES = ("books", "electronics", "fashion", "garden", "grocery", "home", "sports", "toys")
#: country → the currency its shoppers pay in
COUNTRIES: dict[str, str] = {
    "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR", "IT": "EUR",
    "GB": "GBP", "US": "USD", "CH": "CHF", "SE": "SEK", "PL": "PLN", "JP": "JPY", "CA": "CAD", "AU": "AUD",
}
COUNTRY_WEIGHTS = (18, 12, 6, 6, 6, 12, 20, 3, 3, 4, 4, 3, 3)
#: currency → approximate units per EUR, used to price goods locally (the FX producer has the real rates)
PRICE_FX = {"EUR": 1.0, "GBP": 0.85, "USD": 1.08, "CHF": 0.95, "SEK": 11.4, "PLN": 4.3, "JPY": 160.0,
            "CAD": 1.47, "AUD": 1.64}


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def customer_id(n: int) -> str:
    return f"C{n:06d}"


def sku(n: int) -> str:
    return f"SKU-{n:05d}"


def category_of(sku_id: str) -> str:
    return CATEGORIES[_h(sku_id) % len(CATEGORIES)]


def price_eur(sku_id: str) -> float:
    """A stable list price in EUR between 2 and ~500, skewed towards cheap items."""
    x = (_h("price:" + sku_id) % 10_000) / 10_000
    return round(2 + 498 * x**3, 2)


def price_in(sku_id: str, currency: str) -> float:
    return round(price_eur(sku_id) * PRICE_FX[currency], 2)


def home_country(customer: str) -> str:
    countries = list(COUNTRIES)
    return countries[_h("country:" + customer) % len(countries)]
