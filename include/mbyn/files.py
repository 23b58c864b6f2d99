"""Atomic file replacement: readers see the old file or the new one, never a half-written one.

Every state file, report and secret store mbyn writes goes through here. The recipe: a temporary file in
the target's own folder (same file system, so the rename is atomic), write, flush, ``fsync``, ``chmod`` when
a mode is asked for, ``os.replace`` over the target, then ``fsync`` of the folder so the rename itself
survives a crash. On any failure the temporary file is removed and the old target is left as it was.

Temporary names start with ``.`` and end in ``.tmp``, so folder watchers that skip hidden or ``.tmp`` files
(the inventory landing folder, the lake) never pick one up.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new name in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` for a writer that wants a file name (pyarrow, ...).

    When the block ends normally the temporary file is fsynced, renamed over ``path`` and the folder
    fsynced; when it raises, the temporary file is removed and ``path`` is untouched. The folder must exist.
    """
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        yield temporary
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: Path | str, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), creating its folder if needed.

    ``mode`` (e.g. ``0o600`` for secrets) is set on the temporary file before the rename, so the content
    is never readable with wider permissions; the file is created with that mode from the start too.
    Without ``mode`` the new file gets the usual permissions (0666 less the umask), like ``write_text``.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temporary, mode)  # the umask may have narrowed the mode given to open
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_json(path: Path | str, document: Any, *, mode: int | None = None, **dumps: Any) -> None:
    """``atomic_write`` of ``json.dumps(document, **dumps)`` (e.g. ``indent=2``, ``sort_keys=True``).

    The document is serialised before anything is written, so one that is not JSON-serialisable raises
    ``TypeError``/``ValueError`` and leaves ``path`` and its folder as they were.
    """
    atomic_write(path, json.dumps(document, **dumps), mode=mode)
