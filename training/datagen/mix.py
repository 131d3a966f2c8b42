"""Stage-2 training conversations in a bundle's own prompt: spoken transcription requests and spoken questions.

`llasm-train data mix` writes one conversation manifest from ASR clips and spoken-question conversations:

- each ASR clip becomes [system, user: <audio> + the transcribe instruction, assistant: the transcript], the
  turn `llasm-assistant --transcribe` sends at run time;
- each spoken question keeps its turns, with the same system prompt put first.

Audio paths are written relative to the output manifest, so the clips (and a state cache built from their
original manifests) are reused, not copied.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from llasm.training.data import DataError, read_manifest


def heard_transcripts(bundle: str | Path, clips: list[Path], *, progress: bool = False) -> list[str]:
    """What a bundle's adaptor hears in each clip (its ctc transcript), through the runtime's own encoder."""
    from llasm.assistant.audio import load_audio
    from llasm.assistant.engine import Engine
    from tqdm import tqdm

    eng = Engine.load(bundle, n_threads=None)
    try:
        out = []
        for c in tqdm(clips, desc="heard transcripts", unit="clip", disable=not progress):
            _, heard, _ = eng.encode_audio(load_audio(str(c)))
            if heard is None:
                raise DataError(f"bundle {bundle}: its adaptor writes no transcript (only ctc adaptors do)")
            out.append(heard)
        return out
    finally:
        eng.close()


def build_mix(out: str | Path, *, asr: str, conversations: str | None, asr_count: int | None,
              system_prompt: str, transcribe_instruction: str, seed: int = 0,
              heard_bundle: str | Path | None = None, progress: bool = False) -> dict[str, int]:
    """Write OUT (a .jsonl manifest); returns how many transcription and question conversations it holds.

    `heard_bundle` (a bundle with a ctc adaptor): a transcription request's reply is what that adaptor hears,
    trained with cross-entropy (`"loss": "ce"`): the LLM learns to read back the words it is given, word for
    word, instead of rewriting them; the true transcript stays in the row as `"transcript"`."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise DataError(f"--out {out}: the mix is one manifest file and must end in .jsonl")
    if not transcribe_instruction.strip():
        raise DataError("--transcribe-instruction is empty")
    conv_exs = [e for e in read_manifest(conversations).examples if not e.is_asr] if conversations else []
    if conversations and not conv_exs:
        raise DataError(f"{conversations}: no conversations in it")
    if any(not any(t.get("from") in ("gpt", "assistant") for t in e.turns) for e in conv_exs):
        raise DataError(f"{conversations}: conversations without replies (built with --no-replies?) cannot "
                        f"train stage 2; build them with replies")
    asr_exs = [e for e in read_manifest(asr).examples if e.is_asr]
    if not asr_exs:
        raise DataError(f"{asr}: no ASR clips (audio + text) in it")
    rng = random.Random(seed)
    if asr_count is not None:
        if asr_count < 0:
            raise DataError(f"--asr-count must be at least 0, not {asr_count}")
        asr_exs = rng.sample(asr_exs, min(asr_count, len(asr_exs)))
    base = out.parent.resolve()

    def rel(p: Path) -> str:
        return os.path.relpath(Path(p).resolve(), base)

    system = [{"from": "system", "value": system_prompt}] if system_prompt.strip() else []
    heard = (heard_transcripts(heard_bundle, [e.clips[0] for e in asr_exs], progress=progress)
             if heard_bundle is not None else None)
    rows = []
    for i, e in enumerate(asr_exs):
        said = e.text if heard is None else heard[i]
        row: dict = {"id": f"asr-{e.id}", "conversations": system + [
            {"from": "human", "value": said, "audio": rel(e.clips[0]), "instruction": transcribe_instruction},
            {"from": "gpt", "value": said}]}
        if heard is not None:
            row.update(loss="ce", transcript=e.text)
        rows.append(row)
    for e in conv_exs:
        turns = []
        for t in e.turns:
            t = dict(t)
            if "audio_index" in t:
                t["audio"] = rel(e.clips[t.pop("audio_index")])
            turns.append(t)
        if not any(t.get("from") == "system" for t in turns):
            turns = system + turns
        rows.append({"id": f"conv-{e.id}", "conversations": turns})
    rng.shuffle(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return {"transcribe": len(asr_exs), "questions": len(conv_exs)}
