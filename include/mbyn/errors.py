"""Exception classes, one per failure mode a caller can act on."""

from __future__ import annotations


class MbynError(Exception):
    """Base class for every error mbyn raises on purpose."""


class ConfigError(MbynError):
    """A setting is missing or has a value that is not allowed."""


class ClusterError(MbynError):
    """The local Kafka cluster could not be installed, started or stopped."""


class CatalogError(MbynError):
    """The topic catalog is malformed or names an unknown topic."""


class ContractError(MbynError):
    """A record does not satisfy the envelope or its topic's JSON Schema."""


class SourceError(MbynError):
    """A producer's source (API, database, landing folder) failed in a way a retry will not fix."""


class StateError(MbynError):
    """A batch producer's durable state file (under var/state) is unreadable or corrupt."""


class BrokerUnavailableError(MbynError):
    """The Kafka broker could not be reached within the configured wait."""


class AuthenticationError(ConfigError):
    """The broker refused this client's SASL credentials (MBYN_KAFKA_USERNAME / MBYN_KAFKA_PASSWORD)."""


class AclError(MbynError):
    """The broker refused to create some ACLs (the client is not the admin principal, or the cluster is open)."""


class WarehouseError(MbynError):
    """The warehouse could not be reached or written."""


class SinkRejectedError(WarehouseError):
    """The database refused the rows themselves (a value too long, out of range, a constraint).

    Not an outage: retrying the same rows fails the same way. The consumer runtime re-runs the batch one
    record at a time and dead-letters the record(s) refused, with reason ``sink_rejected``.
    """

    reason = "sink_rejected"


class BuildError(MbynError):
    """A component in another language (Go, Java) could not be built: toolchain missing or compile failed."""


class PoisonRecordError(ContractError):
    """A consumed record can never be processed (not JSON, schema violation, oversize, null key ...).

    ``reason`` is a short machine-readable code (``not_json``, ``schema_violation``, ``oversize``, ``null_key``,
    ``null_value``, ``unknown_schema_version``, ...) stored with the dead letter; the consumer runtime routes
    the record to the ``dead-letters`` topic and carries on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SinkUnavailableError(MbynError):
    """A sink (warehouse, lake, ...) is temporarily unreachable: the runtime retries the batch, never commits it."""


class OrchestratorError(MbynError):
    """The local Airflow could not be started, reached or stopped."""


class PostgresError(MbynError):
    """The project-started PostgreSQL (`mbyn postgres ...`) could not be initialised, started or stopped."""


class PostgresNotInstalledError(PostgresError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


class PortInUseError(MbynError):
    """A port mbyn wants to listen on is taken by another program; the message names the setting to change."""


class ReportError(MbynError):
    """A report could not be built or written (bad date, reports folder not writable)."""


class ReplayError(MbynError):
    """A replay request cannot be carried out as asked (unknown topic or group, bad timestamp, no source)."""


class ConsumerGroupActiveError(ReplayError):
    """A consumer group's offsets cannot be moved while it has active members: stop its consumers first."""


class ActionError(MbynError):
    """An operator action (re-send quarantined records, send test messages) cannot be done as asked: nothing done."""
