"""``mbyn report [--date YYYY-MM-DD] [--out DIR]``: build the daily sales report and print where it is."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from mbyn.kafka.security import VIEWER
from mbyn.process import setup_logging
from mbyn.reports.sales import build_sales_report
from mbyn.settings import Settings


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _report(settings: Settings, args: argparse.Namespace) -> int:
    setup_logging()
    index = build_sales_report(settings, args.date, args.out)
    print(index)
    return 0


def register(sub: Any) -> None:
    """Add ``report``."""
    p = sub.add_parser("report", help="build the daily sales report (HTML + PNG charts + CSV) from the warehouse",
                       description="Build the sales report of one UTC day under <out>/sales/<date>/ and point "
                                   "<out>/latest.html at the newest report; prints the index.html path.")
    p.add_argument("--date", type=_date, default=None, help="UTC day YYYY-MM-DD (default: today)")
    p.add_argument("--out", type=Path, default=None, help="reports folder (default: MBYN_VAR_DIR/reports)")
    p.set_defaults(handler=_report, reads_pipeline=True, principal=VIEWER)
