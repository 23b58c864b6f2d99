"""Validated, immutable settings read once from the environment (prefix ``MBYN_``).

Every setting has a default that runs the embedded pipeline on one laptop. A wrong value fails
at start with the setting's environment variable name and what is allowed, never later.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mbyn.errors import ConfigError

#: The repository root (``include/mbyn/settings.py`` → three levels up).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = PROJECT_ROOT / "include"


class Settings(BaseSettings):
    """Everything mbyn can be configured with; see README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="MBYN_", frozen=True, extra="ignore")

    var_dir: Path = Field(
        default=PROJECT_ROOT / "var",
        description="Where all runtime state lives: broker data, warehouse, Airflow home, landing, reports, logs.",
    )
    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers. Unset: the cluster started by `mbyn kafka up`.",
    )
    kafka_nodes: Literal[1, 3] = Field(default=1, description="Local cluster size: 1 or 3 combined KRaft nodes.")
    kafka_port: int = Field(default=9092, ge=1024, le=65000, description="First broker port; node i uses port+i.")
    kafka_controller_port: int = Field(
        default=19092, ge=1024, le=65000, description="First KRaft controller port; node i uses port+i."
    )
    kafka_lib_dir: Path | None = Field(
        default=None, description="Where the Kafka jars are resolved. Unset: var/kafka/lib."
    )
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$", description="JVM heap per broker, e.g. 512m.")
    warehouse_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the warehouse. Unset: a SQLite file under var/.",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every catalog topic name (isolates tests or environments on one cluster).",
    )
    security: Literal["open", "scram"] = Field(default="open", description="Broker security mode.")

    @field_validator("var_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    # Derived locations -------------------------------------------------------------------

    @property
    def kafka_dir(self) -> Path:
        return self.var_dir / "kafka"

    @property
    def logs_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def state_dir(self) -> Path:
        return self.var_dir / "state"

    @property
    def landing_dir(self) -> Path:
        return self.var_dir / "landing"

    @property
    def reports_dir(self) -> Path:
        return self.var_dir / "reports"

    @property
    def lake_dir(self) -> Path:
        return self.var_dir / "lake"

    @property
    def airflow_home(self) -> Path:
        return self.var_dir / "airflow"

    @property
    def cluster_file(self) -> Path:
        """Written by `mbyn kafka up`: the bootstrap servers and pids of the running cluster."""
        return self.kafka_dir / "cluster.json"

    def bootstrap(self) -> str:
        """The bootstrap servers to use: the setting, else the running local cluster, else the default port."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        if self.cluster_file.exists():
            try:
                return str(json.loads(self.cluster_file.read_text())["bootstrap_servers"])
            except (ValueError, KeyError):
                pass
        return f"127.0.0.1:{self.kafka_port}"

    def warehouse(self) -> str:
        """The warehouse database URL (SQLAlchemy form)."""
        return self.warehouse_url or f"sqlite:///{self.var_dir / 'warehouse.db'}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the environment variable that is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "MBYN_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid setting(s):\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    return load_settings()
