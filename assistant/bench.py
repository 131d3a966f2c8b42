"""`llasm-assistant bench DIR`: latency of the spoken-question path over a folder of clips, against
llama.cpp's own decode speed on the same GGUF and against the cascade (Whisper transcribes with its own
decoder, then the same LLM answers the text), measured in the same run.

Writes `bench.json` (every clip's timings and the summaries) and `bench.png`, and prints a table.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError, load_audio, log_mel
from .hearing import byte_decoder

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3"}
WHISPER_PAD_FRAMES = 3000
PAIRS = 10  # spoken turns timed in turns with llama.cpp's own decode
KEYS = ("encoder_ms", "adaptor_ms", "decoder_ms", "rescore_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "audio_s")
# decoder_ms: Whisper's decoder writing the transcript (hearing mode whisper); rescore_ms: the LLM choosing among a ctc
# adaptor's transcripts (`--n-best` > 1) and how the sentence ends


class BenchError(RuntimeError):
    """The benchmark cannot run (no clips, no Whisper decoder for the cascade); one line with the fix."""


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory. `ru_maxrss` is not
    used there because it survives exec: a process started from a large one (pytest, `evaluate`) reports
    its parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux and BSD report KiB


def summarize(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "n": int(a.size)}


class WhisperCascadeASR:
    """CTranslate2 Whisper transcription with its own decoder on a 30-s window (greedy, or a beam of `beam_size`),
    as a cascade's first stage and as the reference the hearing is measured against. `language`: what a
    multilingual Whisper hears ("en", "zh", ...; "auto": the language it detects in each clip)."""

    def __init__(self, path: str | Path, *, n_threads: int = 1, compute_type: str = "int8", beam_size: int = 1,
                 device: str = "cpu", language: str = "en") -> None:
        import ctranslate2

        from .encoder import _ct2_compute_type

        self.model = ctranslate2.models.Whisper(str(path), device=device,
                                                compute_type=_ct2_compute_type(compute_type, device),
                                                intra_threads=n_threads)
        self.language = language if self.model.is_multilingual else None
        self.prompt = ["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>", "<|notimestamps|>"] \
            if self.language else ["<|startoftranscript|>", "<|notimestamps|>"]
        self._bytes = byte_decoder()
        self.beam_size = beam_size

    def transcribe(self, audio: np.ndarray, max_length: int = 128) -> str:
        import ctranslate2

        mel = log_mel(audio, n_mels=self.model.n_mels)[:, :WHISPER_PAD_FRAMES]
        if mel.shape[1] < WHISPER_PAD_FRAMES:  # Whisper's decoder is trained on 30-s windows (as faster-whisper)
            floor = mel.min()
            mel = np.pad(mel, ((0, 0), (0, WHISPER_PAD_FRAMES - mel.shape[1])), constant_values=floor)
        sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        prompt = list(self.prompt)
        if self.language == "auto":
            prompt[1] = self.model.detect_language(sv)[0][0][0]  # the likeliest language token, "<|zh|>"
        res = self.model.generate(sv, [prompt], beam_size=self.beam_size, max_length=max_length)[0]
        pieces = "".join(t for t in res.sequences[0] if not (t.startswith("<|") and t.endswith("|>")))
        return bytes(self._bytes.get(ch, 32) for ch in pieces).decode("utf-8", "replace").strip()


class LlamaCppReference:
    """llama.cpp's own greedy decode on the bundle's GGUF (and its LoRA, if it has one), timed with its perf
    counters (tokens/s)."""

    PROMPT = b"<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n"

    def __init__(self, gguf: Path, *, n_threads: int, lora: Path | None = None, device: str = "cpu") -> None:
        import llama_cpp

        from .llm import GPU_ALL_LAYERS

        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
                                   n_gpu_layers=GPU_ALL_LAYERS if device == "cuda" else 0,
                                   lora_path=str(lora) if lora else None, verbose=False)
        self.prompt = self.llm.tokenize(self.PROMPT, add_bos=False, special=True)

    def decode_speed(self, n_tokens: int = 64) -> float:
        self.llm.reset()
        self._lib.llama_perf_context_reset(self.llm.ctx)
        for i, _ in enumerate(self.llm.generate(self.prompt, temp=0.0, reset=True)):
            if i + 1 >= n_tokens:
                break
        perf = self._lib.llama_perf_context(self.llm.ctx)
        return perf.n_eval / (perf.t_eval_ms / 1e3) if perf.t_eval_ms > 0 else float("nan")

    def close(self) -> None:
        self.llm.close()


def interleaved_decode_ratio(engine: Any, ref: LlamaCppReference, clips: list[np.ndarray], *,
                             max_tokens: int) -> list[dict[str, float]]:
    """For each clip, a spoken turn's decode speed right next to llama.cpp's own on the same GGUF: load on a
    shared machine then moves both sides of each pair alike."""
    from .engine import GenerationOptions

    pairs = []
    for audio in clips:
        engine.new_chat()
        d = engine.ask(audio=audio, options=GenerationOptions(max_tokens=max_tokens))
        if d.timings["n_tokens"] < 2:
            continue
        llasm = d.timings["decode_tokens_per_s"]
        ref_tps = ref.decode_speed(max(16, max_tokens))
        pairs.append({"llasm": llasm, "llama_cpp": ref_tps, "ratio": llasm / ref_tps})
    return pairs


def run_bench(clips_dir: str | Path, *, bundle: str | Path | None = None, out: str | Path = "bench",
              max_tokens: int = 32, threads: int | None = None, repeats: int = 1,
              cascade: bool = True, hearing: Mapping[str, Any] | None = None, llm: str | Path | None = None,
              device: str | None = None) -> dict[str, Any]:
    """`hearing`: overrides of bundle.json's hearing (HearingOptions keys); llm, device: as Engine.load's."""
    from rich.console import Console

    from .engine import Engine, GenerationOptions

    console = Console(stderr=True)
    clips_dir, out = Path(clips_dir), Path(out)
    clips = _load_clips(clips_dir, console)
    t0 = time.perf_counter()
    engine = Engine.load(bundle, n_threads=threads, hearing=hearing, llm=llm, device=device)
    load_s = time.perf_counter() - t0
    opts = GenerationOptions(max_tokens=max_tokens)
    rows = _bench_llasm(engine, clips, opts, repeats, console)
    rss_mb = peak_rss_mb()
    summary = {k: summarize([r[k] for r in rows if not (k == "decode_tokens_per_s" and r["n_tokens"] < 2)])
               for k in (*KEYS, "audio_positions")}
    cascade_rows, cascade_summary = _bench_cascade(engine, clips, opts, repeats, console) if cascade else ([], {})

    gguf, n_threads = engine.lm.path, engine.n_threads  # the GGUF that answered (--llm's, else the bundle's)
    # llama.cpp's reference is loaded after the peak RSS is taken, then timed in turns with spoken turns
    # ... with the LoRA when the engine answers with it (bundle.json llm.lora_turns "all")
    ref = LlamaCppReference(gguf, n_threads=n_threads,
                            lora=engine.bundle.llm.lora if engine.answers_with_lora else None,
                            device=engine.devices.llm)
    try:
        pairs = interleaved_decode_ratio(engine, ref, [a for _, a in clips[:PAIRS]], max_tokens=max_tokens)
    finally:
        ref.close()
        engine.close()
    ref_tps = float(np.median([p["llama_cpp"] for p in pairs])) if pairs else float("nan")
    ratio = float(np.median([p["ratio"] for p in pairs])) if pairs else float("nan")

    result = {
        "bundle": str(engine.bundle.root), "llm": engine.llm_name, "devices": engine.devices.describe(),
        "clips": str(clips_dir), "n_clips": len(clips), "repeats": repeats,
        "threads": n_threads, "max_tokens": max_tokens, "load_s": load_s, "peak_rss_mb": rss_mb,
        "llasm": summary, "cascade": cascade_summary, "llama_cpp_decode_tokens_per_s": ref_tps,
        "decode_vs_llama_cpp": ratio, "decode_pairs": pairs,
        "rows": rows, "cascade_rows": cascade_rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot_bench(result, out / "bench.png")
    _print_table(result)
    console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


def _load_clips(clips_dir: Path, console: Any) -> list[tuple[Path, np.ndarray]]:
    """The folder's readable clips (an unreadable one is skipped with a line on the console)."""
    if not clips_dir.is_dir():
        raise BenchError(f"{clips_dir} is not a folder: pass a folder of wav/flac/ogg clips")
    paths = sorted(p for p in clips_dir.iterdir() if p.suffix.lower() in AUDIO_EXTS)
    clips: list[tuple[Path, np.ndarray]] = []
    for p in paths:
        try:
            clips.append((p, load_audio(p)))
        except AudioError as e:
            console.print(f"skipping {p.name}: {e}")
    if not clips:
        raise BenchError(f"no readable audio clips in {clips_dir}: add .wav/.flac/.ogg files")
    return clips


def _bench_llasm(engine: Any, clips: list[tuple[Path, np.ndarray]], opts: Any, repeats: int,
                 console: Any) -> list[dict[str, Any]]:
    """One row per spoken turn, each in a new conversation: the answer and where its time went."""
    from rich.progress import Progress

    rows: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("llasm", total=len(clips) * repeats)
        for _ in range(repeats):
            for p, audio in clips:
                engine.new_chat()
                d = engine.ask(audio=audio, options=opts)
                t = d.timings
                rows.append({"clip": p.name, "answer": d.answer, "heard": d.heard, "n_tokens": t["n_tokens"],
                             "encoder_ms": t["encoder_ms"] + t["features_ms"], "adaptor_ms": t["adaptor_ms"],
                             "decoder_ms": t.get("decoder_ms", 0.0), "rescore_ms": t.get("rescore_ms", 0.0), "prefill_ms": t["prefill_ms"], "ttft_ms": t["ttft_ms"],
                             "decode_tokens_per_s": t["decode_tokens_per_s"], "audio_s": t["audio_s"],
                             "audio_positions": t["audio_positions"]})
                prog.advance(task)
    return rows


def _bench_cascade(engine: Any, clips: list[tuple[Path, np.ndarray]], opts: Any, repeats: int,
                   console: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The baseline on the same clips: Whisper on a 30-s window, then the same LLM reads its transcript typed."""
    from rich.progress import Progress

    from .basemodels import resolve

    enc = engine.bundle.encoder
    whisper_dir = enc.path if enc.format == "ct2" and (enc.path / "vocabulary.txt").is_file() else \
        resolve("default:whisper-base")
    asr = WhisperCascadeASR(whisper_dir, n_threads=engine.n_threads, device=engine.devices.ct2)
    rows: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("cascade", total=len(clips) * repeats)
        for _ in range(repeats):
            for p, audio in clips:
                ta = time.perf_counter()
                text = asr.transcribe(audio)
                asr_ms = (time.perf_counter() - ta) * 1e3
                engine.new_chat()
                d = engine.ask(text=text or ".", options=opts)
                rows.append({"clip": p.name, "transcript": text, "answer": d.answer, "asr_ms": asr_ms,
                             "prefill_ms": d.timings["prefill_ms"],
                             "ttft_ms": asr_ms + d.timings["ttft_ms"],
                             "decode_tokens_per_s": d.timings["decode_tokens_per_s"]})
                prog.advance(task)
    summary: dict[str, Any] = {k: summarize([r[k] for r in rows])
                               for k in ("asr_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s")}
    summary["whisper"] = str(whisper_dir)
    return rows, summary


def _print_table(result: dict[str, Any]) -> None:
    """The medians and p90s on stdout."""
    from rich.console import Console
    from rich.table import Table

    summary, cascade_summary = result["llasm"], result["cascade"]
    table = Table(title=f"llasm bench: {result['llm']} ({result['devices']}), {result['n_clips']} clips x "
                        f"{result['repeats']}, {result['threads']} threads, "
                        f"peak RSS {result['peak_rss_mb']:.0f} MB (before the cascade)")
    table.add_column("metric")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    for k in (*KEYS, "audio_positions"):
        table.add_row(f"llasm {k}", f"{summary[k]['median']:.1f}", f"{summary[k]['p90']:.1f}")
    for k in ("asr_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s"):
        if k in cascade_summary:
            table.add_row(f"cascade {k}", f"{cascade_summary[k]['median']:.1f}", f"{cascade_summary[k]['p90']:.1f}")
    table.add_row("llama.cpp decode_tokens_per_s", f"{result['llama_cpp_decode_tokens_per_s']:.1f}", "")
    table.add_row(f"llasm decode / llama.cpp ({len(result['decode_pairs'])} interleaved pairs)",
                  f"{result['decode_vs_llama_cpp']:.2f}", "")
    Console().print(table)


def plot_bench(result: dict[str, Any], path: Path) -> None:
    """bench.png; with no matplotlib (the `plot` extra), one line says so and the numbers stand alone."""
    import sys

    from .plotting import PlotUnavailable, pyplot

    try:
        plt = pyplot()
    except PlotUnavailable as e:
        print(f"no {path.name}: {e}", file=sys.stderr)
        return

    s, c = result["llasm"], result.get("cascade") or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    stages = [("encoder_ms", "encoder"), ("decoder_ms", "Whisper decoder"), ("adaptor_ms", "adaptor"),
              ("rescore_ms", "LLM rescoring"), ("prefill_ms", "prefill")]
    left = 0.0
    for key, label in stages:
        v = s[key]["median"]
        if not v:  # no rescoring on the greedy path
            continue
        ax1.barh(["llasm"], [v], left=left, label=label)
        left += v
    if c:
        ax1.barh(["cascade"], [c["asr_ms"]["median"]], label="whisper transcribe")
        ax1.barh(["cascade"], [c["prefill_ms"]["median"]], left=c["asr_ms"]["median"], label="prefill (text)")
    names = ["llasm"] + (["cascade"] if c else [])
    p90 = [s["ttft_ms"]["p90"]] + ([c["ttft_ms"]["p90"]] if c else [])
    ax1.scatter(p90, names, marker="|", s=300, color="k", label="p90 time to first token")
    ax1.set_xlabel("ms, end of audio to first token (median stages)")
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title("time to first token")
    tps = [s["decode_tokens_per_s"]["median"], result["llama_cpp_decode_tokens_per_s"]]
    ax2.bar(["llasm engine", "llama.cpp own"], tps, color=["tab:blue", "tab:gray"])
    ax2.set_ylabel("decode tokens/s (median)")
    ax2.set_title(f"decode speed, {result['threads']} threads")
    fig.suptitle(f"{result['n_clips']} clips, peak RSS {result['peak_rss_mb']:.0f} MB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
