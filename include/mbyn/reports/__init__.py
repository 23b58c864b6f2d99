"""Reports built from the warehouse: the daily sales report (``mbyn report``, DAG ``sales_report_daily``).

* ``data.py`` — one UTC day of the warehouse read into pandas frames, money converted to EUR, and the
  summary tables the report shows (each one is also written as a CSV extract).
* ``render.py`` — PNG charts (matplotlib, Agg), HTML pieces, atomic publication of a report folder.
* ``sales.py`` — ``build_sales_report(settings, day=None) -> Path``: everything above, written under
  ``<reports_dir>/sales/<date>/`` with ``<reports_dir>/latest.html`` pointing at the newest report.

Importing this package is cheap: pandas and matplotlib are imported by the functions that need them.
"""

from __future__ import annotations

from mbyn.reports.sales import build_sales_report

__all__ = ["build_sales_report"]
