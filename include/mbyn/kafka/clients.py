"""What every Kafka client of mbyn starts from: its configuration, the admin client and the "broker answered" wait.

* **One client config.** ``client_config(settings)`` is the only place a librdkafka configuration starts
  from: the bootstrap servers, plus ``security.protocol=SASL_PLAINTEXT``, ``sasl.mechanism=SCRAM-SHA-512``
  and the username/password from ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD`` when secured
  (``MBYN_SECURITY=scram``, see ``mbyn.kafka.security``). Open mode returns the bootstrap servers only.
* **A refused login stops at once.** Clients that wait for a broker collect librdkafka's errors through
  ``error_cb``; ``raise_if_refused`` turns an authentication failure among them into AuthenticationError,
  because retrying cannot help.
* ``admin_client`` returns an AdminClient that has answered a metadata request (BrokerUnavailableError
  otherwise); ``wait_for_broker`` blocks, with back-off and one log line per attempt, until a broker answers
  — every producer and consumer calls it at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from mbyn.errors import AuthenticationError, BrokerUnavailableError, ConfigError
from mbyn.process import StopFlag, backoff_delays
from mbyn.settings import Settings, get_settings

log = logging.getLogger("mbyn.producer")  # the logger wait_for_broker always wrote to

MECHANISM = "SCRAM-SHA-512"


def client_config(settings: Settings) -> dict[str, Any]:
    """The start of every librdkafka configuration (producer, consumer, admin) for ``settings``.

    Open mode: ``{"bootstrap.servers": ...}`` only. Secured: plus SASL/SCRAM-SHA-512 with
    ``MBYN_KAFKA_USERNAME`` / ``MBYN_KAFKA_PASSWORD``; ConfigError naming both when either is missing.
    """
    config: dict[str, Any] = {"bootstrap.servers": settings.bootstrap()}
    if settings.security == "open":
        return config
    if not settings.kafka_username or settings.kafka_password is None:
        raise ConfigError("MBYN_SECURITY=scram needs MBYN_KAFKA_USERNAME and MBYN_KAFKA_PASSWORD (the SCRAM user "
                          "of this service and its password); for the local cluster print them with "
                          "`mbyn kafka credentials <service>`")
    config.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": MECHANISM,
                   "sasl.username": settings.kafka_username,
                   "sasl.password": settings.kafka_password.get_secret_value()})
    return config


def raise_if_refused(errors: Iterable[Any], settings: Settings, who: str) -> None:
    """Raise AuthenticationError if librdkafka reported (through ``error_cb``) that the broker refused our
    credentials: retrying cannot help, so callers waiting for a broker stop at once with a clear message."""
    for err in errors:
        if isinstance(err, KafkaError) and err.code() == KafkaError._AUTHENTICATION:
            raise AuthenticationError(
                f"{who}: the broker at {settings.bootstrap()} refused the credentials of "
                f"MBYN_KAFKA_USERNAME={settings.kafka_username!r} (wrong MBYN_KAFKA_PASSWORD, unknown user, or "
                f"MBYN_SECURITY={settings.security} does not match the cluster): {err.str()}")


class QuietLogger(logging.Logger):
    """Receives librdkafka's own log lines and keeps only those at ``level`` or above (default: errors)."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__("mbyn.librdkafka", level)


def admin_client(settings: Settings | None = None, timeout_s: float = 30.0) -> AdminClient:
    """An AdminClient for the configured cluster that has answered a metadata request."""
    settings = settings or get_settings()
    errors: list[Any] = []
    conf: dict[str, Any] = {**client_config(settings), "socket.timeout.ms": 10000, "error_cb": errors.append}
    client = AdminClient(conf)
    try:
        client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        client.poll(0)
        raise_if_refused(errors, settings, "admin client")
        raise BrokerUnavailableError(
            f"no broker answered at {settings.bootstrap()} within {timeout_s:.0f}s: {exc}") from None
    return client


def wait_for_broker(settings: Settings, who: str, max_wait_s: float = 300.0, stop: StopFlag | None = None) -> None:
    """Block until a broker answers, with back-off and one log line per attempt (no traceback flood)."""
    errors: list[Any] = []  # error_cb: a refused login is reported there, not in the exception
    # The probe's own log lines stay silent (poll() below would print one "Connection refused" per
    # reconnect): this loop writes one line per attempt, and a refused login arrives through error_cb.
    conf: dict[str, Any] = {**client_config(settings), "logger": QuietLogger(logging.CRITICAL + 1),
                            "error_cb": errors.append}
    client = AdminClient(conf)
    deadline = time.monotonic() + max_wait_s
    for attempt, delay in enumerate(backoff_delays(), start=1):
        try:
            client.list_topics(timeout=5)
            if attempt > 1:
                log.info("%s: broker %s is reachable now", who, settings.bootstrap())
            return
        except KafkaException:
            client.poll(0)
            raise_if_refused(errors, settings, who)
        if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
            raise BrokerUnavailableError(
                f"{who}: no Kafka broker at {settings.bootstrap()} after {max_wait_s:.0f}s "
                "(start one with `mbyn kafka up` or set MBYN_BOOTSTRAP_SERVERS)")
        log.warning("%s: broker %s unreachable (attempt %d), retrying in %.1fs",
                    who, settings.bootstrap(), attempt, delay)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
