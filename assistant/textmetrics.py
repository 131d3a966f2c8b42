"""The one text normalisation and word error rate of the project: `llasm-assistant evaluate`, training's
held-out eval (training/train.py) and the docs' figures all score transcripts with these, so their numbers
compare.

    wer(["The cat sat."], ["the bat sat"])  # 1 edit over 3 reference words = 0.333...
"""

from __future__ import annotations

from .ctcbeam import spoken_words

# lower-case words without punctuation or apostrophes, small numbers as digits (Whisper-style): the same
# normalisation the hearing's rescoring compares transcripts with (assistant/ctcbeam.py)
normalize = spoken_words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists: substitutions, deletions and insertions, each 1."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate: total edits over total reference words (normalised); it can exceed 1."""
    n = sum(len(normalize(r)) for r in refs)
    e = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True))
    return e / max(n, 1)
