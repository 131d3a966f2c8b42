"""Hearing with a language model: CTC prefix beam search, then the N best transcripts rescored by the LLM.

The ctc adaptor's greedy path hears a question word for word only 2-4 % of the time on held-out voices; many of
its misses are one token off ("what country is flash"). The beam gives the other likely transcripts, and the
LLM (without the bundle's LoRA: the plain SmolLM2) says which of them reads as a question. The pick maximises

    ctc_logprob + lm_weight * lm_logprob + word_bonus * n_words

(the word bonus offsets the LM's preference for short transcripts). The chosen transcript (the greedy one when
n_best is 1) is then made a sentence (`sentence_forms`, `sentence` in the settings): its first letter
capitalised, and its end ('?' or '.') picked by the LLM alone, because the ctc head hears a question's words far
better than its intonation ("How is Portugal different from Ireland."). Measured in docs/model-card.md.

With `fusion` > 0 the LLM also takes part in the beam search (shallow fusion: `prefix_beam_search(lm=...)`, its
next-token log-probs from `assistant.llm.BeamLM`), so the beam keeps the prefixes that read as language before the
pick; hands-free mode hears this way.

Transcripts that say the same words (`spoken_words`) and differ only in spelling (case, punctuation: "Hello! plan"
and "Hello! Plan") are one hypothesis (`merge_spellings`): the ctc head cannot hear a capital, and each spelling
took a place among the n best from other words. Their paths' probabilities are summed, and the hypothesis is
spelt as the head likes it best, i.e. as its training transcripts spell it, rather than as the LLM does.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .hearing import HearingOptions

_NEG = -1e30
def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b))."""
    if a < b:
        a, b = b, a
    return a if b <= _NEG else a + math.log1p(math.exp(b - a))


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class NextLabelLM(Protocol):
    """What `prefix_beam_search` asks a language model (assistant.llm.BeamLM)."""

    def logprobs(self, seqs: Sequence[tuple[int, ...]]) -> list[np.ndarray]: ...

    def keep(self, seqs: Sequence[tuple[int, ...]]) -> None: ...


def prefix_beam_search(logprobs: np.ndarray, beam: int = 16, per_frame: int = 6, sure_blank: float = -1e-4,
                       lm: NextLabelLM | None = None, lm_weight: float = 0.0, label_bonus: float = 0.0,
                       ngram: NextLabelLM | None = None,
                       ngram_weight: float = 0.0) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search. logprobs: [T, V + 1] (blank last). Returns up to `beam` (labels, log P) pairs,
    best first, where log P sums every alignment of the labels. Frames whose blank log-prob exceeds
    `sure_blank` only extend every prefix by the blank (no label is tried there).

    With `lm` and / or `ngram` (shallow fusion), the beam is ranked by log P + lm_weight * log P_lm(labels) +
    ngram_weight * log P_ngram(labels) + label_bonus * the number of labels, so prefixes that read as language
    stay in it; the pairs returned keep the ctc log P (ordered by the fused rank)."""
    lp = np.asarray(logprobs, np.float32)
    blank = lp.shape[1] - 1
    k = min(per_frame, blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG)}  # prefix -> (ends in blank, not)
    lms = [(m, w) for m, w in ((lm, lm_weight), (ngram, ngram_weight)) if m is not None]
    lm_sum: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> its weighted LM log P

    def rank(p: tuple[int, ...], b: float, nb: float) -> float:
        return _lae(b, nb) + (lm_sum[p] + label_bonus * len(p) if lms else 0.0)

    for row in lp:
        pblank = float(row[blank])
        if pblank > sure_blank:
            beams = {p: (_lae(b, nb) + pblank, _NEG) for p, (b, nb) in beams.items()}
            continue
        cands = np.argpartition(-row[:blank], k - 1)[:k].tolist() if k < blank else list(range(blank))
        vals = row[cands].tolist()
        nxt: dict[tuple[int, ...], list[float]] = {}
        nexts = [(dict(zip(beams, m.logprobs(list(beams)), strict=True)), w) for m, w in lms]
        for p, (b, nb) in beams.items():
            tot = _lae(b, nb)
            e = nxt.setdefault(p, [_NEG, _NEG])
            e[0] = _lae(e[0], tot + pblank)
            last = p[-1] if p else -1
            for c, v in zip(cands, vals, strict=True):
                q = p + (c,)
                if lms and q not in lm_sum:
                    lm_sum[q] = lm_sum[p] + sum(w * float(nx[p][c]) for nx, w in nexts)
                nq = nxt.setdefault(q, [_NEG, _NEG])
                if c == last:  # a repeat without a blank between stays one label; after a blank it is two
                    e[1] = _lae(e[1], nb + v)
                    nq[1] = _lae(nq[1], b + v)
                else:
                    nq[1] = _lae(nq[1], tot + v)
        live = [kv for kv in nxt.items() if max(kv[1]) > _NEG]  # a repeat right after no blank makes none
        ranked = sorted(live, key=lambda kv: -rank(kv[0], *kv[1]))[:beam]
        beams = {p: (v[0], v[1]) for p, v in ranked}
        if lms:
            for m, _ in lms:
                m.keep(list(beams))
            lm_sum = {p: lm_sum[p] for p in beams}
    return [(p, _lae(b, nb)) for p, (b, nb) in sorted(beams.items(), key=lambda kv: -rank(kv[0], *kv[1]))]


_ENDS = ("?", ".")
_NUM = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
        "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


_CJK = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def spoken_words(text: str) -> list[str]:
    """The words a transcript says: lower case, without punctuation, small numbers as digits (Whisper-style
    normalisation; transcripts with the same spoken words sound the same, and WER compares these). Chinese and
    Japanese characters count one word each, since those scripts do not space words (a WER there is a CER)."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = _CJK.sub(r" \1 ", re.sub(r"[^\w\s']", " ", t)).replace("'", "")
    return [_NUM.get(w, w) for w in t.split()]


def capitalised(text: str) -> str:
    """The transcript with its first character upper-cased, as a sentence starts (and as typed text does)."""
    t = text.strip()
    return t[:1].upper() + t[1:]


def sentence_forms(text: str) -> list[str]:
    """The ways a transcript can read as a sentence: capitalised, ending as heard first, then with each other
    end mark ('?', '.') in place of whatever end marks it has. Only the first form when it has no words."""
    t = capitalised(text)
    stem = t.rstrip("".join(_ENDS) + "!" + " ")
    if not any(ch.isalnum() for ch in stem):
        return [t]
    return [t] + [stem + e for e in _ENDS if stem + e != t]


def choose(ctc: list[float], lm: list[float], n_words: list[int], cfg: HearingOptions) -> int:
    """Index of the transcript with the best combined score (ties: the earlier, i.e. likelier under ctc)."""
    scores = [c + cfg.lm_weight * m + cfg.word_bonus * n for c, m, n in zip(ctc, lm, n_words, strict=True)]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
