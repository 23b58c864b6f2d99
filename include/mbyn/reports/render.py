"""Rendering helpers for reports: PNG charts, HTML fragments, and publishing a report folder atomically.

Charts use matplotlib's object API on the Agg canvas (``Figure`` + ``FigureCanvasAgg``): no pyplot global
state, no display, safe in Airflow workers and threads. Pages are plain HTML with inline CSS and
relative links to the PNG and CSV files beside them — nothing is fetched from elsewhere.

``publish_dir(staging, target)`` makes a report appear all at once: the files are written into a
temporary folder next to the target, which then replaces the old folder by two renames (old → aside,
new → target) and the old one is deleted. A reader sees the old report or the new one, never a half
written one; between the two renames (microseconds) the folder is briefly absent.
"""

from __future__ import annotations

import html
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1f2933; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d9e2ec; padding-bottom: 0.3rem; margin-top: 2rem; }
.meta { color: #627d98; } .note { background: #fffbea; border-left: 4px solid #f0b429; padding: 0.5rem 1rem; }
.empty { background: #f0f4f8; border-left: 4px solid #829ab1; padding: 1rem; font-size: 1.2rem; }
.ok { color: #2f8132; font-weight: 600; } .bad { color: #ba2525; font-weight: 600; }
.warn { color: #b44d12; font-weight: 600; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d9e2ec; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f0f4f8; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #d9e2ec; } .kpis { display: flex; gap: 1rem; flex-wrap: wrap; }
.kpi { background: #f0f4f8; padding: 0.6rem 1rem; border-radius: 6px; }
.kpi b { display: block; font-size: 1.4rem; }
"""


def _figure(width: float = 9.0, height: float = 3.6):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              horizontal: bool = False) -> Path:
    """A bar chart written as PNG to ``path``."""
    fig = _figure()
    ax = fig.add_subplot()
    if horizontal:
        ax.barh(list(labels)[::-1], list(values)[::-1], color="#2680c2")
        ax.set_xlabel(ylabel)
    else:
        ax.bar(list(labels), list(values), color="#2680c2")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    fig.savefig(path, format="png")
    return path


def line_chart(path: Path, series: dict[str, tuple[Sequence[object], Sequence[float]]], title: str,
               ylabel: str) -> Path:
    """One line per name of ``series`` (x values, y values), written as PNG to ``path``."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=".", label=name)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    fig.savefig(path, format="png")
    return path


def table(frame: pd.DataFrame, money: Sequence[str] = (), ratio: Sequence[str] = ()) -> str:
    """``frame`` as an HTML table (cells escaped); ``money`` columns with 2 decimals, ``ratio`` as %."""
    if frame.empty:
        return "<p class='meta'>(none)</p>"
    shown = frame.copy()
    for column in money:
        shown[column] = shown[column].map(lambda v: f"{float(v):,.2f}")
    for column in ratio:
        shown[column] = shown[column].map(lambda v: "" if v != v else f"{100 * float(v):.1f}%")  # NaN: no base
    return str(shown.to_html(index=False, escape=True, border=0))


def esc(text: object) -> str:
    return html.escape(str(text))


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML page."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def staging_dir(target: Path) -> Path:
    """A new, empty folder beside ``target`` (same file system, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish_dir(staging: Path, target: Path) -> Path:
    """Replace ``target`` with ``staging`` (see the module docstring); returns ``target``."""
    aside = None
    if target.exists():
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, aside)
    os.replace(staging, target)
    if aside is not None:
        shutil.rmtree(aside)
    return target
