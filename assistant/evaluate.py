"""`llasm-assistant evaluate`: how well a bundle hears, on held-out speech.

Three measurements, in one run and on one machine:

- **transcription WER** through the LLM (the stage-1 instruction, `--transcribe`), next to the WER of the
  adaptor's own transcript (`ctc` adaptors) and of Whisper's own decoder (CTranslate2) on the same clips;
- **spoken-question agreement**: the answer to the spoken question against the answer the same bundle gives
  to the typed transcript (greedy both times), exact and by word similarity, with examples side by side;
- **latency** on the 2–6 s questions: `assistant.bench` over those clips (time to first token, decode speed
  against llama.cpp's own, the engine's peak RSS, and the Whisper -> LLM cascade measured in the same run), in a
  fresh process so the RSS is the engine's alone.

Writes `eval.json`, `eval.png`, `examples.md` and the bench files into OUT, and prints a table.
"""

from __future__ import annotations

import difflib
import json
import math
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audio import AudioError, load_audio
from .textmetrics import edit_distance, normalize, wer  # noqa: F401 - edit_distance: evaluate's public API

AGREE_SIMILARITY = 0.8  # word-sequence similarity at which two answers count as the same answer
LATENCY_SECONDS = (2.0, 6.0)  # the question lengths the latency targets are stated for
REFERENCE_BEAM = 5  # Whisper's own decoder as its users run it: a 30-s window, beam 5


class EvalError(RuntimeError):
    """A bad evaluation setup; the message names the fix."""


# ---- text metrics (one WER for training, evaluate and the docs: assistant/textmetrics.py) ------------------------
def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalize(a), normalize(b)).ratio()


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n: how far a rate measured on n questions may be from the
    true one (40 questions at 5 % give 1-17 %)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)  # exact at the ends (rounding leaves ~1e-18)


# ---- data ----------------------------------------------------------------------------------------------
@dataclass
class Clip:
    audio: Path
    text: str  # what is said


def read_asr(manifest: Path, limit: int, skip: int = 0) -> list[Clip]:
    return _read(manifest, limit, kind="asr", skip=skip)


def read_questions(manifest: Path, limit: int, skip: int = 0) -> list[Clip]:
    return _read(manifest, limit, kind="questions", skip=skip)


def bench_in_fresh_process(clips: Path, *, bundle: str | Path | None, out: Path, threads: int | None,
                           hearing: Mapping[str, Any] | None = None, llm: str | Path | None = None,
                           device: str | None = None) -> dict[str, Any]:
    """`llasm-assistant bench` on `clips` in a new Python process, so its peak RSS is the engine's own (this
    process also holds the Whisper cascade and the evaluation's engine); returns its bench.json. `hearing`:
    the hearing overrides (mode, language, n_best, fusion, ngram_fusion), passed as the same flags."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "llasm.assistant.cli", "bench", str(clips), "--out", str(out), "--max-tokens", "32"]
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    if threads:
        cmd += ["--threads", str(threads)]
    flags = {"mode": "--hearing", "language": "--language", "n_best": "--n-best", "fusion": "--fusion",
             "ngram_fusion": "--ngram-fusion", "llm": "--llm", "device": "--device"}
    for k, v in {**(hearing or {}), "llm": llm, "device": device}.items():
        if v is not None:
            cmd += [flags[k], str(v)]
    (out / "bench.json").unlink(missing_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "bench.json").is_file():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise EvalError(f"the latency benchmark failed ({lines[-1] if lines else f'exit code {proc.returncode}'})")
    return json.loads((out / "bench.json").read_text())


def jsonl_rows(path: Path, error: type[Exception], hint: str) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file (blank lines skipped); an unreadable file or line raises `error`
    with a one-line message ending in `hint`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror}): {hint}") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise error(f"{path}:{n} is not JSON: {hint}") from None


def _read(manifest: Path, limit: int, *, kind: str, skip: int = 0) -> list[Clip]:
    """The first `limit` clips after skipping `skip` (e.g. a dev part used to choose settings)."""
    out: list[Clip] = []
    seen = 0
    for row in jsonl_rows(manifest, EvalError, "give a JSON-lines manifest"):
        clip = None
        if kind == "asr" and "audio" in row:
            clip = Clip(manifest.parent / row["audio"], str(row.get("text", "")))
        elif kind == "questions":
            turn = next((t for t in row.get("conversations", []) if t.get("audio")), None)
            if turn is not None:
                clip = Clip(manifest.parent / turn["audio"], str(turn.get("value", "")))
        if clip is not None:
            seen += 1
            if seen > skip:
                out.append(clip)
        if len(out) >= limit:
            break
    if not out and skip and seen:
        raise EvalError(f"{manifest} has {seen} {'clips' if kind == 'asr' else 'spoken questions'}, not more "
                        f"than the {skip} to skip: skip fewer")
    if not out:
        raise EvalError(f"{manifest} has no {'clips' if kind == 'asr' else 'spoken questions'}: "
                        f"build one with `llasm-train data {'asr' if kind == 'asr' else 'instructions'}`")
    return out


# ---- the evaluation ----------------------------------------------------------------------------------------
def evaluate(bundle: str | Path | None, *, asr: Path, out: Path, questions: Path | None = None, n_asr: int = 100,
             n_questions: int = 50, max_tokens: int = 48, threads: int | None = None,
             latency: bool = True, skip_asr: int = 0, skip_questions: int = 0,
             hearing: Mapping[str, Any] | None = None, modes: Sequence[str] | None = None,
             whisper_beam: int = REFERENCE_BEAM, llm: str | Path | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Evaluate a bundle's hearing in each of `modes` (default: the bundle's own; see `HearingOptions.mode`)
    on the ASR clips (and spoken questions, if given), beside Whisper's own decoder on a 30-s window with beam
    `whisper_beam` on the same clips. `hearing`: overrides of bundle.json's hearing (HearingOptions keys); llm,
    device: as Engine.load's."""
    from rich.console import Console
    from rich.progress import Progress

    from .engine import Engine

    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    asr_clips = read_asr(asr, n_asr, skip_asr)
    q_clips = read_questions(questions, n_questions, skip_questions) if questions is not None else []
    overrides = dict(hearing or {})
    engine = Engine.load(bundle, n_threads=threads, hearing=overrides, llm=llm, device=device)
    modes = list(modes or [engine.hearing.mode])
    audio = _read_audio([*asr_clips, *q_clips], console)
    asr_clips = [c for c in asr_clips if c.audio in audio]
    q_clips = [c for c in q_clips if c.audio in audio]
    if not asr_clips:
        raise EvalError("no readable clips to evaluate: check the manifests' audio paths")
    result: dict[str, Any] = {"bundle": str(engine.bundle.root), "llm": engine.llm_name,
                              "devices": engine.devices.describe(), "asr_manifest": str(asr),
                              "questions_manifest": str(questions) if questions else None,
                              "n_asr": len(asr_clips), "n_questions": len(q_clips), "modes": {}}
    with Progress(console=console, transient=True) as prog:
        ref = _whisper_reference(engine, asr_clips, q_clips, audio, whisper_beam, prog)
        refs = [c.text for c in asr_clips]
        result["whisper"] = {"wer": wer(refs, [ref[c.audio][0] for c in asr_clips]), "beam": whisper_beam,
                             "window_s": 30, "ms_median": statistics.median(ref[c.audio][1] for c in asr_clips)}
        hear = _ModeRun(engine, audio, ref, max_tokens, prog)
        for mode in modes:
            engine.set_mode(mode, overrides.get("language"))
            result["modes"][mode] = hear.metrics(mode, asr_clips, q_clips, result["whisper"]["wer"])
    result["mode"] = modes[0]
    result |= {k: v for k, v in result["modes"][modes[0]].items()}  # the first mode's figures at the top level
    engine.close()
    if latency:
        result["latency"] = _latency(bundle, out, threads, overrides | {"mode": modes[0]}, [*q_clips, *asr_clips],
                                     audio, llm=llm, device=device)
    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _examples(result, out / "examples.md")
    _plot(result, out / "eval.png")
    _table(result)
    console.print(f"wrote {out / 'eval.json'}, {out / 'eval.png'} and {out / 'examples.md'}")
    return result


def _read_audio(clips: list[Any], console: Any) -> dict[Path, Any]:
    """Each clip's samples by path (an unreadable clip is skipped with a line on the console)."""
    audio: dict[Path, Any] = {}
    for c in clips:
        try:
            audio[c.audio] = load_audio(c.audio)
        except AudioError as e:
            console.print(f"skipping {c.audio.name}: {e}")
    return audio


def _whisper_reference(engine: Any, asr_clips: list[Any], q_clips: list[Any], audio: dict[Path, Any],
                       whisper_beam: int, prog: Any) -> dict[Path, tuple[str, float]]:
    """Whisper's own decoder on a 30-s window with beam `whisper_beam`: each clip's transcript and its ms."""
    from .basemodels import resolve
    from .bench import WhisperCascadeASR

    enc = engine.bundle.encoder
    whisper_dir = enc.path if enc.format == "ct2" and (enc.path / "vocabulary.txt").is_file() else \
        resolve("default:whisper-base")
    whisper = WhisperCascadeASR(whisper_dir, n_threads=engine.n_threads, beam_size=whisper_beam,
                                device=engine.devices.ct2, language=engine.hearing.language)
    task = prog.add_task(f"Whisper, 30-s window, beam {whisper_beam}", total=len(asr_clips) + len(q_clips))
    ref: dict[Path, tuple[str, float]] = {}
    for c in [*asr_clips, *q_clips]:
        t0 = time.perf_counter()
        ref[c.audio] = (whisper.transcribe(audio[c.audio]), (time.perf_counter() - t0) * 1e3)
        prog.advance(task)
    return ref


class _ModeRun:
    """One hearing mode's turns on the clips: transcripts, spoken and typed answers (typed ones asked once)."""

    def __init__(self, engine: Any, audio: dict[Path, Any], ref: dict[Path, tuple[str, float]], max_tokens: int,
                 prog: Any) -> None:
        from .engine import GenerationOptions

        self.engine, self.audio, self.ref, self.prog = engine, audio, ref, prog
        self.greedy = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
        self.transcribe = GenerationOptions(max_tokens=96)
        self.typed: dict[str, str] = {}

    def ask_typed(self, text: str) -> str:
        if text not in self.typed:
            self.engine.new_chat()
            self.typed[text] = self.engine.ask(text=text, options=self.greedy).answer
        return self.typed[text]

    def metrics(self, mode: str, asr_clips: list[Any], q_clips: list[Any], wer_whisper: float) -> dict[str, Any]:
        engine, audio, ref = self.engine, self.audio, self.ref
        task = self.prog.add_task(f"hearing: {mode}", total=len(asr_clips) + len(q_clips))
        rows = []
        for c in asr_clips:
            engine.new_chat()
            tr = engine.ask(audio=audio[c.audio], transcribe=True, options=self.transcribe)
            engine.new_chat()
            spoken = engine.ask(audio=audio[c.audio], options=self.greedy)
            rows.append({"audio": c.audio.name, "reference": c.text, "llm": tr.answer, "heard": tr.heard,
                         "whisper": ref[c.audio][0], "spoken_answer": spoken.answer,
                         "typed_answer": self.ask_typed(c.text), "ttft_ms": spoken.timings["ttft_ms"],
                         "audio_s": spoken.timings["audio_s"]})
            self.prog.advance(task)
        m = _asr_metrics(rows, wer_whisper)
        if q_clips:
            m |= _question_metrics([_question_row(engine, c, audio[c.audio], ref[c.audio][0], self.greedy,
                                                  self.ask_typed) for c in q_clips])
            self.prog.advance(task, len(q_clips))
        return m


def _latency(bundle: str | Path | None, out: Path, threads: int | None, hearing: dict[str, Any], clips: list[Any],
             audio: dict[Path, Any], *, llm: str | Path | None = None, device: str | None = None) -> dict[str, Any]:
    """`bench` in a fresh process on the clips of LATENCY_SECONDS, copied into out/latency_clips, with the hearing
    overrides, llm and device."""
    lat_dir = out / "latency_clips"
    shutil.rmtree(lat_dir, ignore_errors=True)
    lat_dir.mkdir()
    lo, hi = LATENCY_SECONDS
    for c in clips:
        if lo <= len(audio[c.audio]) / 16000 <= hi and not (lat_dir / c.audio.name).exists():
            shutil.copy(c.audio, lat_dir / c.audio.name)
    if not any(lat_dir.iterdir()):
        raise EvalError(f"no clip lasts {lo:g}-{hi:g} s: evaluate on more clips")
    bench = bench_in_fresh_process(lat_dir, bundle=bundle, out=out, threads=threads, hearing=hearing, llm=llm,
                                   device=device)
    return {k: bench[k] for k in ("llasm", "cascade", "llama_cpp_decode_tokens_per_s", "decode_vs_llama_cpp",
                                  "peak_rss_mb", "n_clips", "threads")}


def _asr_metrics(rows: list[dict[str, Any]], wer_whisper: float) -> dict[str, Any]:
    """One hearing mode's figures on the ASR clips: WERs and spoken-vs-typed answer agreement."""
    refs = [r["reference"] for r in rows]
    agree = sum(similarity(r["spoken_answer"], r["typed_answer"]) >= AGREE_SIMILARITY for r in rows)
    wer_llm = wer(refs, [r["llm"] for r in rows])
    return {
        "wer_llm": wer_llm,
        "wer_heard": wer(refs, [r["heard"] or "" for r in rows]) if rows[0]["heard"] is not None else None,
        "wer_whisper": wer_whisper,
        "wer_ratio": wer_llm / wer_whisper if wer_whisper else float("inf"),
        "asr_agreement": agree / len(rows),
        "asr_agreement_ci95": wilson_interval(agree, len(rows)),
        "asr_agreement_exact": sum(normalize(r["spoken_answer"]) == normalize(r["typed_answer"]) for r in rows)
        / len(rows),
        "ttft_ms_median": statistics.median(r["ttft_ms"] for r in rows),
        "asr_rows": rows,
    }


def _question_row(engine: Any, c: Clip, audio: Any, w_text: str, greedy: Any, ask_typed: Any) -> dict[str, Any]:
    engine.new_chat()
    spoken = engine.ask(audio=audio, options=greedy)
    typed = ask_typed(c.text)
    cascade = ask_typed(w_text) if w_text.strip() else ""
    return {"audio": c.audio.name, "question": c.text, "heard": spoken.heard, "spoken_answer": spoken.answer,
            "typed_answer": typed, "similarity": similarity(spoken.answer, typed),
            "exact": normalize(spoken.answer) == normalize(typed), "whisper": w_text, "cascade_answer": cascade,
            "cascade_similarity": similarity(cascade, typed) if cascade else 0.0,
            "audio_s": spoken.timings["audio_s"]}


def _question_metrics(q_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spoken-question figures: the answer to the spoken question against the answer to it typed."""
    agree = sum(r["similarity"] >= AGREE_SIMILARITY for r in q_rows)
    questions = [r["question"] for r in q_rows]
    heard = q_rows[0]["heard"] is not None
    return {
        "agreement_exact": sum(r["exact"] for r in q_rows) / len(q_rows),
        "agreement": agree / len(q_rows),
        "agreement_ci95": wilson_interval(agree, len(q_rows)),
        "similarity_median": statistics.median(r["similarity"] for r in q_rows),
        "agreement_cascade": sum(r["cascade_similarity"] >= AGREE_SIMILARITY for r in q_rows) / len(q_rows),
        "questions_heard_exactly": sum(normalize(r["heard"] or "") == normalize(r["question"]) for r in q_rows)
        / len(q_rows) if heard else None,
        "questions_whisper_exact": sum(normalize(r["whisper"]) == normalize(r["question"]) for r in q_rows)
        / len(q_rows),
        "questions_wer_heard": wer(questions, [r["heard"] or "" for r in q_rows]) if heard else None,
        "questions_wer_whisper": wer(questions, [r["whisper"] for r in q_rows]),
        "question_rows": q_rows,
    }


MODE_NAMES = {"whisper": "Whisper's decoder -> transcript tokens", "adaptor": "adaptor's transcript -> tokens",
              "embeddings": "adaptor's embeddings (LLaSM)"}


def _table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    w = r["whisper"]
    modes = r["modes"]
    t = Table(title=f"llasm evaluate: {r['n_asr']} clips, {r['n_questions']} spoken questions; reference: Whisper's "
                    f"own decoder, {w['window_s']}-s window, beam {w['beam']}: WER {w['wer']:.3f}")
    t.add_column("metric")
    for mode in modes:
        t.add_column(MODE_NAMES.get(mode, mode), justify="right")
    t.add_column("target", justify="right")

    def row(label: str, fmt: Any, target: str = "", key: str | None = None) -> None:
        vals = [modes[m].get(key) if key else modes[m] for m in modes]
        if all(v is None for v in vals):
            return
        t.add_row(label, *["-" if v is None else fmt(v) for v in vals], target)

    row("WER (--transcribe)", lambda v: f"{v:.3f}", key="wer_llm")
    row("WER / Whisper's", lambda v: f"{v:.2f}x", "<= 1.2x", key="wer_ratio")
    row("WER of the transcript heard", lambda v: f"{v:.3f}", key="wer_heard")
    row(f"spoken = typed answer, ASR clips (sim >= {AGREE_SIMILARITY})",
        lambda m: f"{m['asr_agreement']:.0%} ({m['asr_agreement_ci95'][0]:.0%}-{m['asr_agreement_ci95'][1]:.0%})",
        ">= 90%")
    row("spoken = typed answer, ASR clips (exact)", lambda v: f"{v:.0%}", key="asr_agreement_exact")
    row("time to first token, median (ms, in this run)", lambda v: f"{v:.0f}", key="ttft_ms_median")
    row(f"spoken = typed answer, questions (sim >= {AGREE_SIMILARITY})",
        lambda m: f"{m['agreement']:.0%} ({m['agreement_ci95'][0]:.0%}-{m['agreement_ci95'][1]:.0%})"
        if "agreement" in m else "-", ">= 90%")
    row("questions heard word for word", lambda v: f"{v:.0%}", key="questions_heard_exactly")
    row("reference: Whisper transcript's answer = typed answer", lambda v: f"{v:.0%}", key="agreement_cascade")
    lat = r.get("latency")
    if lat:
        ll, cc = lat["llasm"], lat["cascade"]
        extra = [""] * (len(modes) - 1)
        t.add_row(f"time to first token, 2-6 s clips, median / p90 (ms; {r['mode']})",
                  f"{ll['ttft_ms']['median']:.0f} / {ll['ttft_ms']['p90']:.0f}", *extra, "<= 120")
        if cc:
            t.add_row("cascade (30-s Whisper, then the LLM) first token, median (ms)", f"{cc['ttft_ms']['median']:.0f}",
                      *extra, "")
            t.add_row("llasm / cascade time to first token", f"{ll['ttft_ms']['median'] / cc['ttft_ms']['median']:.2f}",
                      *extra, "<= 0.25")
        t.add_row("decode tokens/s vs llama.cpp's own", f"{lat['decode_vs_llama_cpp']:.0%}", *extra, ">= 90%")
        t.add_row("peak RSS of the engine (MB)", f"{lat['peak_rss_mb']:.0f}", *extra, "< 1024")
    Console().print(t)


def _examples(r: dict[str, Any], path: Path) -> None:
    def cell(s: str | None) -> str:
        return (s or "").replace("|", "\\|").replace("\n", " ")[:160]

    lines = []
    for mode, m in r["modes"].items():
        lines += [f"# Hearing: {MODE_NAMES.get(mode, mode)}", "", "| reference | heard | through --transcribe | "
                  "Whisper (30-s window) | answer to the audio | answer to the reference typed |", "|---|---|---|---|---|---|"]
        for a in m["asr_rows"][:25]:
            lines.append(f"| {cell(a['reference'])} | {cell(a['heard'])} | {cell(a['llm'])} | {cell(a['whisper'])} | "
                         f"{cell(a['spoken_answer'])} | {cell(a['typed_answer'])} |")
        if m.get("question_rows"):
            lines += ["", "| question (what was said) | heard | answer to the audio | answer to the typed text | sim "
                      "| Whisper heard |", "|---|---|---|---|---|---|"]
            for q in m["question_rows"][:20]:
                lines.append(f"| {cell(q['question'])} | {cell(q['heard'])} | {cell(q['spoken_answer'])} | "
                             f"{cell(q['typed_answer'])} | {q['similarity']:.2f} | {cell(q.get('whisper'))} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _agreement_panel(ax: Any, modes: dict[str, Any], names: list[str]) -> None:
    """Spoken = typed answer per hearing mode: on the spoken questions where there are some (the headline), else
    on the ASR clips; the Whisper transcript's own agreement is the reference line."""
    questions = all("agreement" in modes[m] for m in modes)
    key, where = ("agreement", "spoken questions") if questions else ("asr_agreement", "ASR clips")
    ax.bar(names, [100 * modes[m][key] for m in modes], color="tab:green")
    if questions:
        ax.axhline(100 * next(iter(modes.values()))["agreement_cascade"], c="k", label="Whisper's transcript, same LLM")
    ax.axhline(90, ls="--", c="r", label="target 90 %")
    ax.set_ylim(0, 100)
    ax.set_title(f"spoken = typed answer, {where} (%)")
    ax.legend(fontsize=8)


def _latency_panel(ax: Any, lat: dict[str, Any], mode: str) -> None:
    ll, cc = lat["llasm"], lat["cascade"]
    labels = ["encoder", "hearing", "prefill", "first token"]
    vals = [ll["encoder_ms"]["median"], ll.get("decoder_ms", ll.get("rescore_ms", {"median": 0}))["median"],
            ll["prefill_ms"]["median"], ll["ttft_ms"]["median"]]
    ax.barh(labels, vals, color="tab:blue", label=f"llasm, {mode} (median)")
    if cc:
        ax.barh(["cascade first token"], [cc["ttft_ms"]["median"]], color="tab:gray", label="30-s cascade")
    ax.axvline(120, ls="--", c="r", label="target 120 ms")
    ax.set_xlabel("ms")
    ax.set_title("latency, 2-6 s clips")
    ax.legend(fontsize=8)


def _plot(r: dict[str, Any], path: Path) -> None:
    """eval.png; with no matplotlib (the `plot` extra), one line says so and eval.json stands alone."""
    import sys

    from .plotting import PlotUnavailable, pyplot

    try:
        plt = pyplot()
    except PlotUnavailable as e:
        print(f"no {path.name}: {e}", file=sys.stderr)
        return

    modes = r["modes"]
    names = [MODE_NAMES.get(m, m).replace(" -> ", "\n-> ") for m in modes]
    lat = r.get("latency")
    fig, axes = plt.subplots(1, 3 if lat else 2, figsize=(14 if lat else 9.5, 4.2))
    w = r["whisper"]["wer"]
    axes[0].bar(names, [modes[m]["wer_llm"] for m in modes], color="tab:blue")
    axes[0].axhline(w, c="k", label=f"Whisper, 30-s window, beam {r['whisper']['beam']}")
    axes[0].axhline(1.2 * w, ls="--", c="r", label="target: 1.2 x Whisper")
    axes[0].set_title("WER (--transcribe)")
    axes[0].legend(fontsize=8)
    _agreement_panel(axes[1], modes, names)
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelsize=7)
    if lat:
        _latency_panel(axes[2], lat, r["mode"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
