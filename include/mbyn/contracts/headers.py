"""A record's headers as text: how sinks store the original headers (values base64) for a later replay."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable


def encode_headers(headers: Iterable[tuple[str, bytes | None]]) -> str:
    """Headers as JSON text (values base64) — how sinks store original headers for a later replay."""
    return json.dumps([[k, None if v is None else base64.b64encode(v).decode()] for k, v in headers])


def decode_headers(text: str | None) -> list[tuple[str, bytes | None]]:
    """The inverse of ``encode_headers``."""
    if not text:
        return []
    return [(k, None if v is None else base64.b64decode(v)) for k, v in json.loads(text)]
