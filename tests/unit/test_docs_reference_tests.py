"""The docs name real things: the tests docs/RELIABILITY.md cites exist, and so does every path and ``mbyn.*``
name that Architecture.md, README.md and docs/*.md cite."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"`((?:unit|integration|e2e)/[\w/]+\.py)(?:::(\w+))?")
DOCS = [ROOT / "Architecture.md", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A repository path inside backticks (``include/mbyn/workers.py``, ``var/`` excluded: it is made at run time).
PATH = re.compile(r"`((?:include|tests|dags|plugins|bench|docker|docs|scripts|fuzz)/[^`\s]*)`")
#: A dotted name of the package inside backticks (``mbyn.kafka.clients.client_config(settings)``).
DOTTED = re.compile(r"`(mbyn(?:\.\w+)+)(?![\w/])")
PACKAGE = ROOT / "include"


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


def module_file(parts: list[str]) -> Path | None:
    """The source file of the module ``parts`` (``["mbyn", "kafka", "clients"]``), if there is one."""
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def top_level_names(source: Path) -> set[str]:
    """Names a module defines at its top level: functions, classes, assignments, imports."""
    names: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def dotted_name_exists(name: str) -> bool:
    """``mbyn.a.b`` is a module, or ``mbyn.a.NAME`` a module's top-level name (anything after it is not checked)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        source = module_file(parts[:cut])
        if source is not None:
            return cut == len(parts) or parts[cut] in top_level_names(source)
    return False


def test_every_cited_path_and_package_name_exists() -> None:
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for path in PATH.findall(line):
                if "<" in path or "*" in path:  # a pattern (``tests/integration/test_<name>.py``): its folder
                    path = re.split(r"[<*]", path)[0].rpartition("/")[0]
                if not (ROOT / path).exists():
                    missing.append(f"{doc.name}:{number}: {path}")
            missing += [f"{doc.name}:{number}: {name}" for name in DOTTED.findall(line) if not dotted_name_exists(name)]
    assert not missing, "the docs cite paths or names that do not exist:\n" + "\n".join(missing)
