"""``mbyn.files``: whole-file replacement, the requested mode, and no temporary file left after a failure."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mbyn.files import atomic_write, atomic_write_json, replacing


def test_content_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "state" / "file.txt"  # the folder is created
    atomic_write(path, "a much longer first version\n")
    atomic_write(path, b"short")
    assert path.read_bytes() == b"short"
    assert os.listdir(path.parent) == ["file.txt"]


def test_text_is_written_as_utf8(tmp_path: Path) -> None:
    atomic_write(tmp_path / "t.txt", "café €")
    assert (tmp_path / "t.txt").read_bytes() == "café €".encode()


def test_mode_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0o644)
    atomic_write_json(path, {"user": "pw"}, mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"user": "pw"}


def test_without_mode_the_umask_decides_like_write_text(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    atomic_write(tmp_path / "atomic.txt", "x")
    assert (stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
            == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode))


def test_json_options_are_passed_to_dumps(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "s.json", {"b": 1, "a": 2}, indent=2, sort_keys=True)
    assert (tmp_path / "s.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}'


def test_a_document_that_is_not_json_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"n": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"n": object()})
    assert json.loads(path.read_text()) == {"n": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failure_while_writing_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    atomic_write(path, b"old")
    with pytest.raises(TypeError):
        atomic_write(path, 12345)  # type: ignore[arg-type]  # not bytes: the write itself fails
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_replacing_renames_on_success_and_cleans_up_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    with replacing(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".") and temporary.suffix == ".tmp"
        temporary.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(RuntimeError), replacing(path) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["part.parquet"]
