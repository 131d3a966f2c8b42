"""`llasm-train`: base models, datasets, and the two LLaSM training stages."""

from __future__ import annotations

import importlib.util

import typer

app = typer.Typer(
    name="llasm-train",
    help="Build datasets and train LLaSM models: stage 1 (adaptor on ASR data), stage 2 (instructions).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Packages of the `train` extra. The training commands import them only when they run (start-up stays fast);
# without them installed the commands are left out, as the base install has no torch.
TRAIN_EXTRA = ("torch", "transformers", "peft", "accelerate")


def _have(packages: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


def _register() -> None:
    # Each command group lives next to the code it drives; they only add commands here.
    from training import commands_models

    commands_models.register(app)
    for name in ("training.commands_train", "training.datagen.cli"):
        if name == "training.commands_train" and not _have(TRAIN_EXTRA):
            continue
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as e:  # a group whose optional dependency is missing
            if e.name and e.name.split(".")[0] in TRAIN_EXTRA:
                continue
            raise
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
