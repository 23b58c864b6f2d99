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


class BrokerUnavailableError(MbynError):
    """The Kafka broker could not be reached within the configured wait."""


class WarehouseError(MbynError):
    """The warehouse could not be reached or written."""
