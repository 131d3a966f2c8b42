"""`llasm-train stage1 | stage2 | eval | cache-states | cache-heard`: the LLaSM training commands."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import typer

# training.data / training.model / training.train import torch: they load inside the commands, so that
# `llasm-train --help`, `base-models` and `data` start without torch.


def errors() -> tuple[type[Exception], ...]:
    """The exceptions a training command reports as a one-line error."""
    from llasm.assistant.plotting import PlotUnavailable
    from llasm.training.data import DataError
    from llasm.training.model import ModelError
    from llasm.training.train import TrainError

    return (TrainError, DataError, ModelError, PlotUnavailable, FileNotFoundError)


def _fail(e: Exception) -> None:
    print(f"error: {e}", file=sys.stderr)
    raise typer.Exit(2)


def _run(stage: int, **opts: Any) -> None:
    from llasm.training.train import TrainConfig, train

    recipe = opts.pop("recipe")
    try:
        cfg = TrainConfig.from_recipe(recipe, stage=stage, **opts)
        final = train(cfg)
    except errors() as e:
        _fail(e)
    print(final)


def _shared_options(
    recipe: str = typer.Option("cpu", help="recipe name under training/recipes or a TOML path"),
    data: str = typer.Option(None, help="training manifest (.jsonl, .tsv, LibriSpeech/AISHELL dir)"),
    eval_data: str = typer.Option(None, help="held-out ASR manifest for loss + WER"),
    out: str = typer.Option(None, help="run directory (checkpoints, metrics.jsonl, loss.png)"),
    encoder: str = typer.Option(None, help="HF Whisper dir or default:whisper-base"),
    llm: str = typer.Option(None, help="HF LLaMA dir, a .gguf file, or default:smollm2"),
    adaptor: str = typer.Option(None, help="linear | ultravox | ctc"),
    stack: int = typer.Option(None, help="encoder frames stacked into one adaptor position (0: the adaptor "
                                         "type's default)"),
    hidden: int = typer.Option(None, help="adaptor hidden width (0: derived from the encoder and LLM widths)"),
    topk: int = typer.Option(None, help="ctc adaptor: tokens mixed per segment (0: the adaptor's default, or "
                                        "the --init checkpoint's)"),
    init: str = typer.Option(None, help="start from this checkpoint"),
    lr: float = typer.Option(None, help="peak learning rate (cosine decay after the warm-up)"),
    max_steps: int = typer.Option(None, help="optimizer steps to train"),
    batch_size: int = typer.Option(None, help="examples per batch"),
    grad_accum: int = typer.Option(None, help="batches whose gradients add up to one optimizer step"),
    warmup_steps: int = typer.Option(None, help="steps of linear learning-rate warm-up"),
    max_minutes: float = typer.Option(None, help="stop after this much training time (minutes), saving"),
    mixed_precision: str = typer.Option(None, help="auto | no | bf16 (auto: bf16 only where the hardware has it)"),
    gradient_checkpointing: bool = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing",
        help="recompute LLM activations in the backward pass (default: the recipe's setting)"),
    state_mask: float = typer.Option(None, help="SpecAugment on encoder states: fraction of frames and "
                                                "channels masked while training (e.g. 0.1)"),
    save_every: int = typer.Option(None, help="save a checkpoint every N steps (and at the end)"),
    keep_last: int = typer.Option(None, help="checkpoints kept; older ones are deleted"),
    eval_every: int = typer.Option(None, help="evaluate on --eval-data every N steps (and at the end)"),
    log_every: int = typer.Option(None, help="write a metrics.jsonl row every N steps"),
    state_cache: str = typer.Option(None, help="directory from `llasm-train cache-states`"),
    limit: int = typer.Option(None, help="use only the first N examples"),
    seed: int = typer.Option(None, help="random seed: data order, instruction wording, initial weights"),
) -> None: ...


def _stage1_options(
    objective: str = typer.Option(None, help="llm | ctc (stage 0: ctc adaptor without the LLM)"),
    ctc_shortlist: bool = typer.Option(
        None, "--ctc-shortlist/--no-ctc-shortlist",
        help="ctc objective: softmax over the training transcripts' tokens only, the shortlist a bundle scores"),
) -> None: ...


def _stage2_options(
    llm_weights: str = typer.Option(None, help="what trains in the LLM: full | lora"),
    lora_r: int = typer.Option(None, help="LoRA rank"),
    lora_targets: str = typer.Option(None, help="LoRA target layers, comma separated (default: all linear)"),
    loss: str = typer.Option(None, help="ce | kl"),
    heard_cache: str = typer.Option(None, help="over a frozen top-1 ctc adaptor: the file from "
                                               "`llasm-train cache-heard`, in place of audio and states"),
) -> None: ...


def register(app: typer.Typer) -> None:
    """Add stage1, stage2, eval, cache-states and cache-heard to `llasm-train`."""

    # Each stage shows only the options it takes; an option left out keeps the recipe's value.
    @app.command("stage1")
    def stage1(**kw: Any) -> None:
        """Stage 1: train the adaptor on ASR pairs (encoder and LLM frozen). Unset options keep the recipe's
        values."""
        _run(1, **kw)

    stage1.__signature__ = _sig(_shared_options, _stage1_options)  # type: ignore[attr-defined]

    @app.command("stage2")
    def stage2(**kw: Any) -> None:
        """Stage 2: adaptor + LLM (full or LoRA) on conversations; loss ce or kl. Unset options keep the
        recipe's values."""
        _run(2, **kw)

    stage2.__signature__ = _sig(_shared_options, _stage2_options)  # type: ignore[attr-defined]

    @app.command("eval")
    def eval_cmd(
        checkpoint: str = typer.Option(..., help="checkpoint directory"),
        data: str = typer.Option(..., help="ASR manifest"),
        max_examples: int = typer.Option(200, help="held-out examples scored for the loss"),
        n_generate: int = typer.Option(50, help="of those, examples transcribed greedily for the WER"),
        as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
    ) -> None:
        """Held-out loss and WER of greedy transcriptions."""
        from llasm.training.train import evaluate_checkpoint

        try:
            res = evaluate_checkpoint(checkpoint, data, max_examples=max_examples, n_generate=n_generate)
        except errors() as e:
            _fail(e)
        if as_json:
            print(json.dumps(res, ensure_ascii=False))
        else:
            print(f"loss {res['eval_loss']:.4f}  WER {res.get('wer', float('nan')):.4f}  ({res.get('example', '')})")

    @app.command("cache-states")
    def cache_cmd(
        data: str = typer.Option(..., help="manifest whose clips to encode"),
        out: str = typer.Option(..., help="cache directory"),
        encoder: str = typer.Option("default:whisper-base", help="HF Whisper dir, CT2 dir or default:NAME"),
        shard_size: int = typer.Option(512, help="clips per safetensors shard"),
        engine: str = typer.Option("torch", help="torch (HF encoder) | ct2 (CTranslate2, as bundles run it)"),
        dtype: str = typer.Option("int8", help="ct2 compute type: int8 | float32"),
    ) -> None:
        """Encode every clip once with the frozen encoder (sharded safetensors) for CPU training."""
        from llasm.training.train import cache_states

        try:
            print(cache_states(data, encoder, out, shard_size=shard_size, engine=engine, dtype=dtype))
        except errors() as e:
            _fail(e)


    @app.command("cache-heard")
    def cache_heard_cmd(
        init: str = typer.Option(..., help="ctc checkpoint whose adaptor listens (read as top-1 tokens)"),
        data: str = typer.Option(..., help="manifest(s) whose clips to hear, comma separated"),
        out: str = typer.Option(..., help="heard cache file to write (.json)"),
        state_cache: str = typer.Option(None, help="encoder states from `cache-states` (else the encoder runs)"),
        batch_size: int = typer.Option(16, help="clips heard per batch"),
    ) -> None:
        """What a frozen top-1 ctc adaptor hears in each clip, once: stage 2 then needs no audio (`--heard-cache`)."""
        from llasm.training.train import cache_heard

        try:
            print(cache_heard(init, data, out, state_cache=state_cache, batch_size=batch_size))
        except errors() as e:
            _fail(e)


def _sig(*fns: Any) -> inspect.Signature:
    """One signature of the parameters of `fns`, in order (a command built of option groups)."""
    # evaluated annotations (this module has `from __future__ import annotations`): typer then builds real
    # click types, e.g. a bool option pair that takes no value
    params = [p for fn in fns for p in inspect.signature(fn, eval_str=True).parameters.values()]
    return inspect.Signature(params)
