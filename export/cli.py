"""`llasm-export`: turn a training checkpoint into a laptop bundle, and check a bundle against its checkpoint.

    llasm-export bundle CHECKPOINT OUT [--encoder ct2|onnx] [--encoder-dtype int8|float16|float32]
                        [--llm-quant f16|q8_0|q4_k_m|q4_0] [--lora-adapter] [--mmproj]
    llasm-export verify BUNDLE [--checkpoint CKPT] [--audio FILE ...] [--json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from llasm.export.options import ExportOptions
from llasm.export.verify import Thresholds

_T = Thresholds()
_E = ExportOptions()  # the defaults of `bundle`

app = typer.Typer(
    name="llasm-export",
    help="Export llasm checkpoints to laptop bundles (CTranslate2/ONNX encoder, GGUF LLM) and verify them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help, as llasm-assistant's: help text is never read as markup
)


def _fail(msg: str) -> None:
    typer.echo("llasm-export: " + " ".join(str(msg).split()), err=True)
    raise typer.Exit(1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from llasm.assistant.adaptor import AdaptorError
    from llasm.assistant.audio import AudioError
    from llasm.assistant.basemodels import ModelResolutionError
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.llm import LLMError
    from llasm.export.errors import ExportError

    return (ExportError, BundleError, AdaptorError, AudioError, ModelResolutionError, LLMError)


@app.command()
def bundle(
    checkpoint: Path = typer.Argument(..., help="checkpoint directory (llasm.json) written by llasm-train"),
    out: Path = typer.Argument(..., help="bundle directory to create"),
    encoder: str = typer.Option(_E.encoder, help="encoder format: ct2 or onnx"),
    encoder_dtype: str = typer.Option(_E.encoder_dtype, help="encoder weights: int8, float16 or float32"),
    llm_quant: str = typer.Option(
        _E.llm_quant, help="LLM GGUF type: f16, q8_0, q4_k_m, q4_0 ... (default: reuse default:smollm2 when the "
                           "LLM is unchanged, else q8_0; q8_0 of an unchanged LLM: default:smollm2-q8_0)"),
    lora_adapter: bool = typer.Option(
        _E.lora_adapter, "--lora-adapter", help="keep a LoRA as lora.gguf over the base GGUF"),
    lora_turns: str = typer.Option(
        _E.lora_turns, help="with --lora-adapter: the turns the LoRA runs for, all or transcribe (answers from the "
                            "plain LLM)"),
    mmproj: bool = typer.Option(
        _E.mmproj, "--mmproj", help="ultravox adaptor: also write mmproj.gguf for llama.cpp mtmd"),
    reuse_defaults: bool = typer.Option(
        _E.reuse_defaults, help="reference default:... base models instead of copying them"),
    n_ctx: int = typer.Option(_E.n_ctx, help="llama.cpp context length recorded in bundle.json"),
    force: bool = typer.Option(
        _E.force, "--force", help="replace OUT if it is a bundle an export wrote (a folder with a checkpoint or "
                                  "any other file is refused)"),
    tokenizer_pre: str = typer.Option(
        _E.tokenizer_pre, help="llama.cpp pre-tokenizer name for a BPE tokenizer it cannot identify (e.g. gpt-2)"),
    system_prompt: str = typer.Option(
        _E.system_prompt, help="system prompt the assistant starts every chat with (default: the chat template's "
                               "own; \"\" for none)"),
    transcribe_instruction: str = typer.Option(
        _E.transcribe_instruction, help="what --transcribe asks the LLM after the audio (default: the "
                                        "checkpoint's, \"Transcribe the audio.\")"),
    ctc_topk: int = typer.Option(
        _E.ctc_topk, help="ctc adaptor: tokens mixed per segment at run time (1: the LLM reads the adaptor's "
                          "transcript as typed tokens)"),
    ctc_vocab: list[Path] = typer.Option(
        None, metavar="MANIFEST", help="ctc adaptor: score only the tokens of these JSON-lines manifests' transcripts (the training "
                   "data); repeatable"),
    hearing_n_best: int = typer.Option(
        _E.hearing_n_best, help="ctc adaptor with topk 1: transcripts the plain LLM rescores by default "
                                "(bundle.json's hearing.n_best; 1 = greedy)"),
    hearing_ngram: int = typer.Option(
        _E.hearing_ngram, help="ctc adaptor with topk 1: also count the --ctc-vocab transcripts into a token "
                               "n-gram of this order (1-4) for the beam search (bundle.json's hearing.ngram)"),
    hearing_mode: str = typer.Option(
        _E.hearing_mode, help="how the bundle hears by default (bundle.json's hearing.mode): whisper (Whisper's own "
                              "decoder; needs --encoder ct2), adaptor or embeddings; default: whisper for a "
                              "CTranslate2 Whisper encoder, else adaptor"),
    hearing_ngram_fusion: float = typer.Option(
        _E.hearing_ngram_fusion, help="the hearing n-gram's weight in the beam search by default (bundle.json's "
                                      "hearing.ngram_fusion; 0 = off)"),
) -> None:
    """Write a bundle (bundle.json with sha256 checksums) atomically: a failed export leaves nothing."""
    from llasm.export.bundle import export_bundle
    from rich.console import Console

    options = ExportOptions(encoder=encoder, encoder_dtype=encoder_dtype, llm_quant=llm_quant,
                            lora_adapter=lora_adapter, lora_turns=lora_turns, reuse_defaults=reuse_defaults,
                            mmproj=mmproj, n_ctx=n_ctx, force=force, tokenizer_pre=tokenizer_pre,
                            system_prompt=system_prompt, transcribe_instruction=transcribe_instruction,
                            ctc_topk=ctc_topk, ctc_vocab=tuple(ctc_vocab or ()), hearing_n_best=hearing_n_best,
                            hearing_ngram=hearing_ngram, hearing_ngram_fusion=hearing_ngram_fusion,
                            hearing_mode=hearing_mode)
    console = Console(stderr=True)
    try:
        with console.status("exporting") as status:
            report = export_bundle(checkpoint, out, options, progress=lambda m: (console.log(m), status.update(m)))
    except _known_errors() as e:
        _fail(str(e))
        return
    total = sum(report.sizes.values())
    typer.echo(f"wrote {report.out} ({total / 1e6:.1f} MB in {len(report.sizes)} files; "
               f"encoder {report.manifest['encoder']['path']}, LLM {report.manifest['llm']['path']} "
               f"[{report.manifest['llm']['quant']}])")


@app.command()
def verify(
    bundle_dir: Path = typer.Argument(..., metavar="BUNDLE", help="bundle directory"),
    checkpoint: Path = typer.Option(None, help="checkpoint (default: the one recorded in bundle.json)"),
    audio: list[Path] = typer.Option(None, help="audio files (default: two synthetic clips)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
    threads: int = typer.Option(0, help="threads for the bundle side (0: physical cores)"),
    encoder_rel: float = typer.Option(_T.encoder_rel, help="max encoder RMS difference / RMS(torch)"),
    adaptor_rel: float = typer.Option(_T.adaptor_rel, help="max adaptor RMS difference / RMS(torch)"),
    first_token: float = typer.Option(_T.first_token_agreement, help="min fraction of clips whose first token agrees"),
    top5: float = typer.Option(_T.top5_overlap, help="min mean overlap of the first-token top-5 sets"),
) -> None:
    """Run the same audio through the torch checkpoint and the bundle; exit 1 past the thresholds."""
    from llasm.export.verify import Thresholds, verify_bundle

    limits = Thresholds(encoder_rel=encoder_rel, adaptor_rel=adaptor_rel, first_token_agreement=first_token,
                        top5_overlap=top5)
    try:
        report = verify_bundle(bundle_dir, checkpoint, [str(a) for a in audio] if audio else None,
                               thresholds=limits, n_threads=threads or None)
    except _known_errors() as e:
        _fail(str(e))
        return
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{bundle_dir} vs {report.checkpoint}")
        for col in ("clip", "s", "enc max|d|", "enc rel RMS", "adaptor rel RMS", "1st token", "top-5"):
            t.add_column(col)
        for c in report.clips:
            t.add_row(c.name, f"{c.seconds:.1f}", f"{c.encoder_max_abs:.4f}", f"{c.encoder_rel:.4f}",
                      f"{c.adaptor_rel:.4f}", "same" if c.first_token_agrees else
                      f"{c.first_token_torch}!={c.first_token_bundle}", f"{c.top5_overlap:.0%}")
        Console().print(t)
    if not report.passed:
        _fail("verification failed: " + "; ".join(report.failures()))
    typer.echo("verification passed", err=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
