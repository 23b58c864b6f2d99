"""mbyn: an M×N streaming pipeline — producers → Apache Kafka → consumer groups, orchestrated by Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
