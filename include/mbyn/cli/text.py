"""Text output shared by the commands: aligned tables (``mbyn sql``, ``mbyn status``)."""

from __future__ import annotations

from typing import Any


def format_table(columns: list[str], rows: list[tuple[Any, ...]], max_width: int = 60) -> str:
    """Rows as an aligned text table (cells cut at ``max_width``)."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else value.hex() if isinstance(value, bytes) else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
