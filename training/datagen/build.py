"""Dataset builds: plan clips deterministically, render them in parallel, validate, write manifests.

Layout of a dataset directory `DIR`:

```
DIR/train.jsonl, DIR/eval.jsonl   manifests (paths relative to DIR)
DIR/audio/{train,eval}/*.wav      16 kHz mono 16-bit clips
DIR/meta.json                     settings (seed, voices, reply generation, ...) and the build summary
DIR/replies.jsonl                 cached LLM replies (instructions only)
DIR/rejected.jsonl                clips that failed validation (skipped on a rerun)
```

ASR lines: `{"audio", "text", "language", "voice", "aug"}`. Conversation lines (LLaVA style):
`{"id", "conversations": [{"from": "human", "value", "audio", "voice", "aug"}, {"from": "gpt", "value"}, ...]}`;
a human turn without `audio` is a typed turn.

Every clip is planned from `(seed, index)` alone, so a rerun -- or a rerun with a larger count -- plans the
same clips and skips those already on disk. Held-out clips (`eval`) use voices and augmentations that no
training clip uses, and texts chosen by a hash that training never sees.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.audio import SAMPLE_RATE, AudioError, load_audio, save_wav
from llasm.training.datagen import augment
from llasm.training.datagen.text import text_is_eval
from llasm.training.datagen.tts import TtsError, Voice, available_backends, synthesize, voices

MIN_SECONDS, MAX_SECONDS = 0.4, 30.0


class DataGenError(RuntimeError):
    """A dataset build cannot go on; the message names the fix."""


@dataclass
class ClipJob:
    path: str  # relative to the dataset directory
    text: str
    language: str
    voice: str
    split: str
    rate: float
    pitch: int
    seed: int
    recipe: list = field(default_factory=list)

    @property
    def aug(self) -> str:
        return augment.Recipe(self.recipe).name


@dataclass
class ClipResult:
    path: str
    ok: bool
    seconds: float = 0.0
    error: str = ""


@dataclass
class BuildOptions:
    seed: int = 0
    eval_fraction: float = 0.05
    backends: tuple[str, ...] = ("espeak", "hibari")
    hibari_fraction: float = 0.2
    workers: int = 2
    progress: bool = True
    eval_acoustics: str = "unseen"  # held-out clips: "unseen" effect families, "matched" (train's) or "clean"
    voice_set: str = "base"  # "wide" adds espeak-ng's other human-sounding variants (tts.ESPEAK_VARIANTS_WIDE)

    def plan_settings(self) -> dict[str, Any]:
        """The settings that decide which clips are planned (a resumed build must use the same)."""
        d = {"seed": self.seed, "eval_fraction": self.eval_fraction, "backends": list(self.backends),
             "hibari_fraction": self.hibari_fraction}
        if self.eval_acoustics != "unseen":  # the default is left out: builds from before it resume as they were
            d["eval_acoustics"] = self.eval_acoustics
        if self.voice_set != "base":
            d["voice_set"] = self.voice_set
        return d


def clip_split(seed: int, index: int, eval_fraction: float) -> str:
    """Which split item `index` of a build goes to: the first draw of its own generator."""
    return "eval" if clip_rng(seed, index).random() < eval_fraction else "train"


# --------------------------------------------------------------------------------------------------
# planning


class VoicePicker:
    """Chooses the voice, speaking rate and pitch of a clip from a per-clip random generator."""

    def __init__(self, backends: tuple[str, ...], hibari_fraction: float, voice_set: str = "base") -> None:
        have = available_backends()
        missing = [b for b in backends if b not in have]
        if missing:
            hint = {"espeak": "apt-get install espeak-ng", "hibari": "pip install hibari-tts"}
            raise DataGenError(f"TTS backend {missing[0]!r} is not available: {hint.get(missing[0], 'install it')}")
        self.backends = backends
        self.hibari_fraction = hibari_fraction if "hibari" in backends else 0.0
        self.pools: dict[tuple[str, str, str], list[Voice]] = {}
        for lang in ("en", "zh"):
            for backend in backends:
                vs = voices((backend,), lang, voice_set)
                self.pools[(lang, backend, "train")] = [v for v in vs if not v.held_out]
                self.pools[(lang, backend, "eval")] = [v for v in vs if v.held_out]

    def pick(self, rng: np.random.Generator, language: str, split: str) -> tuple[Voice, float, int]:
        use_hibari = language == "en" and split == "train" and rng.random() < self.hibari_fraction
        order = ["hibari"] if use_hibari else [b for b in self.backends if b != "hibari"] + ["hibari"]
        for backend in order:
            pool = self.pools.get((language, backend, split), [])
            if pool:
                voice = pool[int(rng.integers(len(pool)))]
                if voice.backend == "hibari":
                    return voice, float(rng.uniform(0.85, 1.15)), 50
                return voice, float(rng.uniform(0.8, 1.25)), int(rng.integers(25, 76))
        raise DataGenError(
            f"no {split} voice for language {language!r} with backends {', '.join(self.backends)}: "
            "add --tts espeak (held-out voices come from espeak-ng)"
        )


def clip_rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, index, salt])


# --------------------------------------------------------------------------------------------------
# rendering (runs in worker processes)


def validate_clip(audio: np.ndarray, check_clipping: bool = True) -> str:
    """Empty string when the clip is usable, else why not."""
    seconds = len(audio) / SAMPLE_RATE
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        return f"duration {seconds:.2f} s outside {MIN_SECONDS}-{MAX_SECONDS} s"
    peak = float(np.abs(audio).max())
    if peak < 0.01:
        return f"peak {peak:.4f} too quiet"
    if check_clipping and peak > 0.999:
        return f"peak {peak:.3f} clips"
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    active = float(np.mean(energy > 0.1 * energy.max()))
    if active < 0.15:
        return f"only {active:.0%} of the clip is above the noise: silent or nearly so"
    return ""


def render_clip(job: ClipJob, root: str) -> ClipResult:
    try:
        voice = Voice.parse(job.voice)
        raw, sr = synthesize(voice, job.text, rate=job.rate, pitch=job.pitch, seed=job.seed)
        speech = load_audio(raw, source_rate=sr, max_seconds=None)
        problem = validate_clip(speech, check_clipping=False)
        if problem:
            return ClipResult(job.path, False, error=f"TTS output: {problem}")
        speech = speech * (0.7 / float(np.abs(speech).max()))  # one level before augmentation's gain
        audio = augment.apply(speech, augment.Recipe(job.recipe), clip_rng(job.seed, 0, 1))
        problem = validate_clip(audio)
        if problem:
            return ClipResult(job.path, False, error=f"augmented: {problem}")
        save_wav(Path(root) / job.path, audio)
        return ClipResult(job.path, True, len(audio) / SAMPLE_RATE)
    except (TtsError, AudioError, OSError, ValueError) as e:
        return ClipResult(job.path, False, error=" ".join(str(e).split())[:200])


def _render_many(args: tuple[list[ClipJob], str]) -> list[ClipResult]:
    jobs, root = args
    return [render_clip(j, root) for j in jobs]


def _existing_seconds(path: Path) -> float | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # a torn or foreign file is rendered again
        return None
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames == 0:
        return None
    return info.frames / info.samplerate


def render_all(
    jobs: list[ClipJob], root: Path, opts: BuildOptions, label: str = "clips"
) -> tuple[dict[str, ClipResult], int, float]:
    """Render the clips not on disk yet (in `opts.workers` processes).

    Returns path -> result for every job, the number rendered now, and the seconds that took.
    """
    results: dict[str, ClipResult] = {}
    rejected_file = root / "rejected.jsonl"
    rejected = {}
    if rejected_file.exists():
        for line in rejected_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rejected[r["path"]] = r["error"]
    todo = []
    for j in jobs:
        secs = _existing_seconds(root / j.path)
        if secs is not None:
            results[j.path] = ClipResult(j.path, True, secs)
        elif j.path in rejected:
            results[j.path] = ClipResult(j.path, False, error=rejected[j.path])
        else:
            todo.append(j)
    skipped = len(jobs) - len(todo)
    t0 = time.perf_counter()
    chunk = 4
    batches = [(todo[i : i + chunk], str(root)) for i in range(0, len(todo), chunk)]
    with _progress(opts.progress, f"{label} ({skipped} already done)", len(todo)) as advance, \
            open(rejected_file, "a") as rej:
        if opts.workers <= 1 or len(batches) <= 1:
            stream: Iterable[list[ClipResult]] = map(_render_many, batches)
            pool = None
        else:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(opts.workers)
            stream = pool.imap_unordered(_render_many, batches)
        try:
            for batch in stream:
                for r in batch:
                    results[r.path] = r
                    if not r.ok:
                        rej.write(json.dumps({"path": r.path, "error": r.error}) + "\n")
                        rej.flush()
                advance(len(batch))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    return results, len(todo), time.perf_counter() - t0


class _progress:
    """A rich progress bar with ETA (or nothing), used as `with _progress(...) as advance: advance(n)`."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled or self.total == 0:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.stop()


# --------------------------------------------------------------------------------------------------
# manifests, meta, summary


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def check_meta(root: Path, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Create `root`, or check that an existing build there was planned with the same settings."""
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("kind") != kind or old.get("plan") != settings:
            diff = [k for k in settings if old.get("plan", {}).get(k) != settings[k]] or ["kind"]
            raise DataGenError(
                f"{root} holds a {old.get('kind')} build with different settings ({', '.join(diff)}): "
                "rerun with the same settings to resume, or use a new --out directory"
            )
        return old
    meta = {"format": "llasm-speech-data", "version": 1, "kind": kind, "plan": settings}
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


def summarize(jobs: list[ClipJob], results: dict[str, ClipResult], wall: float, rendered: int) -> dict[str, Any]:
    by_split: dict[str, dict[str, Any]] = {}
    for split in ("train", "eval"):
        ok = [j for j in jobs if j.split == split and results.get(j.path, ClipResult(j.path, False)).ok]
        secs = sum(results[j.path].seconds for j in ok)
        by_split[split] = {
            "clips": len(ok), "hours": round(secs / 3600, 4), "voices": len({j.voice for j in ok}),
            "languages": dict(Counter(j.language for j in ok)), "augmentations": len({j.aug for j in ok}),
            "distinct_texts": len({j.text for j in ok}),
        }
    total_secs = sum(r.seconds for r in results.values() if r.ok)
    return {
        "splits": by_split, "rejected": sum(1 for r in results.values() if not r.ok),
        "rendered_now": rendered, "render_seconds": round(wall, 2),
        "clips_per_second": round(rendered / wall, 3) if wall > 0 else None,
        "audio_hours": round(total_secs / 3600, 4),
    }


def print_summary(summary: dict[str, Any], root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"speech data in {root}")
    for col in ("split", "clips", "hours", "voices", "languages", "augmentations", "distinct texts"):
        table.add_column(col)
    for split, s in summary["splits"].items():
        langs = ", ".join(f"{k} {v}" for k, v in sorted(s["languages"].items()))
        table.add_row(split, str(s["clips"]), f"{s['hours']:.3f}", str(s["voices"]), langs,
                      str(s["augmentations"]), str(s["distinct_texts"]))
    console = Console(stderr=True)
    console.print(table)
    console.print(f"rejected clips: {summary['rejected']}; rendered now: {summary['rendered_now']} in "
                  f"{summary['render_seconds']:.1f} s ({summary['clips_per_second']} clips/s)")


def finish(root: Path, meta: dict[str, Any], summary: dict[str, Any], extra: dict[str, Any], progress: bool) -> dict[str, Any]:
    meta.update(extra)
    meta["summary"] = summary
    tmp = root / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    os.replace(tmp, root / "meta.json")
    if progress:
        print_summary(summary, root)
    return summary


# --------------------------------------------------------------------------------------------------
# ASR


def build_asr(
    out: Path | str,
    count: int,
    opts: BuildOptions | None = None,
    *,
    zh_fraction: float = 0.0,
    english: list[str] | None = None,
    chinese: list[str] | None = None,
) -> dict[str, Any]:
    """Build an ASR dataset of `count` clips in `out`; returns the summary. Texts default to `text.py`'s."""
    from llasm.training.datagen import text as textmod

    opts = opts or BuildOptions()
    root = Path(out)
    if count <= 0:
        raise DataGenError(f"--count must be positive, not {count}")
    settings = opts.plan_settings() | {"zh_fraction": zh_fraction, "texts": "custom" if english else "debian"}
    meta = check_meta(root, "asr", settings)
    picker = VoicePicker(opts.backends, opts.hibari_fraction, opts.voice_set)
    t0 = time.perf_counter()
    if english is None:
        sources = textmod.english_sentences(seed=opts.seed)
        english = [s for v in sources.values() for s in v]
        source_counts = {k: len(v) for k, v in sources.items()}
    else:
        english = textmod.dedupe(english)
        source_counts = {"custom": len(english)}
    if zh_fraction > 0:
        chinese = textmod.dedupe(chinese if chinese is not None else textmod.chinese_sentences())
        source_counts["chinese"] = len(chinese)
    pools: dict[tuple[str, str], list[str]] = {}
    for lang, texts in (("en", english), ("zh", chinese or [])):
        order = np.random.default_rng([opts.seed, 7]).permutation(len(texts))
        shuffled = [texts[i] for i in order]
        pools[(lang, "eval")] = [t for t in shuffled if text_is_eval(t)]
        pools[(lang, "train")] = [t for t in shuffled if not text_is_eval(t)]
    counters: Counter[tuple[str, str]] = Counter()
    jobs = []
    for i in range(count):
        rng = clip_rng(opts.seed, i)
        split = "eval" if rng.random() < opts.eval_fraction else "train"
        language = "zh" if rng.random() < zh_fraction else "en"
        pool = pools[(language, split)] or pools[(language, "train")]
        if not pool:
            raise DataGenError(f"no {language} sentences found: install the Debian text packages (see docs/data.md)")
        text = pool[counters[(language, split)] % len(pool)]
        counters[(language, split)] += 1
        voice, rate, pitch = picker.pick(rng, language, split)
        recipe = augment.plan_augmentation(rng, split, eval_acoustics=opts.eval_acoustics)
        jobs.append(ClipJob(f"audio/{split}/{i:06d}.wav", text, language, voice.id, split, rate, pitch,
                            int(rng.integers(2**31)), recipe.steps))
    results, rendered, seconds = render_all(jobs, root, opts, "ASR clips")
    for split in ("train", "eval"):
        write_jsonl(root / f"{split}.jsonl", (
            {"audio": j.path, "text": j.text, "language": j.language, "voice": j.voice, "aug": j.aug}
            for j in jobs if j.split == split and results[j.path].ok
        ))
    summary = summarize(jobs, results, seconds, rendered)
    summary["total_wall_seconds"] = round(time.perf_counter() - t0, 2)
    return finish(root, meta, summary, {"count": count, "text_sources": source_counts}, opts.progress)


# --------------------------------------------------------------------------------------------------
# conversations (generated instructions and converted user data)


@dataclass
class Conversation:
    id: str
    turns: list[dict[str, str]]  # {"from": "human"|"gpt", "value": ..., optional "speak": "0"}


def build_conversations(
    out: Path | str,
    conversations: list[Conversation],
    opts: BuildOptions,
    kind: str,
    settings: dict[str, Any],
    extra_meta: dict[str, Any],
    splits: list[str] | None = None,
) -> dict[str, Any]:
    """Speak the human turns of `conversations` and write LLaVA-style manifests. `splits` fixes each
    conversation's split (as `clip_split` draws it); by default it is drawn here."""
    if splits is not None and len(splits) != len(conversations):
        raise DataGenError(f"{len(splits)} splits for {len(conversations)} conversations")
    root = Path(out)
    meta = check_meta(root, kind, opts.plan_settings() | settings)
    picker = VoicePicker(opts.backends, opts.hibari_fraction, opts.voice_set)
    t0 = time.perf_counter()
    jobs: list[ClipJob] = []
    plan: list[tuple[Conversation, str, list[ClipJob | None]]] = []
    for i, conv in enumerate(conversations):
        rng = clip_rng(opts.seed, i)
        split = "eval" if rng.random() < opts.eval_fraction else "train"  # the draw clip_split makes
        if splits is not None:
            split = splits[i]
        language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in conv.turns[0]["value"][:40]) else "en"
        voice, rate, pitch = picker.pick(rng, language, split)  # one speaker per conversation
        turn_jobs: list[ClipJob | None] = []
        for t, turn in enumerate(conv.turns):
            if turn["from"] != "human" or turn.get("speak") == "0":
                turn_jobs.append(None)
                continue
            recipe = augment.plan_augmentation(rng, split, eval_acoustics=opts.eval_acoustics)
            job = ClipJob(f"audio/{split}/{conv.id}_{t}.wav", turn["value"], language, voice.id, split, rate,
                          pitch, int(rng.integers(2**31)), recipe.steps)
            jobs.append(job)
            turn_jobs.append(job)
        plan.append((conv, split, turn_jobs))
    results, rendered, seconds = render_all(jobs, root, opts, f"{kind} turns")
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    dropped = 0
    for conv, split, turn_jobs in plan:
        turns = []
        spoken = 0
        for turn, job in zip(conv.turns, turn_jobs, strict=True):
            entry: dict[str, Any] = {"from": turn["from"], "value": turn["value"]}
            if job is not None and results[job.path].ok:
                entry |= {"audio": job.path, "voice": job.voice, "aug": job.aug}
                spoken += 1
            turns.append(entry)
        if spoken == 0:
            dropped += 1
            continue
        rows[split].append({"id": conv.id, "conversations": turns})
    for split in ("train", "eval"):
        write_jsonl(root / f"{split}.jsonl", rows[split])
    summary = summarize(jobs, results, seconds, rendered)
    summary["total_wall_seconds"] = round(time.perf_counter() - t0, 2)
    summary["conversations"] = {s: len(r) for s, r in rows.items()}
    summary["conversations_without_speech_dropped"] = dropped
    return finish(root, meta, summary, extra_meta, opts.progress)

