"""Validated, immutable settings read once from the environment (prefix ``MBYN_``).

Every setting has a default that runs the embedded pipeline on one laptop. A wrong value fails
at start with the setting's environment variable name and what is allowed, never later.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mbyn.errors import ConfigError

#: Roles and database of the project-started PostgreSQL (``mbyn.local.postgres``): the superuser only sets the
#: server up; the loader owns and writes the warehouse tables (workers, Airflow); the reader may only SELECT
#: (``mbyn sql``, ``mbyn status``, the pipeline view).
POSTGRES_SUPERUSER, POSTGRES_LOADER, POSTGRES_READER = "mbyn", "mbyn_loader", "mbyn_reader"
POSTGRES_DATABASE = "mbyn"


def postgres_password_name(role: str) -> str:
    """The name of the 0600 file holding ``role``'s password beside the project-started PostgreSQL's data."""
    return "password" if role == POSTGRES_SUPERUSER else f"password-{role}"

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
    warehouse_read_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a read-only role for `mbyn sql`, `mbyn status` and the pipeline view. "
                    "Unset: the local PostgreSQL's mbyn_reader when the warehouse is that server, else "
                    "MBYN_WAREHOUSE_URL (in a read-only transaction).",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every catalog topic name (isolates tests or environments on one cluster).",
    )
    security: Literal["open", "scram"] = Field(
        default="open",
        description="Broker security mode: open (PLAINTEXT, no ACLs) or scram (SASL/SCRAM-SHA-512 and ACLs, "
                    "one principal per service; see docs/RELIABILITY.md \"Secured mode\").",
    )
    kafka_username: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="SCRAM user this process authenticates as (security=scram); never read from a file.",
    )
    kafka_password: SecretStr | None = Field(
        default=None, description="Password of MBYN_KAFKA_USERNAME (security=scram); never logged.",
    )
    viewer_kafka_password: SecretStr | None = Field(
        default=None,
        description="Password of the read-only `viewer` principal the pipeline view reads as inside Airflow "
                    "(security=scram). Unset: from the local secret store of `mbyn kafka up --security scram`.",
    )
    postgres_port: int = Field(
        default=5433, ge=1024, le=65000,
        description="TCP port of the project-started PostgreSQL (`mbyn postgres up`, 127.0.0.1 only); "
                    "5433 so it does not clash with a system PostgreSQL on 5432.",
    )
    consumer_session_timeout_s: float = Field(
        default=45.0, ge=6, le=300,
        description="Consumer group session timeout (s): how long a crashed consumer keeps its partitions "
                    "before the group hands them to another copy (broker allows 6..300 by default).",
    )
    airflow_log_port: int = Field(
        default=8793, ge=1024, le=64999,
        description="Port of the local Airflow worker log server; the triggerer's log server uses the next one.",
    )
    airflow_port: int = Field(
        default=8080, ge=1024, le=65000,
        description="Port of the local Airflow API server and UI (`mbyn airflow up`); never the log-server ports.",
    )
    airflow_password: SecretStr | None = Field(
        default=None,
        description="Overrides the password of the `admin` user of the local Airflow (written before it starts). "
                    "Unset: a random one generated at first start, kept 0600 under var/airflow/ "
                    "(`mbyn airflow password`).",
    )
    fx_url: str = Field(
        default="https://www.ecb.europa.eu/stats/eurofxref/",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?/$",
        description="Base URL (http/https, ending in /) of the ECB files eurofxref-daily.xml and "
        "eurofxref-hist-90d.xml.",
    )
    fx_replay: bool = Field(
        default=False,
        description="Serve the recorded ECB responses (include/fixtures/ecb) over local HTTP instead of the ECB.",
    )
    fx_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout of the FX poller (s).")
    fx_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per FX request (5xx, timeouts, refused).")
    source_db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the shop's OLTP database (customers). Unset: a SQLite file under var/.",
    )
    customers_table: str = Field(
        default="customers",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Table the customers producer reads: a plain SQL identifier (letters, digits, _).",
    )
    landing_min_age_s: float = Field(
        default=2.0, ge=0, le=3600,
        description="A landing file is picked up only when unmodified for this many seconds.",
    )
    view_export: bool = Field(
        default=True,
        description="Whether the pipeline view may export a topic's records (JSON/CSV download; raw records "
                    "can hold customers' names and e-mails). false: the export routes answer 403 and the page "
                    "hides the links; browsing stays.",
    )

    @field_validator("var_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("airflow_port")
    @classmethod
    def _clear_of_log_servers(cls, value: int, info: ValidationInfo) -> int:
        log_port = info.data.get("airflow_log_port", 8793)
        if value in (log_port, log_port + 1):
            raise ValueError(f"{value} is taken by the Airflow log servers ({log_port} and {log_port + 1}); "
                             "choose another port")
        return value

    @field_validator("airflow_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("use at least 8 characters, or unset it for a random password")
        return value

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

    def local_postgres_password_file(self, role: str = POSTGRES_SUPERUSER) -> Path:
        """The 0600 file holding ``role``'s password on the project-started PostgreSQL (``var/postgres/``)."""
        return self.var_dir / "postgres" / postgres_password_name(role)

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

    def source_db(self) -> str:
        """The shop's source (OLTP) database URL (SQLAlchemy form)."""
        return self.source_db_url or f"sqlite:///{self.var_dir / 'shop.db'}"


_QUERY_PASSWORD = re.compile(r"(?i)([?&;](?:ssl)?password=)[^&;#]*")


def hide_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the one way mbyn shows a URL on screen or in a log.

    The ``user:password@`` part becomes ``user:***@`` (as SQLAlchemy's ``render_as_string(hide_password=True)``),
    a ``password=`` query value becomes ``password=***``; a URL without a password, or a string that is not a
    URL, is returned unchanged. The user information ends at the *last* ``@``, so a password with ``@``,
    ``/``, ``#``, ``?`` or ``[`` in it is masked whole (at worst more than the password is hidden, never less;
    SQLAlchemy's parser splits such a URL at its first ``@`` and would show the rest). The explicit ways
    to reveal a secret are `mbyn postgres url`, `mbyn airflow password` and `mbyn kafka credentials`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            rest = f"{user}:***@{host}"
        elif not sep:
            rest = f"***@{host}"  # not a URL: whatever precedes an @ may be a secret
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}{sep}{rest}")


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the environment variable that is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "MBYN_" + "_".join(str(p) for p in err["loc"]).upper()
            shown = "***" if "PASSWORD" in name else repr(err.get("input"))  # never echo a secret
            lines.append(f"{name}: {err['msg']} (got {shown})")
        raise ConfigError("invalid setting(s):\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    return load_settings()
