"""Scan every file tracked by git for committed secrets (``make secrets-scan``; the test suite runs it too).

Uses Yelp's detect-secrets with its default plugins (private keys, cloud keys, tokens, high-entropy
strings, ``password = "..."`` keywords, credentials in URLs). A finding fails the scan; a false
positive is accepted on its line with ``# pragma: allowlist secret`` so every exception is visible
in review. ``tests/vectors/`` is not scanned: its files are hostile test records, random bytes in base64 by
design, with no room for a pragma on a JSON line. Usage: ``python scripts/secrets_scan.py [REPO_DIR]`` — exit 0 clean, 1 findings, 2 error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


#: Tracked folders whose content is synthetic high-entropy test data (see the module docstring).
NOT_SCANNED = ("tests/vectors/",)


def tracked_files(repo: Path) -> list[str]:
    result = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{repo} is not a git checkout: {result.stderr.decode(errors='replace').strip()}")
    return [name for name in result.stdout.decode().split("\0") if name and (repo / name).is_file()
            and not name.startswith(NOT_SCANNED)]


def scan(repo: Path) -> list[tuple[str, int, str]]:
    """Findings as (file, line, type) over the tracked files of ``repo``."""
    files = tracked_files(repo)
    if not files:
        return []
    tool = Path(sys.executable).with_name("detect-secrets")
    cmd = [str(tool) if tool.exists() else "detect-secrets", "scan", *files]
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"detect-secrets failed (exit {result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    return sorted((name, item["line_number"], item["type"])
                  for name, items in report["results"].items() for item in items)


def main(argv: list[str]) -> int:
    repo = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
    try:
        findings = scan(repo)
    except RuntimeError as exc:
        print(f"secrets scan: {exc}", file=sys.stderr)
        return 2
    for name, line, kind in findings:
        print(f"{name}:{line}: {kind}")
    if findings:
        print(f"secrets scan: {len(findings)} possible secret(s) in tracked files. Move real secrets to the "
              "environment or an Airflow connection; mark a false positive with `# pragma: allowlist secret`.",
              file=sys.stderr)
        return 1
    print(f"secrets scan: {len(tracked_files(repo))} tracked files, nothing found")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
