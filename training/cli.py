"""`llasm-train`: base models, datasets, and the two LLaSM training stages."""

from __future__ import annotations

import importlib.util

import typer
from llasm.training import commands_models, commands_train
from llasm.training.datagen import cli as datagen_cli

app = typer.Typer(
    name="llasm-train",
    help="Build datasets and train LLaSM models: stage 1 (adaptor on ASR data), stage 2 (instructions).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help, as llasm-assistant's: help text is never read as markup
)


# Packages of the `train` extra. The training commands import them only when they run (start-up stays fast);
# without them installed the commands are left out, as the base install has no torch.
TRAIN_EXTRA = ("torch", "transformers", "peft", "accelerate")


def _have(packages: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


# Each command group lives next to the code it drives; they only add commands here. Their modules import
# nothing beyond the base install at module level.
commands_models.register(app)
if _have(TRAIN_EXTRA):
    commands_train.register(app)
datagen_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
