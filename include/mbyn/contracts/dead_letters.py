"""The dead-letter contract: what a record sent to ``dead-letters`` carries, written and read in one place.

A dead letter keeps the original record's key, value bytes and headers (minus any ``dlq.*`` header) and
adds these UTF-8 text headers — the same from Python, the Java payments service and the Go tracker:

=====================  ===========================================================================
``dlq.reason``         a reason code (``mbyn.contracts.codec.REASONS``)
``dlq.error_class``    the error's class name
``dlq.error_message``  the message, at most ``MAX_ERROR_MESSAGE`` characters
``dlq.traceback``      a short stack trace, at most ``MAX_TRACEBACK`` characters (may be empty)
``dlq.topic``          the original physical topic
``dlq.partition``      the original partition (decimal)
``dlq.offset``         the original offset (decimal)
``dlq.timestamp``      the original timestamp in ms since the epoch (decimal; empty when unknown)
``dlq.consumer_group`` the group that gave up on the record
=====================  ===========================================================================

A value too large to send on (a compressed record can reach a topic far beyond any producer's limit) is
replaced by null and ``dlq.value_dropped`` (``VALUE_DROPPED_HEADER``) holds its length and SHA-256
(``mbyn.consumers.dead_letter_sender``).

``build_headers`` writes them; ``parse_headers`` reads any record of ``dead-letters`` — including one a
stranger wrote by hand — into a ``DeadLetterInfo`` without ever raising: missing or unreadable fields are
``None`` and the reason is ``unknown``, so the quarantine can store anything that arrives.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The logical catalog topic of dead letters.
DEAD_LETTER_TOPIC = "dead-letters"
PREFIX = "dlq."
#: Added to a dead letter whose value was too large to send on (its length and SHA-256); the value is then null.
VALUE_DROPPED_HEADER = "dlq.value_dropped"
MAX_ERROR_MESSAGE = 2000
MAX_TRACEBACK = 4000
#: Longest values ``parse_headers`` returns, so a hand-written dead letter fits the quarantine's columns.
MAX_REASON = 64
MAX_ERROR_CLASS = 128
MAX_NAME = 255
#: The reason of a record on ``dead-letters`` that carries no ``dlq.reason`` (not written by a consumer).
UNKNOWN_REASON = "unknown"

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class DeadLetterInfo:
    """The ``dlq.*`` headers of one dead letter, read defensively (``None`` = missing or unreadable)."""

    reason: str
    error_class: str | None
    error_message: str | None
    traceback: str | None
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp_ms: int | None
    consumer_group: str | None

    @property
    def coordinates(self) -> tuple[str, int, int] | None:
        """(physical topic, partition, offset) of the original record, when all three are known."""
        if self.topic is None or self.partition is None or self.offset is None:
            return None
        return self.topic, self.partition, self.offset


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (the last one an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(error: BaseException) -> tuple[str, str, str]:
    """(class name, message, short traceback) of an error — never raises, whatever its ``__str__`` does."""
    try:
        message = str(error)
    except Exception as exc:  # noqa: BLE001 - a hostile __str__ must not stop the dead-lettering
        message = f"<unprintable {type(error).__name__}: {type(exc).__name__}>"
    try:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=6))
    except Exception:  # noqa: BLE001 - same reason
        trace = ""
    return type(error).__name__, shorten(message, MAX_ERROR_MESSAGE), _tail(trace, MAX_TRACEBACK)


def build_headers(original: Iterable[tuple[str, bytes | None]], *, reason: str, error_class: str,
                  error_message: str, traceback_text: str, topic: str, partition: int, offset: int,
                  timestamp_ms: int | None, consumer_group: str) -> list[tuple[str, bytes | None]]:
    """The headers of a dead letter: the original ones without ``dlq.*``, then the ``dlq.*`` fields."""
    headers = [(k, v) for k, v in original if not k.startswith(PREFIX)]
    headers += [
        ("dlq.reason", reason.encode()),
        ("dlq.error_class", error_class.encode("utf-8", errors="replace")),
        ("dlq.error_message", shorten(error_message, MAX_ERROR_MESSAGE).encode("utf-8", errors="replace")),
        ("dlq.traceback", _tail(traceback_text, MAX_TRACEBACK).encode("utf-8", errors="replace")),
        ("dlq.topic", topic.encode("utf-8", errors="replace")),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.timestamp", b"" if timestamp_ms is None else str(timestamp_ms).encode()),
        ("dlq.consumer_group", consumer_group.encode("utf-8", errors="replace")),
    ]
    return headers


def parse_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> DeadLetterInfo:
    """Read the ``dlq.*`` headers (the last of a repeated name wins); never raises."""
    found: dict[str, str] = {}
    for name, value in headers or ():
        if isinstance(name, str) and name.startswith(PREFIX):
            found[name] = _text(value)

    def text(name: str, limit: int | None = None) -> str | None:
        value = found.get(name)
        if not value:
            return None
        return value if limit is None else shorten(value, limit)

    return DeadLetterInfo(
        reason=text("dlq.reason", MAX_REASON) or UNKNOWN_REASON,
        error_class=text("dlq.error_class", MAX_ERROR_CLASS),
        error_message=text("dlq.error_message", MAX_ERROR_MESSAGE),
        traceback=text("dlq.traceback", MAX_TRACEBACK),
        topic=text("dlq.topic", MAX_NAME),
        partition=_number(found.get("dlq.partition"), 2**31 - 1),
        offset=_number(found.get("dlq.offset"), 2**63 - 1),
        timestamp_ms=_number(found.get("dlq.timestamp"), 253402300799999),  # up to 9999-12-31
        consumer_group=text("dlq.consumer_group", MAX_NAME),
    )


def original_headers(headers: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    """A dead letter's headers without the ``dlq.*`` ones: what the original record carried."""
    return [(k, v) for k, v in headers if not k.startswith(PREFIX)]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else value.decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


def _number(text: str | None, maximum: int) -> int | None:
    """A non-negative decimal that fits the column, else None."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if number <= maximum else None


def _tail(text: str, limit: int) -> str:
    """The end of a traceback (where the error was raised) when it is too long."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]
