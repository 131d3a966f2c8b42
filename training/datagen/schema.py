"""Manifest schema checks: the contract between the dataset builder and the trainer.

`check_manifest(path)` returns a list of problems (empty when the file is valid): every line a JSON object
of the ASR or the conversation shape, audio paths relative to the manifest and present, 16 kHz mono 16-bit.
"""

from __future__ import annotations

import json
from pathlib import Path

ASR_KEYS = {"audio": str, "text": str, "language": str, "voice": str, "aug": str}
LANGUAGES = {"en", "zh"}


def _check_audio(root: Path, rel: object, where: str, check_files: bool) -> list[str]:
    if not isinstance(rel, str) or not rel:
        return [f"{where}: audio must be a non-empty string"]
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        return [f"{where}: audio path {rel!r} must be relative to the manifest"]
    if not check_files:
        return []
    import soundfile as sf

    path = root / rel
    if not path.is_file():
        return [f"{where}: {rel} is missing"]
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 -- any unreadable file is a problem to report
        return [f"{where}: {rel} is unreadable ({e})"]
    if (info.samplerate, info.channels, info.subtype) != (16000, 1, "PCM_16"):
        return [f"{where}: {rel} is {info.samplerate} Hz, {info.channels} ch, {info.subtype}; expected 16 kHz mono PCM_16"]
    return []


def check_manifest(path: Path | str, *, check_files: bool = True) -> list[str]:
    path = Path(path)
    root = path.parent
    problems: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.name}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: not an object")
        elif "conversations" in row:
            problems += _check_conversation(row, root, where, check_files)
        else:
            for key, typ in ASR_KEYS.items():
                if not isinstance(row.get(key), typ) or not row.get(key):
                    problems.append(f"{where}: {key!r} missing or not a non-empty {typ.__name__}")
            if row.get("language") not in LANGUAGES:
                problems.append(f"{where}: language {row.get('language')!r} not one of {sorted(LANGUAGES)}")
            problems += _check_audio(root, row.get("audio"), where, check_files)
    return problems


def _check_conversation(row: dict, root: Path, where: str, check_files: bool) -> list[str]:
    problems = []
    if not isinstance(row.get("id"), str) or not row["id"]:
        problems.append(f"{where}: 'id' missing")
    turns = row.get("conversations")
    # a lone spoken human turn is a question without its reply (`data instructions --no-replies`)
    lone = isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], dict) and "audio" in turns[0]
    if not isinstance(turns, list) or (len(turns) < 2 and not lone):
        return problems + [f"{where}: 'conversations' must list at least a human and a gpt turn (or one "
                           f"spoken human turn)"]
    spoken = 0
    for i, t in enumerate(turns):
        expect = "human" if i % 2 == 0 else "gpt"
        if not isinstance(t, dict) or t.get("from") != expect:
            problems.append(f"{where}: turn {i} should be from {expect!r}")
            continue
        if not isinstance(t.get("value"), str) or not t["value"]:
            problems.append(f"{where}: turn {i} has no text value")
        if "audio" in t:
            if expect != "human":
                problems.append(f"{where}: turn {i} is a gpt turn with audio")
            spoken += 1
            problems += _check_audio(root, t["audio"], f"{where} turn {i}", check_files)
    if not lone and turns and isinstance(turns[-1], dict) and turns[-1].get("from") != "gpt":
        problems.append(f"{where}: the last turn must be the gpt reply")
    if spoken == 0:
        problems.append(f"{where}: no spoken (audio) human turn")
    return problems
