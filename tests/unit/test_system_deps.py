"""``make system-deps`` (scripts/install-system-deps.sh) on a fresh machine, an equipped one and a broken one;
no test skips.

The script runs for real under bash with a PATH of stand-ins: ``dpkg-query`` answers "not installed" for the
packages a test names, ``apt-get`` and ``sudo`` write their command lines to a file (``apt-get install`` drops a
``kcat`` stand-in on the PATH, as the Debian package would), ``id`` says which user runs. The tests check what
would be installed and that a tool the tests need (kcat, Chromium) missing after the install stops ``make``
with the fix instead of failing deep inside ``make test``. The tests never skip: a missing Chromium fails the
browser tests (kcat's tests assert it is there), and no test file contains a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mbyn.settings import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "install-system-deps.sh"
PACKAGES = ["openjdk-17-jdk-headless", "maven", "postgresql", "kcat", "chromium", "chromium-driver"]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _run(tmp_path: Path, missing: list[str], uid: int = 0, sudo: bool = False,
         installs_kcat: bool = True) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the script with stand-ins; returns the result and the apt-get/sudo command lines it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    for tool in ("grep", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    installed = " ".join(p for p in PACKAGES if p not in missing)
    _stub(bin_dir, "dpkg-query", f'for p in {installed}; do [ "${{!#}}" = "$p" ] && '
                                 "{ echo -n 'install ok installed'; exit 0; }; done; exit 1")
    _stub(bin_dir, "id", f"echo {uid}")
    drop_kcat = f"{shutil.which('cp')} {bin_dir / 'id'} {bin_dir / 'kcat'}" if installs_kcat else ":"
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}; [ "$1" = install ] && {drop_kcat}; exit 0')
    if sudo:
        _stub(bin_dir, "sudo", f'echo "sudo $1" >> {calls}; "$@"')
    if "kcat" not in missing:
        _stub(bin_dir, "kcat", "exit 0")
    result = subprocess.run([shutil.which("bash") or "/bin/bash", str(SCRIPT)], capture_output=True, text=True,
                            env={"PATH": str(bin_dir)}, timeout=30, check=False)
    return result, calls.read_text().splitlines()


@pytest.fixture(autouse=True)
def _chromium_is_there() -> None:
    # The script checks /usr/bin/chromium by path; the suite needs it on this machine anyway.
    assert Path("/usr/bin/chromium").exists(), "Chromium is not installed: `make system-deps` installs it"


def test_a_fresh_machine_gets_every_package_in_one_apt_get(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, missing=PACKAGES)
    assert result.returncode == 0, result.stderr
    assert calls == ["apt-get update -q", "apt-get install -y -q --no-install-recommends " + " ".join(PACKAGES)]


def test_an_equipped_machine_installs_nothing_and_says_nothing(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, missing=[])
    assert (result.returncode, calls, result.stdout, result.stderr) == (0, [], "", "")


def test_a_user_with_sudo_installs_only_what_is_missing(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, missing=["kcat", "chromium-driver"], uid=1000, sudo=True)
    assert result.returncode == 0, result.stderr
    assert calls == ["sudo apt-get", "apt-get update -q", "sudo apt-get",
                     "apt-get install -y -q --no-install-recommends kcat chromium-driver"]


def test_without_root_or_sudo_it_names_the_packages_and_fails(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, missing=["kcat"], uid=1000)
    assert result.returncode == 1 and calls == []
    assert "please install these Debian packages" in result.stderr and "kcat" in result.stderr


def test_a_tool_still_missing_after_the_install_stops_make(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, missing=["kcat"], installs_kcat=False)
    assert result.returncode == 1
    assert "kcat is missing after the install" in result.stderr


def test_a_missing_chromium_fails_the_browser_tests_instead_of_skipping(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import browser

    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="make system-deps"), browser.chromium():
        pass


def test_no_test_skips() -> None:
    """A test that cannot run fails (with the fix in its message): CI must never go green on skipped tests."""
    skip = re.compile(r"pytest\.skip\b|mark\.skip\b|skipif|importorskip")
    found = [f"{path.relative_to(PROJECT_ROOT)}:{n}: {line.strip()}"
             for path in sorted((PROJECT_ROOT / "tests").rglob("*.py")) if path != Path(__file__)
             for n, line in enumerate(path.read_text().splitlines(), 1) if skip.search(line)]
    assert not found, "tests that skip:\n" + "\n".join(found)
