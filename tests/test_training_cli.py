"""`llasm-train` command line: start-up without torch, option parsing into TrainConfig (no training)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "accelerate")

_PROBE = """
import sys
args = sys.argv[1:]
sys.argv = ["llasm-train", *args]
import training.cli
if args:  # run the command as `llasm-train ARGS` would
    try:
        training.cli.main()
    except SystemExit as e:
        assert not e.code, e.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
assert not heavy, heavy
"""


@pytest.mark.parametrize("args", [[], ["--help"], ["stage1", "--help"], ["base-models", "--list", "--json"]])
def test_start_up_does_not_import_torch(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr


def test_training_commands_are_registered_and_report_errors_in_one_line() -> None:
    from training.cli import app

    r = CliRunner().invoke(app, ["stage1", "--recipe", "no-such-recipe"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: recipe no-such-recipe") and "\n" not in err, err
