"""docs/RELIABILITY.md names the tests that prove each row: every name it cites must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"`((?:unit|integration|e2e)/[\w/]+\.py)(?:::(\w+))?")


def test_every_cited_test_file_and_function_exists() -> None:
    text = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    cited = CITED.findall(text)
    assert len(cited) > 40
    missing = []
    for path, function in cited:
        source = ROOT / "tests" / path
        if not source.is_file():
            missing.append(path)
        elif function and not re.search(rf"^def {function}\(", source.read_text(encoding="utf-8"), re.MULTILINE):
            missing.append(f"{path}::{function}")
    assert not missing, f"docs/RELIABILITY.md cites tests that do not exist: {sorted(set(missing))}"
