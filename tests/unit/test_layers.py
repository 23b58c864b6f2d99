"""The package's layering holds: import-linter's contracts in pyproject.toml pass, they would catch an upward
import or a cycle, and in-house imports sit at the top of their modules (ruff's PLC0415)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mbyn.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
PACKAGE = PROJECT_ROOT / "include" / "mbyn"


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the ``mbyn`` package found in ``package_parent``, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(package_parent), "NO_COLOR": "1"}
    return subprocess.run([str(BIN / "lint-imports"), "--config", str(PROJECT_ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers_and_has_no_import_cycles() -> None:
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "mbyn", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "mbyn"


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    copy = copy_of_the_package(tmp_path)
    settings = copy / "settings.py"
    settings.write_text(settings.read_text() + "\nfrom mbyn.status import collect_status  # upward\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "mbyn.settings -> mbyn.status" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    copy = copy_of_the_package(tmp_path)
    envelope = copy / "contracts" / "envelope.py"  # the codec imports the envelope; the reverse closes a cycle
    envelope.write_text(envelope.read_text() + "\nimport mbyn.contracts.codec  # cycle\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "- .envelope -> .codec" in result.stdout  # the one import to remove, as import-linter words it


def test_imports_sit_at_the_top_of_modules_unless_a_comment_says_why() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "--select", "PLC0415,TID253", "--output-format", "concise",
                             "include", "plugins", "dags"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    unexplained = [f"{path.relative_to(PROJECT_ROOT)}:{n}" for folder in ("include", "plugins", "dags")
                   for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
                   for n, line in enumerate(path.read_text().splitlines(), 1)
                   if re.search(r"noqa:[^#]*\bPLC0415\b", line) and not re.search(r"\bPLC0415 - \S", line)]
    assert not unexplained, f"an import inside a function needs `# noqa: PLC0415 - <why>`: {unexplained}"
