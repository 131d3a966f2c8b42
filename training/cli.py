"""`llasm-train`: base models, datasets, and the two LLaSM training stages."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="llasm-train",
    help="Build datasets and train LLaSM models: stage 1 (adaptor on ASR data), stage 2 (instructions).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each command group lives next to the code it drives; they only add commands here.
    from training import commands_models

    commands_models.register(app)
    for name in ("training.commands_train", "training.datagen.cli"):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as e:  # a group whose optional dependency is missing
            if e.name and e.name.split(".")[0] in {"torch", "transformers", "peft", "accelerate"}:
                continue
            raise
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
