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
import llasm.training.cli
from llasm import training
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
    from llasm.training.cli import app

    r = CliRunner().invoke(app, ["stage1", "--recipe", "no-such-recipe"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: recipe no-such-recipe") and "\n" not in err, err


@pytest.mark.parametrize(("recipe", "flag", "expected"), [
    ("cpu", [], False),  # absent: the recipe's value (cpu.toml leaves the default, off)
    ("paper", [], True),  # absent: the recipe's value (paper.toml turns it on)
    ("cpu", ["--gradient-checkpointing"], True),  # a bare flag turns it on
    ("paper", ["--no-gradient-checkpointing"], False),  # and the negative flag overrides a recipe's true
])
def test_gradient_checkpointing_flag_pair(monkeypatch: pytest.MonkeyPatch, recipe: str, flag: list[str],
                                          expected: bool) -> None:
    from llasm import training
    from llasm.training.cli import app

    seen: list[training.train.TrainConfig] = []
    monkeypatch.setattr(training.train, "train", lambda cfg: seen.append(cfg) or "final")  # parse only, no training
    r = CliRunner().invoke(app, ["stage1", "--recipe", recipe, *flag])
    assert r.exit_code == 0, r.stderr
    assert len(seen) == 1 and seen[0].gradient_checkpointing is expected and seen[0].stage == 1
    assert r.stdout.strip() == "final"


def test_options_reach_train_config_with_their_types(monkeypatch: pytest.MonkeyPatch) -> None:
    from llasm import training
    from llasm.training.cli import app

    seen: list[training.train.TrainConfig] = []
    monkeypatch.setattr(training.train, "train", lambda cfg: seen.append(cfg) or "final")
    r = CliRunner().invoke(app, ["stage2", "--recipe", "cpu", "--max-steps", "3", "--lr", "0.5", "--state-mask",
                                 "0.1", "--adaptor", "ctc", "--llm-weights", "full"])
    assert r.exit_code == 0, r.stderr
    (cfg,) = seen
    assert (cfg.stage, cfg.max_steps, cfg.lr, cfg.state_mask, cfg.adaptor, cfg.llm_weights) == (
        2, 3, 0.5, 0.1, "ctc", "full")
    assert type(cfg.max_steps) is int and type(cfg.lr) is float
    bad = CliRunner().invoke(app, ["stage1", "--max-steps", "many"])
    assert bad.exit_code == 2 and "--max-steps" in bad.stderr
