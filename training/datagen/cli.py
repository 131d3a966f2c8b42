"""`llasm-train data asr|instructions|convert|mix|real`: build speech datasets offline (see docs/data.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from llasm.training.datagen.build import BuildOptions, DataGenError

data_app = typer.Typer(help="Build speech datasets offline with text-to-speech.", no_args_is_help=True)

_TTS_HELP = "TTS backends, comma separated: espeak, hibari"


_ACOUSTICS_HELP = ("held-out clips: unseen (effect families training never has), matched (training's rooms, "
                   "microphones and noises) or clean; the voices are held out either way")
_VOICES_HELP = ("espeak-ng voices: base (7 accents x 25 variants), wide (x 82 variants: espeak-ng's other "
                "human-sounding ones too), random (wide plus 60 generated accents and 300 generated speakers) or foreign "
                "(random plus 60 foreign accents: English through other languages' phoneme tables); "
                "held-out accents and variants stay out of training either way")


def _opts(seed: int, eval_fraction: float, tts: str, hibari_fraction: float, workers: int, quiet: bool,
          eval_acoustics: str = "unseen", voice_set: str = "base") -> BuildOptions:
    backends = tuple(b.strip() for b in tts.split(",") if b.strip())
    bad = [b for b in backends if b not in ("espeak", "hibari")]
    if bad or not backends:
        raise DataGenError(f"unknown TTS backend {bad[0] if bad else tts!r}: use espeak, hibari or espeak,hibari")
    if not 0 <= eval_fraction < 1:
        raise DataGenError(f"--eval-fraction must be in [0, 1), not {eval_fraction}")
    if workers < 1:
        raise DataGenError(f"--workers must be at least 1, not {workers}")
    from llasm.training.datagen.augment import EVAL_ACOUSTICS

    if eval_acoustics not in EVAL_ACOUSTICS:
        raise DataGenError(f"--eval-acoustics must be one of {', '.join(EVAL_ACOUSTICS)}, not {eval_acoustics!r}")
    from llasm.training.datagen.tts import VOICE_SETS

    if voice_set not in VOICE_SETS:
        raise DataGenError(f"--voice-set must be one of {', '.join(VOICE_SETS)}, not {voice_set!r}")
    return BuildOptions(seed=seed, eval_fraction=eval_fraction, backends=backends, hibari_fraction=hibari_fraction,
                        workers=workers, progress=not quiet, eval_acoustics=eval_acoustics, voice_set=voice_set)


def _run(fn, *args, **kwargs) -> None:  # noqa: ANN001
    try:
        fn(*args, **kwargs)
    except (DataGenError, ValueError, RuntimeError, OSError) as e:
        print(f"llasm-train data: {' '.join(str(e).split())}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("llasm-train data: interrupted; rerun the same command to resume", file=sys.stderr)
        raise typer.Exit(130) from None


@data_app.command("asr")
def asr_cmd(
    out: Path = typer.Option(..., "--out", help="dataset directory (created; a rerun resumes)"),
    count: int = typer.Option(..., "--count", help="number of clips (train + eval)"),
    seed: int = typer.Option(0, help="random seed: the same seed plans the same clips"),
    eval_fraction: float = typer.Option(0.05, help="fraction of clips in the held-out split"),
    zh_fraction: float = typer.Option(0.0, help="fraction of Mandarin clips (espeak-ng cmn voices)"),
    tts: str = typer.Option("espeak,hibari", help=_TTS_HELP),
    hibari_fraction: float = typer.Option(0.2, help="fraction of English training clips spoken by hibari"),
    workers: int = typer.Option(2, help="parallel worker processes"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or summary table"),
    eval_acoustics: str = typer.Option("unseen", help=_ACOUSTICS_HELP),
    voice_set: str = typer.Option("base", help=_VOICES_HELP),
) -> None:
    """ASR clips of natural English (and Mandarin) sentences: DIR/train.jsonl, DIR/eval.jsonl."""
    from llasm.training.datagen.build import build_asr

    def go() -> None:
        build_asr(out, count, _opts(seed, eval_fraction, tts, hibari_fraction, workers, quiet, eval_acoustics,
                                    voice_set),
                  zh_fraction=zh_fraction)

    _run(go)


@data_app.command("instructions")
def instructions_cmd(
    out: Path = typer.Option(..., "--out", help="dataset directory (created; a rerun resumes)"),
    count: int = typer.Option(..., "--count", help="number of conversations"),
    seed: int = typer.Option(0, help="random seed"),
    eval_fraction: float = typer.Option(0.05, help="fraction of conversations in the held-out split"),
    multi_turn: float = typer.Option(0.3, help="fraction of conversations with a spoken follow-up turn"),
    llm: str = typer.Option("default:smollm2", help="GGUF that writes the replies (path or default:smollm2)"),
    max_tokens: int = typer.Option(256, help="reply length limit in tokens"),
    replies: bool = typer.Option(True, "--replies/--no-replies",
                                 help="--no-replies: speak the requests only, no LLM (evaluation questions, "
                                      "or stage-1 speech)"),
    temperature: float = typer.Option(0.0, help="0 = greedy replies"),
    threads: int = typer.Option(1, help="llama.cpp threads for the replies (1 is fastest on a busy machine)"),
    tts: str = typer.Option("espeak,hibari", help=_TTS_HELP),
    hibari_fraction: float = typer.Option(0.2, help="fraction of training conversations spoken by hibari"),
    workers: int = typer.Option(2, help="parallel TTS worker processes"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or summary table"),
    eval_acoustics: str = typer.Option("unseen", help=_ACOUSTICS_HELP),
    voice_set: str = typer.Option("base", help=_VOICES_HELP),
    templates: str = typer.Option("base", help="request templates: base (the 96 of the first six kinds), "
                                               "everyday or general (other kinds, words and phrasings: "
                                               "docs/data.md)"),
) -> None:
    """Spoken requests answered by the text LLM (LLaVA-style conversations)."""
    from llasm.training.datagen.conversations import build_instructions
    from llasm.training.datagen.replies import ReplySettings

    def go() -> None:
        reply = ReplySettings(model=llm, max_tokens=max_tokens, temperature=temperature, seed=seed, threads=threads)
        build_instructions(out, count, _opts(seed, eval_fraction, tts, hibari_fraction, workers, quiet, eval_acoustics,
                                             voice_set),
                           multi_turn=multi_turn, reply=reply, replies=replies, templates=templates)

    _run(go)


@data_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="LLaVA / ShareGPT / Alpaca-style JSON or JSON-lines file"),
    out: Path = typer.Option(..., "--out", help="dataset directory (created; a rerun resumes)"),
    limit: int = typer.Option(None, help="use at most this many conversations"),
    max_chars: int = typer.Option(300, help="longer human turns (or code) stay typed instead of spoken"),
    seed: int = typer.Option(0, help="random seed"),
    eval_fraction: float = typer.Option(0.05, help="fraction of conversations in the held-out split"),
    tts: str = typer.Option("espeak,hibari", help=_TTS_HELP),
    hibari_fraction: float = typer.Option(0.2, help="fraction of training conversations spoken by hibari"),
    workers: int = typer.Option(2, help="parallel TTS worker processes"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or summary table"),
    eval_acoustics: str = typer.Option("unseen", help=_ACOUSTICS_HELP),
    voice_set: str = typer.Option("base", help=_VOICES_HELP),
) -> None:
    """Speak the human turns of your own text conversations (the paper's construction)."""
    from llasm.training.datagen.conversations import build_converted

    def go() -> None:
        build_converted(src, out, _opts(seed, eval_fraction, tts, hibari_fraction, workers, quiet, eval_acoustics,
                                        voice_set),
                        max_chars=max_chars, limit=limit)

    _run(go)


@data_app.command("mix")
def mix_cmd(
    out: Path = typer.Option(..., "--out", help="the stage-2 manifest to write (.jsonl)"),
    asr: str = typer.Option(..., "--asr", help="ASR manifest(s), comma separated: each clip becomes a transcription request"),
    conversations: str = typer.Option(None, "--conversations", help="spoken-question conversations (from `data instructions`)"),
    asr_count: int = typer.Option(None, "--asr-count", help="use this many ASR clips, drawn at random (default: all)"),
    system_prompt: str = typer.Option("You are a helpful assistant. Answer in one short sentence.",
                                      help="the bundle's system prompt, put first in every conversation"),
    transcribe_instruction: str = typer.Option("Repeat the sentence above word for word.",
                                               help="what the bundle's `--transcribe` turn asks after the audio"),
    seed: int = typer.Option(0, help="random seed (the clip draw and the order)"),
    heard_from: str = typer.Option(None, "--heard-from", help="a bundle with a ctc adaptor: transcription replies "
                                   "are what it hears, trained with cross-entropy (read back, not rewritten)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Stage-2 conversations in the bundle's own prompt: transcription requests and spoken questions."""
    from llasm.training.datagen.mix import build_mix

    def go() -> None:
        n = build_mix(out, asr=asr, conversations=conversations, asr_count=asr_count, system_prompt=system_prompt,
                      transcribe_instruction=transcribe_instruction, seed=seed, heard_bundle=heard_from,
                      progress=not quiet)
        print(f"{out}: {n['transcribe']} transcription requests + {n['questions']} spoken-question conversations")

    _run(go)


@data_app.command("real")
def real_cmd(
    out: Path = typer.Option(..., "--out", help="directory for dev.jsonl, test.jsonl and their clips"),
    pyannote_wheel: Path = typer.Option(None, "--pyannote-wheel",
                                        help="a downloaded pyannote.audio wheel (default: pip download it)"),
    f5_wheel: Path = typer.Option(None, "--f5-wheel", help="a downloaded f5-tts wheel (default: pip download it)"),
    quiet: bool = typer.Option(False, "--quiet", help="print nothing"),
) -> None:
    """Real recorded speech that packages ship, as a dev, a test and a Mandarin set for `llasm-assistant
    evaluate` (never for training; the recordings are listed in docs/data.md)."""
    from llasm.training.datagen.real import RealSpeechError, build_real_sets

    def go() -> None:
        try:
            build_real_sets(out, pyannote=pyannote_wheel, f5=f5_wheel, progress=not quiet)
        except RealSpeechError as e:
            raise DataGenError(str(e)) from None

    _run(go)


def register(app: typer.Typer) -> None:
    """Add the `data` command group to `llasm-train`."""
    app.add_typer(data_app, name="data")
