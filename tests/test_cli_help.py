"""`llasm-train` and `llasm-export` help: every option explains itself, each stage shows only its own options,
and both CLIs format help the same way (plain click help, as `llasm-assistant`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from llasm.export.cli import app as export_app
from llasm.training.cli import app as train_app
from typer.testing import CliRunner

APPS = {"llasm-train": train_app, "llasm-export": export_app}
STAGE1_ONLY = ("--objective", "--ctc-shortlist")
STAGE2_ONLY = ("--loss", "--llm-weights", "--lora-r", "--lora-targets", "--heard-cache")


def _commands(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def all_commands() -> list[tuple[str, Any]]:
    return [(" ".join(path), cmd) for name, app in APPS.items()
            for path, cmd in _commands(typer.main.get_command(app), (name,))]


def test_the_walk_finds_every_command():
    names = {name for name, _ in all_commands()}
    assert {"llasm-train stage1", "llasm-train stage2", "llasm-train eval", "llasm-train data asr",
            "llasm-train base-models", "llasm-export bundle", "llasm-export verify"} <= names


@pytest.mark.parametrize(("name", "cmd"), all_commands(), ids=[name for name, _ in all_commands()])
def test_every_option_and_argument_has_help(name: str, cmd: Any) -> None:
    missing = [p.name for p in cmd.params if p.param_type_name in ("option", "argument")
               and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{name}: no help for {missing}"
    assert (cmd.help or "").strip(), f"{name} has no description"


def _help(app: typer.Typer, *args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    return r.output


def test_each_stage_offers_only_its_own_options() -> None:
    stage1, stage2 = _help(train_app, "stage1"), _help(train_app, "stage2")
    for flag in STAGE2_ONLY:
        assert flag not in stage1 and flag in stage2, flag
    for flag in STAGE1_ONLY:
        assert flag in stage1 and flag not in stage2, flag
    for flag in ("--recipe", "--max-steps", "--init", "--state-cache"):
        assert flag in stage1 and flag in stage2, flag


@pytest.mark.parametrize("name", sorted(APPS))
def test_plain_help_in_both_clis(name: str) -> None:
    assert APPS[name].rich_markup_mode is None  # llasm-assistant's choice: help text is never read as markup
    out = _help(APPS[name])
    assert out.startswith("Usage:") and "╭" not in out  # click's plain layout, no rich panels
