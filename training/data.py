"""Training data: manifest readers, audio features, length-grouped batches, and collation.

Readers (paths are relative to the manifest):
- ASR JSON lines `{"audio": "a.wav", "text": "...", "language": "en"}`
- conversations JSON lines (LLaVA / LLaSM-Audio-Instructions): `{"id", "conversations": [{"from": "human",
  "value": transcript, "audio": "q.wav"}, {"from": "gpt", "value": ...}]}`
- LibriSpeech (a directory with `*.trans.txt`), AISHELL-1 (`transcript/aishell_transcript_v0.8.txt` +
  `wav/`), Common Voice (`*.tsv` with `path`, `sentence`, `locale` and a sibling `clips/`).
A missing or unreadable clip is reported with the manifest line it comes from, skipped and counted
(`Manifest.skipped`). A row with an empty transcript is an error naming the file and line: it would teach the
model to answer speech with nothing.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llasm.assistant.prompt import TRANSCRIBE_INSTRUCTIONS_EN, TRANSCRIBE_INSTRUCTIONS_ZH
from llasm.training.samples import Sample, Turn

SAMPLE_RATE = 16000


class DataError(ValueError):
    """A manifest that cannot be read; the message names the file and the fix."""


@dataclass
class Example:
    id: str
    clips: list[Path]  # audio files, indexed by Turn.audio
    turns: list[dict[str, Any]]  # conversations: raw turns; ASR: empty
    text: str = ""  # ASR transcript
    language: str = ""
    seconds: float = 0.0  # total audio duration (for length grouping)
    clip_seconds: list[float] = field(default_factory=list)  # each clip's duration
    loss: str = ""  # a conversation's own loss ("ce"), overriding the run's KL for it
    source: str = ""  # where the example is written ("train.jsonl:12"), for messages

    @property
    def is_asr(self) -> bool:
        return not self.turns


@dataclass
class Manifest:
    examples: list[Example]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def report(self, stream: Any = None) -> None:
        if self.skipped:
            stream = stream or sys.stderr
            for p in self.problems[:5]:
                print(f"skipped: {p}", file=stream)
            print(f"{self.skipped} example(s) skipped for missing or unreadable audio", file=stream)


# ---- readers -----------------------------------------------------------------------------------------
def read_manifest(path: str | Path, *, limit: int | None = None,
                  known_seconds: Mapping[str, float] | None = None) -> Manifest:
    """Read any supported dataset into examples; clips are checked (exists, readable, <= 30 s).

    `path` may list several datasets separated by commas (`a/train.jsonl,b/train.jsonl`): their examples are
    concatenated in that order. A clip whose resolved path is in `known_seconds` (a `HeardCache`'s lengths)
    is taken as that long and not opened: a run that reads the audio from a cache needs no clip files."""
    if isinstance(path, str) and "," in path and not Path(path).exists():
        merged = Manifest([])
        for part in (x.strip() for x in path.split(",")):
            if not part:
                raise DataError(f"empty dataset name in {path!r}: separate datasets with single commas")
            m = read_manifest(part, known_seconds=known_seconds)
            merged.examples += m.examples
            merged.skipped += m.skipped
            merged.problems += m.problems
        merged.examples = merged.examples[:limit] if limit is not None else merged.examples
        return merged
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {p} not found; give a .jsonl manifest, a .tsv or a corpus directory")
    if p.is_dir():
        if next(p.rglob("*.trans.txt"), None) is not None:
            raw = _librispeech(p)
        elif next(p.rglob("aishell_transcript*.txt"), None) is not None:
            raw = _aishell(p)
        else:
            raise DataError(f"{p}: no LibriSpeech *.trans.txt or AISHELL-1 transcript found")
    elif p.suffix == ".tsv":
        raw = _common_voice(p)
    else:
        raw = _jsonl(p)
    m = Manifest([])
    for ex in raw:
        if limit is not None and len(m.examples) >= limit:
            break
        problem = _check_clips(ex, known_seconds)
        if problem:
            m.skipped += 1
            m.problems.append(f"{ex.source}: {problem}" if ex.source else problem)
        else:
            m.examples.append(ex)
    if not m.examples:
        raise DataError(f"{p}: no usable examples ({m.skipped} skipped: {m.problems[:1]})")
    return m


def spoken_turns_as_asr(manifest: Manifest) -> Manifest:
    """Stage 1 reads conversations as speech-recognition pairs: each spoken human turn becomes one ASR
    example (its clip, its text as the transcript); ASR examples pass through. Typed turns and replies are
    not used."""
    out: list[Example] = []
    for ex in manifest.examples:
        if ex.is_asr:
            out.append(ex)
            continue
        for t in ex.turns:
            if t.get("from") in ("human", "user") and "audio_index" in t and t.get("value", "").strip():
                i, text = t["audio_index"], t["value"]
                language = t.get("language") or ("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en")
                out.append(Example(f"{ex.id}/{i}", [ex.clips[i]], [], text, language,
                                   ex.clip_seconds[i] if ex.clip_seconds else 0.0))
    if not out:
        raise DataError("no spoken turns with text in the training data: stage 1 needs ASR pairs")
    return Manifest(out, manifest.skipped, manifest.problems)


def clip_key(path: str | Path) -> str:
    """How the caches name a clip: its resolved absolute path."""
    return str(Path(path).resolve())


def _check_clips(ex: Example, known_seconds: Mapping[str, float] | None = None) -> str | None:
    total = 0.0
    if known_seconds is not None and ex.clips and all(clip_key(c) in known_seconds for c in ex.clips):
        ex.clip_seconds = [float(known_seconds[clip_key(c)]) for c in ex.clips]
        ex.seconds = sum(ex.clip_seconds)
        return None
    import soundfile as sf

    for c in ex.clips:
        try:
            info = sf.info(str(c))
        except Exception as e:  # soundfile raises RuntimeError / LibsndfileError / OSError
            return f"{c}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        secs = info.frames / max(info.samplerate, 1)
        if secs <= 0.0 or secs > 30.0:
            return f"{c}: duration {secs:.1f} s outside (0, 30] s"
        total += secs
        ex.clip_seconds.append(secs)
    ex.seconds = total
    return None


def _jsonl(p: Path) -> Iterator[Example]:
    base = p.parent
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not JSON ({e.msg}); each line must be one JSON object") from None
            if "conversations" in d:
                clips, turns = [], []
                for t in d["conversations"]:
                    t = dict(t)
                    if t.get("audio"):
                        clips.append(base / t["audio"])
                        t["audio_index"] = len(clips) - 1
                    turns.append(t)
                loss = d.get("loss", "")
                if loss not in ("", "ce", "kl"):
                    raise DataError(f"{p}:{n}: 'loss' must be 'ce' or 'kl', not {loss!r}")
                yield Example(str(d.get("id", n)), clips, turns, loss=loss, source=f"{p}:{n}")
            elif "audio" in d and "text" in d:
                if not isinstance(d["text"], str) or not d["text"].strip():
                    raise DataError(f"{p}:{n}: 'text' is empty; give the words spoken in {d['audio']!r} or "
                                    f"remove the line")
                yield Example(str(d.get("id", n)), [base / d["audio"]], [], d["text"], d.get("language", ""),
                              source=f"{p}:{n}")
            else:
                raise DataError(f"{p}:{n}: need either 'audio'+'text' (ASR) or 'conversations'")


def _librispeech(root: Path) -> Iterator[Example]:
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if " " not in line:
                continue
            uid, text = line.split(" ", 1)
            text = text.strip().lower()
            yield Example(uid, [trans.parent / f"{uid}.flac"], [], text[:1].upper() + text[1:], "en")


def _aishell(root: Path) -> Iterator[Example]:
    trans = next(root.rglob("aishell_transcript*.txt"))
    wavs = {w.stem: w for w in root.rglob("*.wav")}
    for line in trans.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        uid, text = parts[0], "".join(parts[1:])
        yield Example(uid, [wavs.get(uid, root / "wav" / f"{uid}.wav")], [], text, "zh")


def _common_voice(tsv: Path) -> Iterator[Example]:
    import csv

    clips = tsv.parent / "clips"
    with tsv.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if not row.get("path") or row.get("sentence") is None:
                raise DataError(f"{tsv}: a Common Voice TSV needs 'path' and 'sentence' columns")
            if not row["sentence"].strip():
                raise DataError(f"{tsv}:{reader.line_num}: 'sentence' is empty; give the words spoken in "
                                f"{row['path']!r} or remove the line")
            lang = (row.get("locale") or "").split("-")[0]
            yield Example(row["path"], [clips / row["path"]], [], row["sentence"].strip(), lang,
                          source=f"{tsv}:{reader.line_num}")


# ---- examples -> turns ---------------------------------------------------------------------------------
def instruction_for(language: str, rng: random.Random) -> str:
    if language.startswith("zh"):
        pool = TRANSCRIBE_INSTRUCTIONS_ZH
    elif language:
        pool = TRANSCRIBE_INSTRUCTIONS_EN
    else:
        pool = TRANSCRIBE_INSTRUCTIONS_EN + TRANSCRIBE_INSTRUCTIONS_ZH
    return rng.choice(pool)


def asr_turns(ex: Example, rng: random.Random | None, *, with_answer: bool = True) -> list[Turn]:
    """Stage 1: instruction randomly before or after the audio (rng None: fixed, audio after)."""
    if rng is None:
        instr, first = TRANSCRIBE_INSTRUCTIONS_EN[0], False
    else:
        instr, first = instruction_for(ex.language, rng), rng.random() < 0.5
    turns = [Turn("user", instr, audio=0, audio_first=first, transcript=ex.text)]
    if with_answer:
        turns.append(Turn("assistant", ex.text))
    return turns


def conversation_turns(ex: Example) -> list[Turn]:
    """Stage 2: spoken (with audio) and typed human turns, every gpt turn trained."""
    out = []
    for t in ex.turns:
        who = t.get("from", "")
        if who in ("human", "user"):
            if "audio_index" in t:
                # an optional typed instruction after the audio, as a `--transcribe` turn puts it at run time
                out.append(Turn("user", t.get("instruction", ""), audio=t["audio_index"], audio_first=True,
                                transcript=t.get("value", "")))
            else:
                out.append(Turn("user", t.get("value", "")))
        elif who in ("gpt", "assistant"):
            out.append(Turn("assistant", t.get("value", "")))
        elif who == "system":
            out.append(Turn("system", t.get("value", "")))
    return out


def example_rng(seed: int, epoch: int, index: int) -> random.Random:
    """Per-example randomness from (seed, epoch, index): independent of process state, so resumes repeat it."""
    return random.Random((seed * 1_000_003 + epoch) * 1_000_003 + index)


# ---- audio --------------------------------------------------------------------------------------------
def load_clip(path: Path) -> np.ndarray:
    from llasm.assistant.audio import load_audio

    return load_audio(str(path), sample_rate=SAMPLE_RATE)


def features_batch(audios: Sequence[np.ndarray], n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel of each clip at its real length, zero padded: [B, n_mels, T] and lengths [B]."""
    from llasm.assistant.audio import log_mel

    mels = [log_mel(a, n_mels=n_mels) for a in audios]
    t = max(m.shape[1] for m in mels)
    out = np.zeros((len(mels), n_mels, t), np.float32)
    for i, m in enumerate(mels):
        out[i, :, : m.shape[1]] = m
    return torch.from_numpy(out), torch.tensor([m.shape[1] for m in mels], dtype=torch.long)


# ---- batching -----------------------------------------------------------------------------------------
def length_grouped_batches(seconds: Sequence[float], batch_size: int, seed: int, epoch: int,
                           world: int = 1, group: int = 32) -> list[list[int]]:
    """Shuffle, sort within mega-batches of `group` batches by length, shuffle the batches; the count is a
    multiple of `world` so every rank gets the same number. Deterministic in (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(seconds))
    mega = batch_size * group
    batches: list[list[int]] = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i: i + mega].tolist(), key=lambda j: -seconds[j])
        batches.extend(chunk[k: k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)  # type: ignore[arg-type]
    n = len(batches) - len(batches) % world
    if n == 0:
        raise DataError(f"{len(seconds)} examples make fewer batches than processes ({world})")
    return batches[:n]


class StateCache:
    """Frozen encoder states computed once: sharded safetensors + index.json {audio path: [shard, key, T]}."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.index = json.loads((self.root / "index.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"state cache {self.root} unreadable ({e}); rebuild it with `llasm-train cache-states`") from None
        self._open: dict[str, Any] = {}

    def __contains__(self, path: Path) -> bool:
        return str(Path(path).resolve()) in self.index["clips"]

    def get(self, path: Path) -> torch.Tensor:
        from safetensors import safe_open

        shard, key = self.index["clips"][str(Path(path).resolve())]
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.root / shard), framework="pt")
        return self._open[shard].get_tensor(key).float()


class HeardCache:
    """What a frozen top-1 ctc adaptor hears in each clip, computed once (`llasm-train cache-heard`): the token
    ids it reads to the LLM, and the clip's length in seconds. One JSON file:
    `{"format": "llasm-heard", "adaptor_sha256": ..., "clips": {path: {"ids": [...], "seconds": s}}}`.

    Stage 2 over such an adaptor needs nothing else of the audio: not the clips, not their encoder states and
    not the encoder, so a run on another machine (a GPU) copies the manifests and this file, not gigabytes of
    states. `adaptor_sha256` ties it to the adaptor it was computed with: its weights and, for a shortlist head,
    its vocabulary (`training.train.hearing_sha256`)."""

    FORMAT = "llasm-heard"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"heard cache {self.path} unreadable ({e}); rebuild it with `llasm-train cache-heard`") from None
        if not isinstance(raw, dict) or raw.get("format") != self.FORMAT or not isinstance(raw.get("clips"), dict):
            raise DataError(f"{self.path} is not a heard cache (format {raw.get('format') if isinstance(raw, dict) else None!r}); "
                            "build one with `llasm-train cache-heard`")
        self.adaptor_sha256: str = str(raw.get("adaptor_sha256", ""))
        self.clips: dict[str, dict[str, Any]] = raw["clips"]

    def __contains__(self, path: Path) -> bool:
        return clip_key(path) in self.clips

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def seconds(self) -> dict[str, float]:
        return {k: float(v["seconds"]) for k, v in self.clips.items()}

    def get(self, path: Path) -> list[int]:
        try:
            return [int(i) for i in self.clips[clip_key(path)]["ids"]]
        except KeyError:
            raise DataError(f"{path} is not in the heard cache {self.path}: run `llasm-train cache-heard` over "
                            "every manifest the run reads") from None


def pad_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip [T_i, D] states -> a zero-padded [B, max T, D] batch and the lengths."""
    lens = torch.tensor([s.shape[0] for s in states])
    x = torch.zeros(len(states), int(lens.max()), states[0].shape[1])
    for i, st in enumerate(states):
        x[i, : st.shape[0]] = st
    return x, lens


def collate(examples: Sequence[Example], model: Any, *, stage: int, objective: str, seed: int, epoch: int,
            indices: Sequence[int], cache: StateCache | None = None, kl: bool = False,
            train: bool = True, heard: HeardCache | None = None) -> dict[str, Any]:
    """Examples -> a batch dict for `LLaSM.forward` (audio features, cached states or heard token ids, samples,
    targets)."""
    clip_paths: list[Path] = []
    samples, teacher, targets, texts = [], [], [], []
    for ex, idx in zip(examples, indices, strict=True):
        base = len(clip_paths)
        clip_paths.extend(ex.clips)
        rng = example_rng(seed, epoch, idx) if train else None
        turns = asr_turns(ex, rng) if (stage == 1 or ex.is_asr) else conversation_turns(ex)
        for t in turns:
            if t.audio is not None:
                t.audio += base
        if objective == "ctc":
            targets.append(model.prompt.encode(ex.text if ex.is_asr else turns[0].transcript))
        else:
            samples.append(model.prompt.build(turns))
            if kl:  # None: this conversation trains with cross-entropy on its replies
                teacher.append(None if ex.loss == "ce" else model.prompt.build(turns, text_only=True))
        texts.append(ex.text)
    batch: dict[str, Any] = {"samples": samples, "teacher": teacher if kl else None, "targets": targets,
                             "texts": texts, "objective": objective}
    if heard is not None:
        if objective == "ctc":
            raise DataError("the ctc objective trains on encoder states: give a state cache, not a heard cache")
        batch["heard"] = [heard.get(p) for p in clip_paths]
    elif cache is not None:
        batch["states"], batch["state_lengths"] = pad_states([cache.get(p) for p in clip_paths])
    else:
        batch["features"], batch["mel_lengths"] = features_batch([load_clip(p) for p in clip_paths],
                                                                 model.encoder.n_mels)
    return batch


def batch_tokens(batch: dict[str, Any]) -> int:
    """LLM input positions in a batch (ctc: target tokens), for tokens/s."""
    if batch["objective"] == "ctc":
        return sum(len(t) for t in batch["targets"])
    return sum(len(s.ids) for s in batch["samples"])


__all__ = ["DataError", "Example", "HeardCache", "Manifest", "Sample", "StateCache", "clip_key", "collate", "features_batch",
           "length_grouped_batches", "pad_states", "read_manifest", "spoken_turns_as_asr"]
