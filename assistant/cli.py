"""`llasm-assistant`: the voice assistant's command line.

    llasm-assistant --file question.wav              # answer a recording, stream the reply to stdout
    llasm-assistant --file a.wav --file b.wav --json # one JSON object per input (answer + timings)
    llasm-assistant --text "What is the capital of France?"
    llasm-assistant --file a.wav --transcribe        # the words, not an answer
    llasm-assistant bench clips/                     # latency benchmark + cascade baseline
    llasm-assistant                                  # the TUI (also --mic, --mic-file, --no-tui, --speak ...)

Bad input gives one line on stderr and a non-zero exit; with several inputs the good ones are still answered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from .settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                  help="On-device LLaSM voice assistant: ask by voice (a file or the microphone) or by text.")

EXIT_BAD_INPUT = 1
EXIT_BAD_BUNDLE = 2
EXIT_INTERRUPTED = 130


def _err(msg: str) -> None:
    print("llasm-assistant: " + " ".join(str(msg).split()), file=sys.stderr, flush=True)


_HEARING_HELP = ("How the audio is heard: whisper (Whisper's own decoder writes the transcript the LLM reads), adaptor "
                 "(the bundle's trained adaptor hears) or embeddings (the adaptor's embeddings go into the LLM as they "
                 "are). Default: bundle.json's hearing.mode.")
_LANGUAGE_HELP = "The language Whisper hears (--hearing whisper): en, zh, ... or auto (default: bundle.json's, else en)."
# how a ctc bundle hears (assistant/ctcbeam.py, assistant/ngram.py): one-shot, bench and evaluate take these
_N_BEST_HELP = ("Hear with the LLM's help: a ctc bundle's beam keeps N transcripts and the plain LLM picks one (1 = greedy; default: bundle.json's hearing.n_best, else 1).")
_FUSION_HELP = ("Hear with the LLM inside the ctc beam search too (shallow fusion): its weight there (0 = off; default: bundle.json's hearing.fusion, else 0; hands-free 0.5).")
_LLM_HELP = ("Answer with this chat GGUF instead of the bundle's LLM (its own chat template and stop tokens; any LLM "
             "reads Whisper's transcript, the adaptor hearing modes need the LLM the bundle was trained for).")
_DEVICE_HELP = ("auto, cpu or cuda: where llama.cpp, CTranslate2 and ONNX Runtime run (auto: the GPU where each can use "
                "it; default auto).")
_NGRAM_FUSION_HELP = ("The bundle's hearing n-gram's weight inside the ctc beam search (0 = off; default: bundle.json's hearing.ngram_fusion, else 0).")

# flags that are also keys of the settings file; for --file/--text only these (not the hands-free ones) apply
_ONE_SHOT_SETTINGS = ("bundle", "llm", "device", "threads", "hearing", "language", "n_best", "fusion", "ngram_fusion", "system", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop")


def one_shot_settings(flags: dict[str, Any]) -> Settings:
    """Settings for --file/--text: built-in defaults < the settings file < the flags that were given (not None).

    A flag given on the command line wins even when it equals the built-in default."""
    from .settings import load_settings, merge_options

    return merge_options(load_settings(), {k: flags[k] for k in _ONE_SHOT_SETTINGS})


def _options(settings: Settings) -> Any:
    from .engine import GenerationOptions

    return GenerationOptions(**settings.generation_options())


@app.callback(invoke_without_command=True)
def main_command(
    ctx: typer.Context,
    file: list[Path] = typer.Option(None, "--file", "-f", help="Answer this audio file (wav/flac/ogg); "
                                    "repeatable, each file a fresh conversation."),
    text: list[str] = typer.Option(None, "--text", "-t", help="Answer this typed question; repeatable."),
    transcribe: bool = typer.Option(False, "--transcribe", help="Transcribe the audio instead of answering."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per input (answer, timings, "
                                  "heard) instead of streaming text."),
    bundle: Path = typer.Option(None, "--bundle", "-b", help="Bundle directory (default: the installed "
                                "default bundle, or $LLASM_BUNDLE)."),
    llm: Path = typer.Option(None, "--llm", help=_LLM_HELP),
    device: str = typer.Option(None, "--device", help=_DEVICE_HELP),
    # generation flags default to None (not given): the settings file decides, else the built-in default
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Longest reply, in tokens (default 256)."),
    temperature: float = typer.Option(None, "--temperature", min=0.0, help="0 = greedy decoding (default 0)."),
    top_p: float = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (default 1)."),
    top_k: int = typer.Option(None, "--top-k", min=0, help="Sample among the k most likely tokens (default 0 = off)."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (default 0)."),
    stop: list[str] = typer.Option(None, "--stop", help="Extra stop string; repeatable."),
    system: str = typer.Option(None, "--system", help="System prompt (default: the model's own)."),
    threads: int = typer.Option(None, "--threads", min=0, help="CPU threads (default 0 = one per physical core)."),
    hearing: str = typer.Option(None, "--hearing", help=_HEARING_HELP),
    language: str = typer.Option(None, "--language", help=_LANGUAGE_HELP),
    n_best: int = typer.Option(None, "--n-best", min=1, help=_N_BEST_HELP),
    fusion: float = typer.Option(None, "--fusion", min=0.0, help=_FUSION_HELP),
    ngram_fusion: float = typer.Option(None, "--ngram-fusion", min=0.0, help=_NGRAM_FUSION_HELP),
    mic: bool = typer.Option(False, "--mic", help="Listen through the microphone (hands-free)."),
    mic_file: Path = typer.Option(None, "--mic-file", help="Replay a recording through the microphone "
                                  "path (capture -> VAD) in real time."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Headless hands-free mode: answers on stdout."),
    speak: bool = typer.Option(False, "--speak", help="Answer aloud (TTS)."),
    ptt: bool = typer.Option(False, "--ptt", help="Push-to-talk instead of voice activity detection."),
    list_devices: bool = typer.Option(False, "--list-devices", help="List audio input devices and exit."),
    input_device: str = typer.Option(None, "--input-device", help="Input device index or name."),
    verify: bool = typer.Option(False, "--verify", help="Hash every file of the bundle and the base models it "
                                "uses again (the checksum cache ignored); print OK or FAILED per file, exit 2 "
                                "on a failure."),
) -> None:
    # A flag left out (None) takes its value from the settings file (assistant/settings.py), else the engine's
    # built-in default (GenerationOptions); a flag given always wins, also when it equals the built-in default.
    if ctx.invoked_subcommand is not None:
        return
    if verify:
        from .bundle import print_verification

        raise typer.Exit(0 if print_verification(bundle) else EXIT_BAD_BUNDLE)
    files, texts = list(file or []), list(text or [])
    handsfree = mic or mic_file is not None or no_tui or speak or ptt or list_devices or input_device is not None
    if handsfree or not (files or texts):
        options = {
            "mic": mic, "mic_file": mic_file, "no_tui": no_tui, "speak": speak, "ptt": ptt,
            "list_devices": list_devices, "input_device": input_device, "json": json_out, "bundle": bundle,
            "transcribe": transcribe, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
            "top_k": top_k, "seed": seed, "stop": list(stop or []), "system": system, "threads": threads,
            "n_best": n_best, "fusion": fusion, "ngram_fusion": ngram_fusion, "files": files, "texts": texts,
            "hearing": hearing, "language": language, "llm": llm, "device": device,
        }
        raise typer.Exit(handsfree_main(options))
    from .settings import SettingsError

    try:
        settings = one_shot_settings({"bundle": bundle, "threads": threads, "system": system, "max_tokens": max_tokens,
                                      "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                                      "stop": list(stop or []), "n_best": n_best, "fusion": fusion,
                                      "ngram_fusion": ngram_fusion, "hearing": hearing, "language": language,
                                      "llm": llm, "device": device})
    except SettingsError as e:
        _err(e)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    raise typer.Exit(run_inputs(files, texts, bundle=settings.bundle, transcribe=transcribe, json_out=json_out,
                                options=_options(settings), system=settings.system, threads=settings.threads or None,
                                hearing=settings.hearing_overrides(), llm=settings.llm, device=settings.device))


def handsfree_main(options: dict[str, Any]) -> int:
    """`llasm-assistant` without --file/--text: the TUI, or `--no-tui` headless hands-free mode. Imported here,
    not at the top, so --file/--text start without textual and the capture stack."""
    from . import handsfree
    from .capture import AudioSource, CaptureError, format_devices, list_input_devices
    from .settings import SettingsError, load_settings, merge_options

    try:
        settings = merge_options(load_settings(), dict(options))
    except SettingsError as e:
        return _fail(str(e))
    if options.get("list_devices"):
        try:
            print(format_devices(list_input_devices()))
        except CaptureError as e:
            return _fail(str(e))
        return 0
    problem = _handsfree_conflict(settings, options)
    if problem:
        return _fail(problem)
    source: AudioSource | None = None
    reopen = None
    try:
        if settings.mic or settings.mic_file:
            source, reopen = handsfree.make_source(settings)
            source.open()
    except (CaptureError, handsfree.HandsFreeError) as e:
        return _fail(str(e))
    if not settings.no_tui:
        from .tui.app import AssistantApp

        app_ = AssistantApp(settings=settings, source=source, reopen=reopen)
        app_.run()
        return int(app_.return_code or 0)
    assert source is not None
    try:
        engine = handsfree.load_engine(settings)
    except Exception as e:  # the engine's own errors carry one-line messages
        source.close()
        return _fail(f"cannot load the model: {e}", 1)
    speech = None
    if settings.speak:
        try:
            speech = handsfree.make_speech(settings)
        except Exception as e:
            source.close()
            return _fail(str(e))
    return handsfree.run_headless(engine, source, settings, reopen=reopen, speech=speech)


def _handsfree_conflict(settings: Settings, options: dict[str, Any]) -> str | None:
    """Why these hands-free options cannot run together (None: they can)."""
    if options.get("files") or options.get("texts"):
        return "--file/--text answer recordings or typed questions once; drop them to use --mic/--mic-file/the TUI"
    if settings.mic and settings.mic_file:
        return "--mic and --mic-file both given; pick one input"
    if settings.no_tui and not (settings.mic or settings.mic_file):
        return "--no-tui needs an audio input: add --mic or --mic-file PATH (or use --text/--file)"
    if settings.ptt and settings.mic_file:
        return "--ptt needs a live microphone; drop it with --mic-file (the file is segmented by VAD)"
    if settings.ptt and settings.no_tui and not sys.stdin.isatty():
        return "--ptt in --no-tui mode reads Enter presses from a terminal; run it in a terminal or drop --ptt"
    return None


def _fail(message: str, code: int = 2) -> int:
    print(f"llasm-assistant: {message}", file=sys.stderr, flush=True)
    return code


def run_inputs(files: list[Path], texts: list[str], *, bundle: Path | None, transcribe: bool, json_out: bool,
               options: Any, system: str | None = None, threads: int | None = None,
               hearing: dict[str, Any] | None = None, llm: str | Path | None = None, device: str | None = None) -> int:
    """Answer each file, then each text, each in a fresh conversation. Returns the exit status. A clip in
    which no speech is heard is a failed input ("heard nothing"), never an answer. hearing: the hearing flags
    given, by HearingOptions key."""
    from .audio import AudioError, load_audio
    from .bundle import BundleError
    from .devices import DeviceError
    from .engine import Done, Engine, EngineError, Heard, Token
    from .llm import LLMError

    if transcribe and texts:
        _err("--transcribe applies to audio: use it with --file, not --text")
        return EXIT_BAD_INPUT
    failed = False
    engine = None
    inputs: list[tuple[str, Path | None, str | None]] = [(str(f), f, None) for f in files]
    inputs += [(t, None, t) for t in texts]
    for label, path, question in inputs:
        audio = None
        if path is not None:
            try:
                audio = load_audio(path)
            except AudioError as e:
                _err(f"{path}: {e}")
                failed = True
                if json_out:
                    print(json.dumps(error_record(label, str(e)), ensure_ascii=False), flush=True)
                continue
        elif not question or not question.strip():
            _err("--text is empty: type a question")
            failed = True
            if json_out:
                print(json.dumps(error_record(label, "--text is empty: type a question")), flush=True)
            continue
        if engine is None:
            try:
                engine = Engine.load(bundle, n_threads=threads, hearing=hearing, expect_transcribe=transcribe, llm=llm,
                                     device=device)
            except (BundleError, LLMError, DeviceError) as e:
                _err(e)
                return EXIT_BAD_BUNDLE
        try:
            engine.new_chat(system)
            done = None
            for ev in engine.respond(audio=audio, text=question, transcribe=transcribe, options=options):
                if json_out:
                    if isinstance(ev, Done):
                        done = ev
                    continue
                if isinstance(ev, Heard) and sys.stderr.isatty():
                    print(f"(heard: {ev.text})", file=sys.stderr, flush=True)
                elif isinstance(ev, Token):
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                elif isinstance(ev, Done):
                    done = ev
            if done is not None and done.stop_reason == "silence":
                _err(f"{label}: heard nothing (no speech in the clip)")
                failed = True
                if json_out:
                    print(json.dumps(result_record(label, done, engine.llm_name), ensure_ascii=False), flush=True)
                continue
            if json_out and done is not None:
                print(json.dumps(result_record(label, done, engine.llm_name), ensure_ascii=False), flush=True)
            elif not json_out:
                sys.stdout.write("\n")
                sys.stdout.flush()
        except (AudioError, EngineError) as e:
            _err(f"{label}: {e}")
            failed = True
            if json_out:
                print(json.dumps(error_record(label, str(e)), ensure_ascii=False), flush=True)
        except KeyboardInterrupt:
            _err("interrupted")
            return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if failed else 0


def error_record(label: str, error: str) -> dict[str, Any]:
    """The --json line of an input that failed (unreadable audio, an empty --text, a turn too long): every
    input gets a record, so a consumer can match records to inputs; "error" holds the one-line reason."""
    return {"input": label, "answer": None, "heard": None, "n_tokens": 0, "stop_reason": "error", "error": error}


def result_record(label: str, done: Any, llm: str | None = None) -> dict[str, Any]:
    """One --json line; `llm`: the name of the LLM that answered (`Engine.llm_name`)."""
    t = done.timings
    return {
        "input": label,
        "answer": done.answer,
        "llm": llm,
        "encoder_ms": round(t.get("encoder_ms", 0.0) + t.get("features_ms", 0.0), 2),
        "adaptor_ms": round(t.get("adaptor_ms", 0.0), 2),
        "rescore_ms": round(t.get("rescore_ms", 0.0), 2),
        "decoder_ms": round(t.get("decoder_ms", 0.0), 2),
        "prefill_ms": round(t.get("prefill_ms", 0.0), 2),
        "ttft_ms": round(t.get("ttft_ms", 0.0), 2),
        "decode_tokens_per_s": round(t.get("decode_tokens_per_s", 0.0), 2),
        "audio_s": round(t.get("audio_s", 0.0), 3),
        "heard": done.heard,
        "n_tokens": int(t.get("n_tokens", 0)),
        "stop_reason": done.stop_reason,
    }


@app.command("bench")
def bench_command(
    clips: Path = typer.Argument(..., help="Folder of audio clips (wav/flac/ogg) to time."),
    bundle: Path = typer.Option(None, "--bundle", "-b", help="Bundle directory (default: the default bundle)."),
    out: Path = typer.Option(Path("bench"), "--out", "-o", help="Where to write bench.json and bench.png."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=2, help="Tokens generated per clip."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0 = one per physical core)."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Passes over the folder."),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="Also time Whisper transcription "
                                 "followed by the same LLM on the text."),
    hearing: str = typer.Option(None, "--hearing", help=_HEARING_HELP),
    language: str = typer.Option(None, "--language", help=_LANGUAGE_HELP),
    n_best: int = typer.Option(None, "--n-best", min=1, help=_N_BEST_HELP),
    fusion: float = typer.Option(None, "--fusion", min=0.0, help=_FUSION_HELP),
    ngram_fusion: float = typer.Option(None, "--ngram-fusion", min=0.0, help=_NGRAM_FUSION_HELP),
    llm: Path = typer.Option(None, "--llm", help=_LLM_HELP),
    device: str = typer.Option(None, "--device", help=_DEVICE_HELP),
) -> None:
    """Latency benchmark over a folder of clips: median and p90 of every timing, decode speed against
    llama.cpp's own, peak RSS, and the cascade baseline; a table, bench.json and bench.png."""
    from .bench import BenchError, run_bench
    from .bundle import BundleError
    from .devices import DeviceError
    from .llm import LLMError

    try:
        run_bench(clips, bundle=bundle, out=out, max_tokens=max_tokens, threads=threads or None,
                  repeats=repeats, cascade=cascade,
                  hearing=_hearing_overrides(hearing, language, n_best, fusion, ngram_fusion), llm=llm, device=device)
    except (BenchError, BundleError, LLMError, DeviceError) as e:
        _err(e)
        raise typer.Exit(EXIT_BAD_BUNDLE) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command("evaluate")
def evaluate_command(
    asr: Path = typer.Option(..., "--asr", help="Held-out ASR manifest (JSON lines with audio and text), e.g. the "
                             "real-speech dev set of `llasm-train data real`."),
    questions: Path = typer.Option(None, "--questions", help="Held-out spoken questions (conversations JSON lines)."),
    bundle: Path = typer.Option(None, "--bundle", "-b", help="Bundle directory (default: the default bundle)."),
    out: Path = typer.Option(Path("eval"), "--out", "-o", help="Where to write eval.json, eval.png, examples.md."),
    n_asr: int = typer.Option(100, "--n-asr", min=1, help="Clips to transcribe."),
    n_questions: int = typer.Option(50, "--n-questions", min=1, help="Spoken questions to answer."),
    max_tokens: int = typer.Option(48, "--max-tokens", min=2, help="Tokens per answer."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0 = one per physical core)."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Also benchmark the 2-6 s questions."),
    skip_asr: int = typer.Option(0, "--skip-asr", min=0, help="Leave out the first N clips (a dev part)."),
    skip_questions: int = typer.Option(0, "--skip-questions", min=0, help="Leave out the first N questions."),
    hearing: str = typer.Option(None, "--hearing", help="Hearing mode(s) to evaluate side by side, comma separated "
                                "(whisper, adaptor, embeddings; default: the bundle's)."),
    language: str = typer.Option(None, "--language", help=_LANGUAGE_HELP),
    whisper_beam: int = typer.Option(5, "--whisper-beam", min=1, help="Beam of the reference: Whisper's own decoder "
                                     "on a 30-s window."),
    n_best: int = typer.Option(None, "--n-best", min=1, help=_N_BEST_HELP),
    fusion: float = typer.Option(None, "--fusion", min=0.0, help=_FUSION_HELP),
    ngram_fusion: float = typer.Option(None, "--ngram-fusion", min=0.0, help=_NGRAM_FUSION_HELP),
    llm: Path = typer.Option(None, "--llm", help=_LLM_HELP),
    device: str = typer.Option(None, "--device", help=_DEVICE_HELP),
) -> None:
    """How well a bundle hears: WER through the LLM next to Whisper's, spoken-vs-typed answer agreement,
    and latency against the cascade, on held-out speech; a table, eval.json, eval.png and examples.md."""
    from .bench import BenchError
    from .bundle import BundleError
    from .devices import DeviceError
    from .evaluate import EvalError, evaluate
    from .llm import LLMError

    try:
        evaluate(bundle, asr=asr, questions=questions, out=out, n_asr=n_asr, n_questions=n_questions,
                 max_tokens=max_tokens, threads=threads or None, latency=latency,
                 skip_asr=skip_asr, skip_questions=skip_questions, whisper_beam=whisper_beam,
                 hearing=_hearing_overrides(None, language, n_best, fusion, ngram_fusion), llm=llm, device=device,
                 modes=[m.strip() for m in hearing.split(",") if m.strip()] if hearing else None)
    except (EvalError, BenchError, BundleError, LLMError, DeviceError) as e:
        _err(e)
        raise typer.Exit(EXIT_BAD_BUNDLE) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _hearing_overrides(mode: str | None, language: str | None, n_best: int | None, fusion: float | None,
                       ngram_fusion: float | None) -> dict[str, Any]:
    """The hearing flags that were given, by HearingOptions key (Engine.load's `hearing`)."""
    from .settings import Settings

    return Settings(hearing=mode, language=language, n_best=n_best, fusion=fusion,
                    ngram_fusion=ngram_fusion).hearing_overrides()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
