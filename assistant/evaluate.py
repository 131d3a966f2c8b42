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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audio import AudioError, load_audio
from .ctcbeam import spoken_words

AGREE_SIMILARITY = 0.8  # word-sequence similarity at which two answers count as the same answer
LATENCY_SECONDS = (2.0, 6.0)  # the question lengths the latency targets are stated for


class EvalError(RuntimeError):
    """A bad evaluation setup; the message names the fix."""


# ---- text metrics --------------------------------------------------------------------------------------
normalize = spoken_words  # lower-case words without punctuation, small numbers as digits (assistant/ctcbeam.py)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate: total edits over total reference words."""
    n = sum(len(normalize(r)) for r in refs)
    e = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True))
    return e / max(n, 1)


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


def bench_in_fresh_process(clips: Path, *, bundle: str | Path | None, out: Path,
                           threads: int | None, n_best: int | None = None,
                           fusion: float | None = None, ngram_fusion: float | None = None) -> dict[str, Any]:
    """`llasm-assistant bench` on `clips` in a new Python process, so its peak RSS is the engine's own (this
    process also holds the Whisper cascade and the evaluation's engine); returns its bench.json."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "assistant.cli", "bench", str(clips), "--out", str(out), "--max-tokens", "32"]
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    if threads:
        cmd += ["--threads", str(threads)]
    if n_best is not None:
        cmd += ["--n-best", str(n_best)]
    if fusion is not None:
        cmd += ["--fusion", str(fusion)]
    if ngram_fusion is not None:
        cmd += ["--ngram-fusion", str(ngram_fusion)]
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


# ---- the evaluation ------------------------------------------------------------------------------------
def evaluate(bundle: str | Path | None, *, asr: Path, questions: Path, out: Path, n_asr: int = 100,
             n_questions: int = 50, max_tokens: int = 48, threads: int | None = None,
             latency: bool = True, skip_asr: int = 0, skip_questions: int = 0,
             n_best: int | None = None, fusion: float | None = None,
             ngram_fusion: float | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import Progress

    from .basemodels import resolve
    from .bench import WhisperCascadeASR
    from .engine import Engine, GenerationOptions

    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    asr_clips = read_asr(asr, n_asr, skip_asr)
    q_clips = read_questions(questions, n_questions, skip_questions)
    engine = Engine.load(bundle, n_threads=threads, n_best=n_best, fusion=fusion, ngram_fusion=ngram_fusion)
    enc = engine.bundle.encoder
    whisper_dir = enc.path if enc.format == "ct2" and (enc.path / "vocabulary.txt").is_file() else \
        resolve("default:whisper-base")
    whisper = WhisperCascadeASR(whisper_dir, n_threads=engine.n_threads)
    greedy = GenerationOptions(max_tokens=max_tokens, temperature=0.0)

    def audio_of(c: Clip) -> Any:
        try:
            return load_audio(c.audio)
        except AudioError as e:
            console.print(f"skipping {c.audio.name}: {e}")
            return None

    asr_rows: list[dict[str, Any]] = []
    q_rows: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as prog:

        def readable(clips: list[Clip], label: str) -> Iterator[tuple[Clip, Any]]:
            """Each clip whose audio loads, with a progress bar, in a new chat."""
            task = prog.add_task(label, total=len(clips))
            for c in clips:
                prog.advance(task)
                audio = audio_of(c)
                if audio is not None:
                    engine.new_chat()
                    yield c, audio

        for c, audio in readable(asr_clips, "transcription"):
            d = engine.ask(audio=audio, transcribe=True, options=GenerationOptions(max_tokens=96))
            asr_rows.append({"audio": c.audio.name, "reference": c.text, "llm": d.answer, "heard": d.heard,
                             "whisper": whisper.transcribe(audio)})
        for c, audio in readable(q_clips, "spoken questions"):
            spoken = engine.ask(audio=audio, options=greedy)
            engine.new_chat()
            typed = engine.ask(text=c.text, options=greedy)
            sim = similarity(spoken.answer, typed.answer)
            # the reference: the same LLM answering Whisper's transcript (what a cascade would do)
            w_text = whisper.transcribe(audio)
            engine.new_chat()
            cascade = engine.ask(text=w_text, options=greedy) if w_text.strip() else None
            q_rows.append({"audio": c.audio.name, "question": c.text, "heard": spoken.heard,
                           "spoken_answer": spoken.answer, "typed_answer": typed.answer, "similarity": sim,
                           "exact": normalize(spoken.answer) == normalize(typed.answer),
                           "whisper": w_text, "cascade_answer": cascade.answer if cascade else "",
                           "cascade_similarity": similarity(cascade.answer, typed.answer) if cascade else 0.0,
                           "audio_s": spoken.timings["audio_s"]})
    engine.close()
    if not asr_rows or not q_rows:
        raise EvalError("no readable clips to evaluate: check the manifests' audio paths")

    refs = [r["reference"] for r in asr_rows]
    agree = sum(r["similarity"] >= AGREE_SIMILARITY for r in q_rows)
    result: dict[str, Any] = {
        "bundle": str(engine.bundle.root),
        "asr_manifest": str(asr), "questions_manifest": str(questions),
        "n_asr": len(asr_rows), "n_questions": len(q_rows),
        "wer_llm": wer(refs, [r["llm"] for r in asr_rows]),
        "wer_whisper": wer(refs, [r["whisper"] for r in asr_rows]),
        "wer_heard": wer(refs, [r["heard"] or "" for r in asr_rows]) if asr_rows[0]["heard"] is not None else None,
        "agreement_exact": sum(r["exact"] for r in q_rows) / len(q_rows),
        "agreement": agree / len(q_rows),
        "agreement_ci95": wilson_interval(agree, len(q_rows)),
        "similarity_median": statistics.median(r["similarity"] for r in q_rows),
        "agreement_cascade": sum(r["cascade_similarity"] >= AGREE_SIMILARITY for r in q_rows) / len(q_rows),
        "questions_heard_exactly": sum(normalize(r["heard"] or "") == normalize(r["question"]) for r in q_rows)
        / len(q_rows) if q_rows[0]["heard"] is not None else None,
        "questions_whisper_exact": sum(normalize(r["whisper"]) == normalize(r["question"]) for r in q_rows)
        / len(q_rows),
        # how well the questions themselves were heard (the answers can only agree when they are)
        "questions_wer_heard": wer([r["question"] for r in q_rows], [r["heard"] or "" for r in q_rows])
        if q_rows[0]["heard"] is not None else None,
        "questions_wer_whisper": wer([r["question"] for r in q_rows], [r["whisper"] for r in q_rows]),
        "asr_rows": asr_rows, "question_rows": q_rows,
    }
    result["wer_ratio"] = result["wer_llm"] / result["wer_whisper"] if result["wer_whisper"] else float("inf")

    if latency:
        lat_dir = out / "latency_clips"
        shutil.rmtree(lat_dir, ignore_errors=True)
        lat_dir.mkdir()
        lo, hi = LATENCY_SECONDS
        by_name = {c.audio.name: c.audio for c in q_clips}
        for r in q_rows:
            if lo <= r["audio_s"] <= hi:
                shutil.copy(by_name[r["audio"]], lat_dir / r["audio"])
        if not any(lat_dir.iterdir()):
            raise EvalError(f"no spoken question lasts {lo:g}-{hi:g} s: build questions with more clips")
        bench = bench_in_fresh_process(lat_dir, bundle=bundle, out=out, threads=threads, n_best=n_best,
                                       fusion=fusion, ngram_fusion=ngram_fusion)
        result["latency"] = {k: bench[k] for k in ("llasm", "cascade", "llama_cpp_decode_tokens_per_s",
                                                   "decode_vs_llama_cpp", "peak_rss_mb", "n_clips", "threads")}

    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _examples(result, out / "examples.md")
    _plot(result, out / "eval.png")
    _table(result)
    console.print(f"wrote {out / 'eval.json'}, {out / 'eval.png'} and {out / 'examples.md'}")
    return result


def _table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"llasm evaluate: {r['n_asr']} clips, {r['n_questions']} spoken questions")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("target", justify="right")
    t.add_row("WER through the LLM (--transcribe)", f"{r['wer_llm']:.3f}", "<= 1.5 x Whisper")
    t.add_row("WER of Whisper's own decoder", f"{r['wer_whisper']:.3f}", "")
    t.add_row("WER ratio (LLM / Whisper)", f"{r['wer_ratio']:.2f}", "<= 1.5")
    if r.get("wer_heard") is not None:
        t.add_row("WER of the adaptor's own transcript (ctc)", f"{r['wer_heard']:.3f}", "")
    lo, hi = r.get("agreement_ci95", (float("nan"), float("nan")))
    t.add_row(f"spoken = typed answer (similarity >= {AGREE_SIMILARITY}; 95 % interval)",
              f"{r['agreement']:.0%} ({lo:.0%}-{hi:.0%})", ">= 80%")
    t.add_row("spoken = typed answer (exact)", f"{r['agreement_exact']:.0%}", "")
    t.add_row("reference: Whisper transcript's answer = typed answer", f"{r['agreement_cascade']:.0%}", "")
    if r.get("questions_heard_exactly") is not None:
        t.add_row("questions heard word for word (ctc / Whisper)",
                  f"{r['questions_heard_exactly']:.0%} / {r['questions_whisper_exact']:.0%}", "")
    if r.get("questions_wer_heard") is not None:
        t.add_row("WER of the questions as heard (ctc / Whisper)",
                  f"{r['questions_wer_heard']:.3f} / {r['questions_wer_whisper']:.3f}", "")
    lat = r.get("latency")
    if lat:
        ll, cc = lat["llasm"], lat["cascade"]
        t.add_row("time to first token, median / p90 (ms)", f"{ll['ttft_ms']['median']:.0f} / {ll['ttft_ms']['p90']:.0f}",
                  "<= 150")
        if cc:
            t.add_row("cascade time to first token, median (ms)", f"{cc['ttft_ms']['median']:.0f}", "")
            t.add_row("llasm / cascade time to first token",
                      f"{ll['ttft_ms']['median'] / cc['ttft_ms']['median']:.2f}", "<= 0.33")
        t.add_row("decode tokens/s vs llama.cpp's own", f"{lat['decode_vs_llama_cpp']:.0%}", ">= 90%")
        t.add_row("peak RSS of the engine (MB)", f"{lat['peak_rss_mb']:.0f}", "< 1024")
    Console().print(t)


def _examples(r: dict[str, Any], path: Path) -> None:
    lines = ["# Spoken vs typed answers (held-out voices)", "",
             "| question (what was said) | heard (ctc) | answer to the audio | answer to the typed text | sim "
             "| Whisper heard | answer to Whisper's transcript |",
             "|---|---|---|---|---|---|---|"]

    def cell(s: str | None) -> str:
        return (s or "").replace("|", "\\|").replace("\n", " ")[:160]

    for q in r["question_rows"][:20]:
        lines.append(f"| {cell(q['question'])} | {cell(q['heard'])} | {cell(q['spoken_answer'])} | "
                     f"{cell(q['typed_answer'])} | {q['similarity']:.2f} | {cell(q.get('whisper'))} | "
                     f"{cell(q.get('cascade_answer'))} |")
    lines += ["", "# Transcriptions", "", "| reference | through the LLM | ctc heard | Whisper |", "|---|---|---|---|"]
    for a in r["asr_rows"][:20]:
        lines.append(f"| {cell(a['reference'])} | {cell(a['llm'])} | {cell(a['heard'])} | {cell(a['whisper'])} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = ["LLM (--transcribe)", "Whisper decoder"] + (["ctc heard"] if r.get("wer_heard") is not None else [])
    vals = [r["wer_llm"], r["wer_whisper"]] + ([r["wer_heard"]] if r.get("wer_heard") is not None else [])
    axes[0].bar(names, vals, color=["tab:blue", "tab:gray", "tab:green"][: len(vals)])
    axes[0].axhline(1.5 * r["wer_whisper"], ls="--", c="r", label="target: 1.5 x Whisper")
    axes[0].set_title("held-out WER")
    axes[0].legend(fontsize=8)
    axes[1].hist([[q["similarity"] for q in r["question_rows"]], [q["cascade_similarity"] for q in r["question_rows"]]],
                 bins=10, range=(0, 1), color=["tab:blue", "tab:gray"],
                 label=["spoken (llasm)", f"Whisper transcript ({r['agreement_cascade']:.0%} agree)"])
    axes[1].legend(fontsize=8)
    axes[1].axvline(AGREE_SIMILARITY, ls="--", c="r")
    axes[1].set_title(f"spoken vs typed answer similarity ({r['agreement']:.0%} agree)")
    lat = r.get("latency")
    if lat:
        ll, cc = lat["llasm"], lat["cascade"]
        labels = ["encoder", "adaptor", "prefill", "first token"]
        vals2 = [ll["encoder_ms"]["median"], ll["adaptor_ms"]["median"], ll["prefill_ms"]["median"],
                 ll["ttft_ms"]["median"]]
        axes[2].barh(labels, vals2, color="tab:blue", label="llasm (median)")
        if cc:
            axes[2].barh(["cascade first token"], [cc["ttft_ms"]["median"]], color="tab:gray", label="cascade")
        axes[2].axvline(150, ls="--", c="r", label="target 150 ms")
        axes[2].set_xlabel("ms")
        axes[2].set_title("latency, 2-6 s questions")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
