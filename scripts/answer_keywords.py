"""Does the answer name the right thing? Spoken, typed and Whisper-transcript answers against key words.

    python scripts/answer_keywords.py --questions docs/model-card/blind-questions.jsonl EVAL_JSON ...

QUESTIONS is a JSON-lines file whose records carry `instruction` (the question) and, for clear-cut questions,
`keys`: words any right answer names ("8", "eight"). Each EVAL_JSON (from `llasm-assistant evaluate`) is
scored on its questions that have keys: how many answers to the spoken question, to the typed question and to
Whisper's transcript name one of them (after `assistant.evaluate.normalize`, which writes numbers as digits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llasm.assistant.evaluate import normalize  # noqa: E402

ANSWERS = {"spoken": "spoken_answer", "typed": "typed_answer", "Whisper's transcript": "cascade_answer"}


def read_keys(path: Path) -> dict[str, set[str]]:
    """question text -> its key words (normalized), for the records that have `keys`."""
    out: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("keys"):
                out[rec["instruction"]] = {w for k in rec["keys"] for w in normalize(str(k))}
    return out


def score(rows: list[dict], keys: dict[str, set[str]]) -> dict[str, int]:
    """{'n': questions with keys, and per answer kind: how many of those answers name a key word}."""
    scored = [q for q in rows if q["question"] in keys]
    out = {"n": len(scored)}
    for name, field in ANSWERS.items():
        out[name] = sum(bool(keys[q["question"]] & set(normalize(q.get(field) or ""))) for q in scored)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", type=Path, help="eval.json files from llasm-assistant evaluate")
    ap.add_argument("--questions", type=Path, required=True, help="JSON lines with instruction and keys")
    a = ap.parse_args(argv)
    try:
        keys = read_keys(a.questions)
    except (OSError, json.JSONDecodeError, KeyError) as e:
        print(f"error: {a.questions}: unreadable questions file ({e})", file=sys.stderr)
        return 2
    if not keys:
        print(f"error: {a.questions}: no record has keys", file=sys.stderr)
        return 2
    total = dict.fromkeys(["n", *ANSWERS], 0)
    for path in a.evals:
        try:
            rows = json.loads(path.read_text())["question_rows"]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            print(f"error: {path}: not an eval.json ({e})", file=sys.stderr)
            return 2
        s = score(rows, keys)
        for k, v in s.items():
            total[k] += v
        print(f"{path}: {s['n']} questions with keys; the answer names one: "
              + ", ".join(f"{name} {s[name]}" for name in ANSWERS))
    if len(a.evals) > 1:
        print(f"all: {total['n']} questions; " + ", ".join(
            f"{name} {total[name]} ({total[name] / max(1, total['n']):.0%})" for name in ANSWERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
