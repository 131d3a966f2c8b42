"""The hearing n-gram: a token n-gram over the ctc head's labels, counted from the transcripts stage 1 heard.

The ctc head scores each frame alone, so its beam keeps prefixes no one would say ("what country is flash"). The
LLM inside the beam search (shallow fusion, assistant/ctcbeam.py) fixes many of them but costs about 470 ms a
question on 2 threads; this n-gram costs about 2 ms, so one-shot answers can have it too. It knows the phrasings
stage 1 trained on and little else: it keeps those phrasings in the beam, so many more held-out template
questions are heard word for word and free ones about as often. Its weight, 0.3, was chosen on the dev sets; what
it measures held out is in docs/model-card.md.

Interpolated Kneser-Ney (Chen & Goodman 1998, one discount per order estimated from the counts of counts) over
label indices, with `BOS` padding each transcript's start. The file (`save_ngram`, bundle.json's
`hearing.ngram`) is an .npz holding only the highest order's counts, each n-gram packed in one uint64 (16 bits
a label), plus the token ids of the labels it was counted over; the lower orders' continuation counts are
derived when it loads.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Sequence

import numpy as np

FORMAT = "llasm-hearing-ngram"
VERSION = 1
BOS = 0xFFFF  # the label that pads a transcript's start (labels are 0 .. 65534)
MAX_ORDER = 4  # four 16-bit labels fill a uint64 key
# probabilities remembered across lookups: about 4,000 new ones an utterance, about 200 bytes each, so a long
# hands-free conversation stays within about 20 MB
MEMO_LIMIT = 100_000
_BITS = 16


class NgramError(ValueError):
    """A hearing n-gram file that cannot be read or does not fit the adaptor."""


def _pack(cols: np.ndarray) -> np.ndarray:
    """[N, k] labels -> [N] uint64 keys (first label in the highest bits)."""
    key = np.zeros(cols.shape[0], np.uint64)
    for j in range(cols.shape[1]):
        key = (key << np.uint64(_BITS)) | cols[:, j].astype(np.uint64)
    return key


def count_ngrams(seqs: Iterable[Sequence[int]], order: int) -> tuple[np.ndarray, np.ndarray]:
    """The highest-order counts of label sequences, each padded in front with order - 1 `BOS`: (sorted uint64
    keys, uint32 counts)."""
    if not 1 <= order <= MAX_ORDER:
        raise NgramError(f"the hearing n-gram's order must be 1 to {MAX_ORDER}, got {order}")
    pad = [BOS] * (order - 1)
    windows = []
    for s in seqs:
        a = np.asarray(pad + list(s), np.int64)
        if a.size == len(pad):
            continue
        if a.min() < 0 or a.max() > BOS or (a[len(pad):] == BOS).any():
            raise NgramError(f"labels must be 0 to {BOS - 1}")
        windows.append(np.lib.stride_tricks.sliding_window_view(a, order))
    if not windows:
        raise NgramError("no label sequences to count")
    keys, counts = np.unique(_pack(np.concatenate(windows)), return_counts=True)
    return keys, counts.astype(np.uint32)


def save_ngram(path: str | os.PathLike[str], keys: np.ndarray, counts: np.ndarray, order: int,
               ids: np.ndarray) -> None:
    """Write the counts (`count_ngrams`) and the token ids of the labels (the adaptor's `ids`) as an .npz."""
    np.savez_compressed(path, format=np.array(FORMAT), version=np.array(VERSION), order=np.array(order),
                        keys=np.asarray(keys, np.uint64), counts=np.asarray(counts, np.uint32),
                        ids=np.asarray(ids, np.int32))


def _key(labels: Sequence[int]) -> int:
    """Labels packed as one int, as `_pack` packs them (first label in the highest bits)."""
    key = 0
    for c in labels:
        key = (key << _BITS) | c
    return key


def _discount(counts: np.ndarray) -> float:
    """Kneser-Ney's absolute discount from the counts of counts, n1 / (n1 + 2 n2), kept inside (0.1, 0.95)."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return min(0.95, max(0.1, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.75


class _Level:
    """One order's counts: n-gram key -> count, context key -> (total, distinct next labels), its discount."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.counts = dict(zip(keys.tolist(), counts.tolist(), strict=True))
        ctx = keys >> np.uint64(_BITS)  # keys are sorted, so each context's n-grams are one run
        starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
        tot = np.add.reduceat(counts.astype(np.int64), starts)
        types = np.diff(np.r_[starts, ctx.size])
        self.ctx = dict(zip(ctx[starts].tolist(), zip(tot.tolist(), types.tolist(), strict=True), strict=True))
        self.d = _discount(counts)


class HearingLM:
    """log P(next label | earlier labels) under the hearing n-gram; `logprobs` / `keep` are what
    `prefix_beam_search` asks of a language model (`ctcbeam.NextLabelLM`)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, order: int, ids: np.ndarray) -> None:
        keys, counts = np.asarray(keys, np.uint64), np.asarray(counts, np.int64)
        if not 1 <= order <= MAX_ORDER or keys.shape != counts.shape or keys.size == 0:
            raise NgramError("malformed hearing n-gram (order, keys and counts disagree)")
        if np.any(keys[1:] <= keys[:-1]) or (counts < 1).any():
            raise NgramError("malformed hearing n-gram (keys must be sorted and distinct, counts positive)")
        self.order, self.ids = order, np.asarray(ids, np.int64)
        self.n_labels = int(self.ids.size)
        levels = [_Level(keys, counts)]
        for k in range(order - 1, 0, -1):  # continuation counts: how many labels precede each shorter n-gram
            keys, counts = np.unique(keys & np.uint64((1 << (_BITS * k)) - 1), return_counts=True)
            levels.append(_Level(keys, counts))
        self._levels = levels[::-1]  # [k - 1]: order k
        self._cache: dict[tuple[int, int], float] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str], ids: np.ndarray | None = None) -> HearingLM:
        """Read a `save_ngram` file; with `ids` (the adaptor's label -> token id map) check it was counted over
        the same labels. Raises NgramError with a one-line reason."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != FORMAT or int(z["version"]) != VERSION:
                    raise NgramError(f"{path} is not a version-{VERSION} {FORMAT} file: re-export the bundle")
                lm = cls(z["keys"], z["counts"], int(z["order"]), z["ids"])
        except NgramError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NgramError(f"{path} is not a readable hearing n-gram ({msg}): re-export the bundle") from None
        if ids is not None and not np.array_equal(lm.ids, np.asarray(ids, np.int64)):
            raise NgramError(f"{path} was counted over other labels than this adaptor's: re-export the bundle")
        return lm

    def _context(self, seq: Sequence[int]) -> tuple[int, ...]:
        """The last order - 1 labels of seq, `BOS` in front where it is shorter (the transcript's start)."""
        return ((BOS,) * (self.order - 1) + tuple(seq))[len(seq):] if self.order > 1 else ()

    def prob(self, ctx: Sequence[int], label: int) -> float:
        """P(label | the last order - 1 labels of ctx), ctx in labels (a shorter one starts the transcript)."""
        c = self._context(ctx)
        return self._prob(c, _key(c), label)

    def _prob(self, ctx: tuple[int, ...], ctx_key: int, label: int) -> float:
        memo = (ctx_key | (len(ctx) << 60), label)
        p = self._cache.get(memo)
        if p is not None:
            return p
        lv = self._levels[len(ctx)]
        if ctx:
            lower = self._prob(ctx[1:], ctx_key & ((1 << (_BITS * (len(ctx) - 1))) - 1), label)
        else:
            lower = 1.0 / self.n_labels
        seen = lv.ctx.get(ctx_key)
        if seen is None:
            p = lower
        else:
            tot, types = seen
            c = lv.counts.get((ctx_key << _BITS) | label, 0)
            p = (max(c - lv.d, 0.0) + lv.d * types * lower) / tot
        if len(self._cache) >= MEMO_LIMIT:
            self._cache.clear()
        self._cache[memo] = p
        return p

    def logprob(self, ctx: Sequence[int], label: int) -> float:
        return math.log(self.prob(ctx, label))

    def score(self, labels: Sequence[int]) -> float:
        """log P of a whole label sequence from the start."""
        ctx = [BOS] * (self.order - 1)
        total = 0.0
        for lab in labels:
            total += self.logprob(ctx, lab)
            ctx = ctx[1:] + [lab] if self.order > 1 else ctx
        return total

    def logprobs(self, seqs: Sequence[tuple[int, ...]]) -> list[_Row]:
        return [_Row(self, self._context(s)) for s in seqs]

    def keep(self, seqs: Sequence[tuple[int, ...]]) -> None:
        """Nothing to free: the n-gram holds no state per prefix."""


class _Row:
    """The next-label log-probs after one prefix, computed for the labels asked for only."""

    __slots__ = ("_ctx", "_key", "_lm")

    def __init__(self, lm: HearingLM, ctx: tuple[int, ...]) -> None:
        self._lm, self._ctx, self._key = lm, ctx, _key(ctx)

    def __getitem__(self, label: int) -> float:
        return math.log(self._lm._prob(self._ctx, self._key, int(label)))
