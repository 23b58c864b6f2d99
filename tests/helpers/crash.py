"""Run ``mbyn`` in this process and SIGKILL it at a chosen moment: ``python -m tests.helpers.crash ...``.

A random kill rarely lands between two steps that must be atomic; these kill points do, every time:

* ``--kill-before-sql TABLE``: just before the Nth SQL statement (``--after N``, default 1) that writes
  ``TABLE`` (an INSERT/UPDATE sent through SQLAlchemy). Aimed at the last write of a batch's transaction
  (``kafka_offsets`` for the loaders, ``stream_watermarks`` for the sales-aggregator), the kill leaves that
  batch's earlier rows uncommitted in a correct sink — and committed in a sink that commits in two steps,
  which then writes them again after the restart.
* ``--kill-in module:Class.method``: just before the Nth call of that method, e.g. the fraud-detector's
  ``offsets_to_commit`` (its alerts are sent, its offsets not committed yet).

Everything after ``--`` is the mbyn command line, e.g.
``python -m tests.helpers.crash --kill-before-sql kafka_offsets --after 3 -- consume warehouse-loader``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mbyn.settings import PROJECT_ROOT
from tests.helpers.processes import reaped

#: The table an INSERT or UPDATE statement writes (names may be quoted).
_WRITE = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


def _killer(after: int) -> Callable[[], None]:
    """A function that SIGKILLs this process on its ``after``-th call."""
    calls = 0

    def hit() -> None:
        nonlocal calls
        calls += 1
        if calls >= after:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


def kill_before_sql(table: str, after: int) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    hit = _killer(after)

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        written = _WRITE.match(statement)
        if written is not None and written.group(1) == table:
            hit()

    event.listen(Engine, "before_cursor_execute", before)


def kill_in(target: str, after: int) -> None:
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    hit = _killer(after)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def run_until_killed(kill: Sequence[str], mbyn_args: Sequence[str], log: Path, timeout: float = 120) -> None:
    """Run ``mbyn MBYN_ARGS`` under this module's kill point ``KILL`` and wait for the SIGKILL (stderr → ``log``).

    Fails the test if the process ends any other way (give it ``--idle-exit`` so a kill point never reached
    ends it instead of hanging). The environment (``MBYN_*``) is inherited.
    """
    with log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.crash", *kill, "--", *mbyn_args],
                                cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=err)
    with reaped(proc):
        code = proc.wait(timeout)
    assert code == -signal.SIGKILL, f"expected a SIGKILL, exit status {code}:\n{log.read_text()[-3000:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.crash")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--kill-before-sql", metavar="TABLE")
    where.add_argument("--kill-in", metavar="MODULE:QUALNAME")
    parser.add_argument("--after", type=int, default=1, help="kill at the Nth hit (default 1)")
    parser.add_argument("mbyn", nargs=argparse.REMAINDER, help="-- then the mbyn arguments")
    args = parser.parse_args(argv)
    command = args.mbyn[1:] if args.mbyn[:1] == ["--"] else args.mbyn
    if args.kill_before_sql:
        kill_before_sql(args.kill_before_sql, args.after)
    else:
        kill_in(args.kill_in, args.after)
    from mbyn.cli.main import main as mbyn_main

    return mbyn_main(command)


if __name__ == "__main__":
    sys.exit(main())
