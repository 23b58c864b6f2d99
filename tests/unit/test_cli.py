"""The CLI wing: worker options come from each module's ``OPTIONS``, imported only for the chosen worker; a
worker module that fails to import breaks only its own sub-command."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

from mbyn.cli.main import build_parser, main
from mbyn.options import CONSUME_LIMITS, CONSUMER_OPTIONS, RUN_LIMITS, Option, option
from mbyn.workers import WORKERS


def test_option_keeps_flags_and_add_argument_keywords() -> None:
    opt = option("--max-wait-ms", type=int, default=None, help="h")
    assert opt == Option(("--max-wait-ms",), {"type": int, "default": None, "help": "h"})
    assert dict(opt.kwargs) == {"type": int, "default": None, "help": "h"}
    with pytest.raises(TypeError):
        opt.kwargs["default"] = 1  # type: ignore[index]
    with pytest.raises(ValueError, match="at least one flag"):
        option()


def test_every_worker_module_declares_options_and_run_without_argparse() -> None:
    shared = {*RUN_LIMITS, *CONSUME_LIMITS}
    for worker in WORKERS.values():
        module = importlib.import_module(worker.module)
        options = getattr(module, "OPTIONS", ())
        assert all(isinstance(o, Option) for o in options), worker.name
        assert not shared & set(options), f"{worker.name} repeats an option the CLI adds to every {worker.kind}"
        assert callable(module.run) and not hasattr(module, "add_arguments"), worker.name
        assert worker.instance_id == any(o in CONSUMER_OPTIONS for o in options), worker.name


def test_parsing_imports_only_the_chosen_worker_module() -> None:
    code = textwrap.dedent("""
        import json, sys
        from mbyn.cli.main import build_parser
        from mbyn.workers import WORKERS
        modules = {w.module for w in WORKERS.values()}
        parser = build_parser()
        before = sorted(modules & set(sys.modules))
        args = parser.parse_args(["consume", "fraud-detector", "--velocity-window", "30"])
        after = sorted(modules & set(sys.modules))
        print(json.dumps({"before": before, "after": after, "window": args.velocity_window}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(result.stdout)
    assert seen["before"] == [], "building the parser imported worker modules: a broken one would break every command"
    assert seen["after"] == ["mbyn.consumers.fraud_detector"]
    assert seen["window"] == 30.0


def test_a_worker_module_that_fails_to_import_breaks_only_its_sub_command(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def import_module(name: str) -> ModuleType:
        if name == "mbyn.consumers.lag_monitor":
            raise ImportError("refused")
        return real_import(name)

    monkeypatch.setattr("mbyn.cli.workers.importlib.import_module", import_module)
    assert main(["consume", "lag-monitor"]) == 1
    assert capsys.readouterr().err.strip() == "mbyn: mbyn.consumers.lag_monitor cannot be imported: refused"
    assert callable(build_parser().parse_args(["consume", "fraud-detector", "--timeout", "5"]).handler)


def test_a_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as usage:
        main(["consume", "fraud-detector", "--no-such-option"])
    assert usage.value.code == 2
