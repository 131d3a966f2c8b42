"""The hearing n-gram (assistant/ngram.py): counts, Kneser-Ney probabilities, the file, and the beam search."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from llasm.assistant.ctcbeam import prefix_beam_search
from llasm.assistant.ngram import BOS, HearingLM, NgramError, count_ngrams, save_ngram

# five "transcripts" over 6 labels: 0 1 2 ("what color is"), 0 1 3, 4 5 ...
SEQS = [[0, 1, 2], [0, 1, 2], [0, 1, 3], [4, 5, 2], [4, 1, 2, 3]]
IDS = np.array([10, 11, 12, 13, 14, 15])  # label i is token IDS[i]


def _lm(order: int = 3, seqs: list[list[int]] = SEQS) -> HearingLM:
    keys, counts = count_ngrams(seqs, order)
    return HearingLM(keys, counts, order, IDS)


def test_counts_pack_each_padded_window() -> None:
    keys, counts = count_ngrams([[0, 1], [0, 1], [2]], 2)
    want = {(BOS, 0): 2, (0, 1): 2, (BOS, 2): 1}
    got = {(int(k) >> 16, int(k) & 0xFFFF): int(c) for k, c in zip(keys, counts, strict=True)}
    assert got == want and (np.diff(keys.astype(np.float64)) > 0).all()
    with pytest.raises(NgramError, match="order must be 1 to 4"):
        count_ngrams(SEQS, 5)
    with pytest.raises(NgramError, match="labels must be 0 to"):
        count_ngrams([[0, BOS]], 2)
    with pytest.raises(NgramError, match="no label sequences"):
        count_ngrams([[]], 3)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(order: int) -> None:
    """Kneser-Ney interpolation: after any context, seen or not, the probabilities of all labels sum to 1."""
    lm = _lm(order)
    for ctx in ([], [0], [0, 1], [4, 1], [5, 5, 5], [3, 0, 1], [2]):
        total = sum(lm.prob(ctx, w) for w in range(len(IDS)))
        assert total == pytest.approx(1.0, abs=1e-9), (order, ctx)
        assert all(lm.prob(ctx, w) > 0 for w in range(len(IDS)))


def test_what_was_said_is_likelier_than_what_was_not() -> None:
    lm = _lm(3)
    assert lm.prob([0, 1], 2) > lm.prob([0, 1], 3) > lm.prob([0, 1], 5)  # 2 twice after "0 1", 3 once, 5 never
    assert lm.prob([], 0) > lm.prob([], 1)  # transcripts start with 0 or 4, never with 1
    # an unseen context backs off to the shorter one: "5 1" was never said, "1" was
    assert lm.prob([5, 1], 2) == lm._prob((1,), 1, 2)
    assert lm.score([0, 1, 2]) > lm.score([0, 1, 5]) > -math.inf
    assert lm.score([0, 1, 2]) == pytest.approx(math.log(lm.prob([], 0)) + math.log(lm.prob([0], 1))
                                                + math.log(lm.prob([0, 1], 2)))
    rows = lm.logprobs([(), (0, 1), (4, 0, 1)])  # what the beam search asks: rows indexed by label
    assert rows[0][0] == pytest.approx(math.log(lm.prob([], 0)))
    assert rows[1][2] == pytest.approx(math.log(lm.prob([0, 1], 2)))
    assert rows[2][2] == rows[1][2]  # a trigram reads the last two labels only
    lm.keep([(0,)])  # holds nothing per prefix


def test_the_file_round_trips_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    keys, counts = count_ngrams(SEQS, 3)
    path = tmp_path / "hearing_lm.npz"
    save_ngram(path, keys, counts, 3, IDS)
    lm = HearingLM.load(path, IDS)
    ref = _lm(3)
    assert all(lm.prob(c, w) == ref.prob(c, w) for c in ([], [0], [0, 1]) for w in range(len(IDS)))
    with pytest.raises(NgramError, match="other labels than this adaptor's"):
        HearingLM.load(path, IDS + 1)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    other = tmp_path / "other.npz"
    np.savez(other, keys=keys)
    for p in (truncated, bad, other, tmp_path / "missing.npz"):
        with pytest.raises(NgramError) as e:
            HearingLM.load(p, IDS)
        assert "\n" not in str(e.value) and "re-export the bundle" in str(e.value)
    unsorted = tmp_path / "unsorted.npz"
    save_ngram(unsorted, keys[::-1], counts[::-1], 3, IDS)
    with pytest.raises(NgramError, match="sorted"):
        HearingLM.load(unsorted, IDS)


def test_the_ngram_keeps_a_said_phrasing_in_the_beam() -> None:
    """The acoustics slightly prefer "0 3" (as in "what cauliflower"); the transcripts say "0 1" far more often.
    A beam of one keeps the acoustically best start without the n-gram and the said one with it; with both the
    n-gram and a table LM the weights add up (the n-gram alone at weight w = both at w / 2 each when they agree)."""
    p = np.full((4, 7), 1e-6)  # labels 0-5, blank last
    p[0, 0] = 1.0
    p[1, [3, 1]] = [0.52, 0.48]
    p[2, 6] = 1.0
    p[3, 2] = 1.0
    lp = np.log(p / p.sum(axis=1, keepdims=True))
    lm = _lm(3)
    plain = prefix_beam_search(lp, beam=1, per_frame=2)
    heard = prefix_beam_search(lp, beam=1, per_frame=2, ngram=lm, ngram_weight=0.5)
    assert plain[0][0] == (0, 3, 2) and heard[0][0] == (0, 1, 2)
    assert heard[0][1] == pytest.approx(dict(prefix_beam_search(lp, beam=8, per_frame=3))[(0, 1, 2)], abs=1e-5)
    both = prefix_beam_search(lp, beam=4, per_frame=2, lm=lm, lm_weight=0.25, ngram=lm, ngram_weight=0.25)
    assert both == prefix_beam_search(lp, beam=4, per_frame=2, ngram=lm, ngram_weight=0.5)
    assert prefix_beam_search(lp, beam=2, per_frame=2, ngram=lm, ngram_weight=0.0) == \
        prefix_beam_search(lp, beam=2, per_frame=2)


def test_remembered_lookups_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long session asks about many contexts: the memo is cleared at MEMO_LIMIT, and answers do not change."""
    import llasm.assistant.ngram as ngram

    monkeypatch.setattr(ngram, "MEMO_LIMIT", 50)
    lm = _lm(4)
    first = [lm.prob([a, b, c], w) for a in range(6) for b in range(6) for c in range(6) for w in range(6)]
    assert 0 < len(lm._cache) < 50
    again = [lm.prob([a, b, c], w) for a in range(6) for b in range(6) for c in range(6) for w in range(6)]
    assert again == first
