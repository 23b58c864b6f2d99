"""The secrets scan CI runs: the repository is clean, and a planted secret is caught."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("secrets_scan", ROOT / "scripts" / "secrets_scan.py")
assert spec and spec.loader
secrets_scan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(secrets_scan)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_repository_has_no_committed_secrets() -> None:
    assert secrets_scan.scan(ROOT) == []


def test_planted_secrets_are_found_and_allowlisted_lines_are_not(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    # Built at run time so this test file itself holds no secret-looking literal.
    key = "AKIA" + "Z7Q4XK2M9PLW3RTB"
    (tmp_path / "settings.py").write_text(
        f'AWS_ACCESS_KEY_ID = "{key}"\n'
        'db_password = "' + "hunter2-correct-horse" + '"\n'
        'other_password = "' + "battery-staple-42" + '"  # pragma: allowlist secret\n'
    )
    (tmp_path / "untracked.py").write_text(f'KEY = "{key}"\n')
    _git(tmp_path, "add", "settings.py")

    findings = secrets_scan.scan(tmp_path)

    assert ("settings.py", 1, "AWS Access Key") in findings
    assert any(name == "settings.py" and line == 2 for name, line, _ in findings)
    assert all(line != 3 for _, line, _ in findings)
    assert all(name != "untracked.py" for name, _, _ in findings)
    assert secrets_scan.main(["secrets_scan.py", str(tmp_path)]) == 1
