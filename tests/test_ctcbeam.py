"""Hearing with the LLM's help (assistant/ctcbeam.py, LlamaLM.score, Engine n_best): the beam search against
brute force, the pick, the scorer against token-by-token decoding, and the engine's guards."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from conftest import clip
from llasm.assistant.ctcbeam import capitalised, choose, log_softmax, prefix_beam_search, sentence_forms
from llasm.assistant.hearing import HearingOptions


def _collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    out: list[int] = []
    prev = -1
    for lab in path:
        if lab != blank and lab != prev:
            out.append(lab)
        prev = lab
    return tuple(out)


def _brute_force(lp: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labels) summed over every alignment, by enumerating all (V+1)^T paths."""
    blank = lp.shape[1] - 1
    total: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        p = float(sum(lp[t, lab] for t, lab in enumerate(path)))
        key = _collapse(path, blank)
        total[key] = float(np.logaddexp(total.get(key, -np.inf), p))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_sums_every_alignment_like_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = log_softmax(rng.normal(0, 2, size=(5, 4)))  # 3 labels + blank, 5 frames: 1024 paths
    truth = _brute_force(lp)
    got = prefix_beam_search(lp, beam=10_000, per_frame=3, sure_blank=1.0)  # nothing pruned
    assert len(got) == len(truth)
    for labels, logp in got:
        assert logp == pytest.approx(truth[labels], abs=1e-4)
    assert [p for p, _ in got][:5] == sorted(truth, key=lambda k: -truth[k])[:5]
    assert math.isclose(float(np.logaddexp.reduce([v for _, v in got])), 0.0, abs_tol=1e-4)


def test_beam_search_repeats_need_a_blank_between() -> None:
    a, blank = 0, 2
    lp = np.full((3, 3), math.log(1e-6), np.float32)
    lp[0, a] = lp[1, blank] = lp[2, a] = 0.0  # a _ a: two a's
    assert prefix_beam_search(lp, beam=4, per_frame=2)[0][0] == (a, a)
    lp[1] = lp[0]  # a a a: one a
    assert prefix_beam_search(lp, beam=4, per_frame=2)[0][0] == (a,)


def test_sure_blank_frames_change_nothing_but_time() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, size=(12, 6))
    z[::2, -1] = 30.0  # every other frame is all but certainly blank
    lp = log_softmax(z)
    fast = prefix_beam_search(lp, beam=8, per_frame=5)
    slow = prefix_beam_search(lp, beam=8, per_frame=5, sure_blank=1.0)
    assert [p for p, _ in fast] == [p for p, _ in slow]
    assert np.allclose([v for _, v in fast], [v for _, v in slow], atol=1e-3)


def test_choose_weighs_ctc_lm_and_words() -> None:
    cfg = HearingOptions(lm_weight=0.5, word_bonus=2.0)
    # ctc prefers the first; the LM's 10 nats (x0.5) outweigh its 3
    assert choose([-1.0, -4.0], [-30.0, -20.0], [4, 4], cfg) == 1
    # one word more is worth 2
    assert choose([-1.0, -2.5], [-20.0, -20.0], [3, 4], cfg) == 1
    assert choose([-1.0, -1.0], [-20.0, -20.0], [4, 4], cfg) == 0  # a tie keeps the likelier (earlier)


def test_rescoring_settings_are_checked() -> None:
    assert HearingOptions.from_dict(None) == HearingOptions() and HearingOptions().n_best == 1  # off unless asked for
    assert HearingOptions.from_dict({"n_best": 4}).n_best == 4
    with pytest.raises(ValueError, match="unknown 'hearing' setting"):
        HearingOptions.from_dict({"nbest": 4})
    with pytest.raises(ValueError, match="beam >= n_best"):
        HearingOptions.from_dict({"n_best": 20, "beam": 8})
    # long utterances heard in pieces of at most chunk_s seconds; 0 hears them whole
    assert HearingOptions().chunk_s == 7.0 and HearingOptions.from_dict({"chunk_s": 0}).chunk_s == 0.0
    for bad in (3, -1, float("nan")):
        with pytest.raises(ValueError, match="chunk_s must be 0"):
            HearingOptions.from_dict({"chunk_s": bad})


def test_sentence_forms_capitalise_and_offer_each_end() -> None:
    assert capitalised(" what color is grass? ") == "What color is grass?" and capitalised("") == ""
    assert sentence_forms("what color is grass?") == ["What color is grass?", "What color is grass."]
    assert sentence_forms("How is Portugal different from Ireland.") == [
        "How is Portugal different from Ireland.", "How is Portugal different from Ireland?"]
    assert sentence_forms("Turn off the lights") == ["Turn off the lights", "Turn off the lights?",
                                                     "Turn off the lights."]
    assert sentence_forms("Hello there!?") == ["Hello there!?", "Hello there?", "Hello there."]
    assert sentence_forms("?") == ["?"] and sentence_forms("") == [""]  # no words: nothing to end
    assert HearingOptions().sentence and not HearingOptions.from_dict({"sentence": False}).sentence
    with pytest.raises(ValueError, match="must be true or false"):
        HearingOptions.from_dict({"sentence": "no"})


def test_candidates_share_the_rows_of_their_common_starts() -> None:
    from llasm.assistant.llm import _PrefixTree

    tree = _PrefixTree([[1, 2, 3], [1, 2, 4], [1, 5], [1, 2, 3], [1, 2]])
    # rows: 1, 2, 3, 4, 5 (one each), in the sequences (candidates + 1) that pass through them
    assert [(t, d, seqs) for t, d, seqs, _ in tree.nodes] == [
        (1, 0, [1, 2, 3, 4, 5]), (2, 1, [1, 2, 4, 5]), (3, 2, [1, 4]), (4, 2, [2]), (5, 1, [3])]
    assert [want for *_, want in tree.nodes] == [True, True, False, False, False]  # logits only where one goes on
    assert tree.paths == [[0, 1, 2], [0, 1, 3], [0, 4], [0, 1, 2], [0, 1]]


def test_the_llm_scores_candidates_like_token_by_token_decoding() -> None:
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.llm import LlamaLM, LLMError

    lm = LlamaLM(resolve("default:smollm2"), n_ctx=256, n_threads=1)
    try:
        prefix = lm.tokenize("<|im_start|>user\n")
        cands = [lm.tokenize(t, special=False) + lm.tokenize("<|im_end|>")
                 for t in ("What color is grass?", "what country is flash?", "Hi")]
        got = lm.score(prefix, cands)
        assert got == lm.score(prefix, cands)  # the kept prefix and dropped candidates leave no trace
        assert got[0] > got[1]  # the sensible question reads likelier
        # candidates that share their first tokens (decoded once, then shared)
        alike = [lm.tokenize(t, special=False) + lm.tokenize("<|im_end|>")
                 for t in ("What color is grass?", "What color is grass.", "What color is the sky?")]
        got_alike = lm.score(prefix, alike)
        assert got_alike[0] == pytest.approx(got[0], abs=1e-3) and got_alike[0] > got_alike[1]
        assert lm.score(prefix, alike[:1]) == pytest.approx(got_alike[:1], abs=1e-3)  # one candidate: nothing shared
        # a candidate that is the start of another, and a repeat: one prefix tree, each scored as if alone
        nested = [alike[0][:3], alike[0], alike[0]]
        got_nested = lm.score(prefix, nested)
        assert got_nested[1] == got_nested[2] == pytest.approx(got_alike[0], abs=1e-3)
        assert got_nested[0] == pytest.approx(lm.score(prefix, nested[:1])[0], abs=1e-3)
        assert got_nested[0] > got_nested[1]  # its start alone reads likelier than the whole
        one = [cands[0][:1]]  # one token: scored by the prefix's logits, nothing decoded
        for cand, value in zip(cands + alike + one, got + got_alike + lm.score(prefix, one), strict=True):
            lm.clear()
            logits = lm.decode_tokens(prefix, 0)
            want = 0.0
            for i, tok in enumerate(cand):
                z = logits.astype(np.float64) - logits.max()
                want += z[tok] - math.log(np.exp(z).sum())
                logits = lm.decode_tokens([tok], len(prefix) + i)
            assert value == pytest.approx(want, abs=1e-3)
        with pytest.raises(LLMError, match="non-empty"):
            lm.score(prefix, [[]])
    finally:
        lm.close()


def test_n_best_needs_a_ctc_adaptor_with_topk_1(bundle_factory) -> None:  # noqa: ANN001
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.engine import Engine

    for kind in ("linear", "ctc"):  # the test ctc bundle mixes 4 tokens a segment
        with pytest.raises(BundleError, match="needs a ctc adaptor with topk 1"):
            Engine.load(bundle_factory(kind, adaptor_type=kind), n_threads=1, warmup=False, hearing={"n_best": 4})


def test_a_bad_hearing_section_is_one_clear_error(bundle_factory) -> None:  # noqa: ANN001
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.engine import Engine

    root = bundle_factory()
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["hearing"] = {"n_best": 0}
    (root / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle.json: 'hearing' needs n_best >= 1"):
        Engine.load(root, n_threads=1, warmup=False)


def test_a_bundle_names_its_hearing_ngram_or_fails_in_one_line(bundle_factory) -> None:  # noqa: ANN001
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.engine import Engine
    from llasm.assistant.ngram import count_ngrams, save_ngram

    root = bundle_factory("ctc1", adaptor_type="ctc")
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["adaptor"]["topk"] = 1
    manifest["hearing"] = {"n_best": 3, "ngram": "hearing_lm.npz", "ngram_fusion": 0.4}
    (root / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"hearing_lm.npz is missing \(bundle.json's hearing.ngram\)"):
        Engine.load(root, n_threads=1, warmup=False)
    vocab = int(manifest["adaptor"]["vocab_size"])
    keys, counts = count_ngrams([[1, 2, 3], [1, 2, 4]], 2)
    save_ngram(root / "hearing_lm.npz", keys, counts, 2, np.arange(vocab - 1))  # one label short
    with pytest.raises(BundleError, match="counted over other labels than this adaptor's"):
        Engine.load(root, n_threads=1, warmup=False)
    save_ngram(root / "hearing_lm.npz", keys, counts, 2, np.arange(vocab))  # no shortlist: labels are token ids
    eng = Engine.load(root, n_threads=1, warmup=False)
    try:
        assert eng.hearing.ngram_fusion == 0.4 and eng.ngram is not None
        assert eng.ngram.prob([1], 2) > 0.5
        noise = clip(1.0)  # speech to the noise gate (hearing.not_speech), nonsense to the random adaptor
        asked: list[int] = []
        real = eng.ngram.logprobs
        eng.ngram.logprobs = lambda seqs: asked.append(len(seqs)) or real(seqs)  # type: ignore[method-assign]
        _, heard, _ = eng.encode_audio(noise)
        assert heard is not None and asked  # the beam search asked the n-gram
        asked.clear()
        eng.set_fusion(0.5)  # the LLM in the beam: the n-gram stands aside
        eng.encode_audio(noise)
        assert asked == []
        with pytest.raises(BundleError, match="n-gram fusion weight must be 0 or more"):
            eng.set_ngram_fusion(-1)
    finally:
        eng.close()
    manifest["hearing"] = {"n_best": 3, "ngram_fusion": 0.4}
    (root / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="needs a bundle with a hearing n-gram"):
        Engine.load(root, n_threads=1, warmup=False)
    manifest["hearing"] = {"n_best": 3}
    (root / "bundle.json").write_text(json.dumps(manifest))
    eng = Engine.load(root, n_threads=1, warmup=False)
    try:
        with pytest.raises(BundleError, match="needs a bundle with a hearing n-gram"):
            eng.set_ngram_fusion(0.5)
    finally:
        eng.close()


def test_hands_free_hears_with_the_llm_unless_told_otherwise(bundle_factory) -> None:  # noqa: ANN001
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.engine import Engine
    from llasm.assistant.handsfree import load_engine
    from llasm.assistant.hearing import HearingOptions
    from llasm.assistant.settings import Settings

    HANDSFREE_N_BEST, HANDSFREE_FUSION = HearingOptions().handsfree_n_best, HearingOptions().handsfree_fusion

    default = load_engine(Settings())  # the shipped ctc bundle: fusion and rescoring run in the end silence
    try:
        assert default.can_rescore and default.hearing.n_best == HANDSFREE_N_BEST > 1
        assert default.hearing.fusion == HANDSFREE_FUSION > 0
        default.set_n_best(1)
        default.set_fusion(0)
        assert default.hearing.n_best == 1 and default.hearing.fusion == 0
        with pytest.raises(BundleError, match="fusion weight must be 0 or more"):
            default.set_fusion(-1)
    finally:
        default.close()
    told = load_engine(Settings(n_best=1, fusion=0.0))
    try:
        assert told.hearing.n_best == 1 and told.hearing.fusion == 0
    finally:
        told.close()
    one_shot = Engine.load(None, n_threads=1, warmup=False)  # the shipped bundle's own: 3, no fusion (bundle.json)
    try:
        assert one_shot.hearing.n_best == 3 < HANDSFREE_N_BEST and one_shot.hearing.fusion == 0
    finally:
        one_shot.close()
    root = bundle_factory("ctc1", adaptor_type="ctc")
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["adaptor"]["topk"] = 1  # the test ctc bundle mixes 4 tokens a segment; the LLM can rescore top 1
    for hearing, n_best, fusion in (({"n_best": 2}, HANDSFREE_N_BEST, HANDSFREE_FUSION),  # at least 4 hands-free
                                    ({"n_best": 24, "beam": 24, "fusion": 0.2}, 24, 0.2)):  # ... the bundle's own
        manifest["hearing"] = hearing
        (root / "bundle.json").write_text(json.dumps(manifest))
        eng = load_engine(Settings(bundle=str(root)))
        try:
            assert (eng.hearing.n_best, eng.hearing.fusion) == (n_best, fusion)
        finally:
            eng.close()
    linear = load_engine(Settings(bundle=str(bundle_factory())))  # cannot rescore: stays greedy, no error
    try:
        assert not linear.can_rescore and linear.hearing.n_best == 1 and linear.hearing.fusion == 0
        with pytest.raises(BundleError, match="fusion needs a ctc adaptor with topk 1"):
            linear.set_fusion(0.5)
    finally:
        linear.close()


class _TableLM:
    """A next-label LM from a table: log P(label | last label) (row -1: the first label)."""

    def __init__(self, table: dict[int, list[float]]) -> None:
        self.table, self.asked, self.kept = table, [], []

    def logprobs(self, seqs):  # noqa: ANN001, ANN201
        self.asked.append(list(seqs))
        return [np.log(np.asarray(self.table[s[-1] if s else -1], np.float64)) for s in seqs]

    def keep(self, seqs) -> None:  # noqa: ANN001
        self.kept.append(list(seqs))


def test_shallow_fusion_keeps_what_reads_as_language_in_the_beam() -> None:
    """Frame by frame the acoustics slightly prefer label 0 then 2 ("0 2"); the LM says 1 comes first and 2
    follows 1 ("1 2"). A beam of one keeps only the acoustically best start, so the fused search reads "1 2"
    and the plain one "0 2". Without weight the LM changes nothing; the log P returned stays the ctc one."""
    p = np.full((4, 4), 1e-6)  # labels 0, 1, 2; blank last
    p[0, [0, 1]] = [0.52, 0.48]
    p[1, 3] = 1.0
    p[2, 2] = 1.0
    p[3, 3] = 1.0
    lp = np.log(p / p.sum(axis=1, keepdims=True))
    lm = _TableLM({-1: [0.05, 0.9, 0.05], 0: [0.1, 0.1, 0.8], 1: [0.05, 0.05, 0.9], 2: [0.3, 0.3, 0.4]})
    plain = prefix_beam_search(lp, beam=1, per_frame=2)
    fused = prefix_beam_search(lp, beam=1, per_frame=2, lm=lm, lm_weight=1.0)
    assert plain[0][0] == (0, 2) and fused[0][0] == (1, 2)
    assert fused[0][1] == pytest.approx(dict(prefix_beam_search(lp, beam=8, per_frame=3))[(1, 2)], abs=1e-5)
    assert lm.asked[0] == [()] and all(len(k) == 1 for k in lm.kept)  # it asks for the beam, keeps the beam
    unweighted = prefix_beam_search(lp, beam=2, per_frame=2, lm=_TableLM(lm.table), lm_weight=0.0)
    assert unweighted == prefix_beam_search(lp, beam=2, per_frame=2)
    # a bonus per label: the LM's log P falls with every label; the bonus keeps longer prefixes competitive
    short = prefix_beam_search(lp, beam=4, per_frame=3, lm=_TableLM(lm.table), lm_weight=5.0)
    longer = prefix_beam_search(lp, beam=4, per_frame=3, lm=_TableLM(lm.table), lm_weight=5.0, label_bonus=20.0)
    assert len(longer[0][0]) >= len(short[0][0]) and len(longer[0][0]) == 2


def test_the_beam_lm_gives_next_token_log_probs_like_scoring() -> None:
    """BeamLM decodes each sequence once, as a KV cell joined to its parent's: its next-token log-probs are the
    ones `score` gives (log P(seq + [t]) - log P(seq)); labels map to token ids; `keep` frees sequences."""
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.llm import LlamaLM, LLMError

    lm = LlamaLM(resolve("default:smollm2"), n_ctx=256, n_threads=1)
    try:
        prefix = lm.tokenize("<|im_start|>user\n")
        toks = lm.tokenize("What color is grass?", special=False)
        labels = np.array(sorted(set(toks) | {0, 1, 2}))  # a shortlist: label i stands for token labels[i]
        lab = [int(np.searchsorted(labels, t)) for t in toks]
        b = lm.beam_lm(prefix, labels, 8)
        first = b.logprobs([()])[0]
        assert first.shape == (len(labels),)
        assert float(first[lab[0]]) == pytest.approx(lm.score(prefix, [toks[:1]])[0], abs=1e-3)
        seqs = [tuple(lab[:1])]
        for i in range(1, len(toks)):
            got = b.logprobs(seqs)[0]
            want = lm.score(prefix, [toks[: i + 1]])[0] - lm.score(prefix, [toks[:i]])[0]
            assert float(got[lab[i]]) == pytest.approx(want, abs=1e-3)
            b.keep([seqs[0] + (lab[i],)])  # the beam moves on; the parent stays (the next step extends it)
            seqs = [seqs[0] + (lab[i],)]
            assert b.n_held <= 2
        other = seqs[0][:-1] + (0,)  # a sibling of the last: its parent is kept, so it can be asked
        b.keep([seqs[0], other])
        sib = b.logprobs([other])[0]
        want = lm.score(prefix, [toks[:-1] + [int(labels[0]), toks[0]]])[0] - lm.score(
            prefix, [toks[:-1] + [int(labels[0])]])[0]
        assert float(sib[lab[0]]) == pytest.approx(want, abs=1e-3)
        with pytest.raises(LLMError, match="must extend"):
            b.logprobs([(lab[1], lab[1], lab[1])])
        again = lm.beam_lm(prefix, labels, 8)  # the same context, every sequence forgotten
        assert again is b and again.n_held == 0 and np.allclose(again.logprobs([()])[0], first)
    finally:
        lm.close()


def test_spellings_of_the_same_words_are_one_hypothesis(bundle_factory, monkeypatch) -> None:  # noqa: ANN001
    """The beam holds "Hello! Plan a trip." and "Hello! plan a trip." (the head cannot hear a capital; it likes the
    lower-case spelling, as its training transcripts write it), then the same two spellings of "... ship". The LLM
    likes the capital. Merged, the n best are two different sentences, each with its spellings' summed log P and
    spelt as the head likes best, and the pick is the lower-case "trip". Unmerged, the two places go to the two
    spellings of "trip", and the LLM's capital wins."""
    import dataclasses

    import llasm.assistant.listening as engine_mod
    from llasm.assistant.engine import Engine

    root = bundle_factory("ctc1", adaptor_type="ctc")
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["adaptor"]["topk"] = 1
    manifest["hearing"] = {"n_best": 2}
    (root / "bundle.json").write_text(json.dumps(manifest))
    beams = [((1,), -1.2), ((2,), -1.0), ((3,), -1.5), ((4,), -1.6)]
    said = {1: "Hello! Plan a trip.", 2: "Hello! plan a trip.", 3: "Hello! plan a ship.", 4: "Hello! Plan a ship."}
    monkeypatch.setattr(engine_mod, "prefix_beam_search", lambda *a, **k: beams)
    picked: list[tuple[list[float], list[float]]] = []
    real_choose = engine_mod.choose
    monkeypatch.setattr(engine_mod, "choose",
                        lambda ctc, lm, n, cfg: picked.append((ctc, lm)) or real_choose(ctc, lm, n, cfg))
    eng = Engine.load(root, n_threads=1, warmup=False)
    try:
        ids = eng.adaptor.ids
        by_token = {lab if ids is None else int(ids[lab]): text for lab, text in said.items()}
        eng.listening._detok = lambda toks, pieces=1: by_token[toks[0]]  # type: ignore[method-assign]
        eng.listening._lm_scores = lambda texts: [(2.0 if " Plan" in t else 0.0) + (1.0 if t.endswith(".") else 0.0)  # type: ignore[method-assign]
                                        - (3.0 if "ship" in t else 0.0) for t in texts]
        logits = np.zeros((3, int(manifest["adaptor"]["vocab_size"]) + 1), np.float32)
        assert eng.hearing.merge_spellings  # the default
        assert eng.listening._hear_with_lm(logits, "greedy") == "Hello! plan a trip."
        ctc, _ = picked[-1]
        assert ctc == pytest.approx([float(np.logaddexp(-1.2, -1.0)), float(np.logaddexp(-1.5, -1.6))])
        eng.hearing = dataclasses.replace(eng.hearing, merge_spellings=False)
        assert eng.listening._hear_with_lm(logits, "greedy") == "Hello! Plan a trip."
        assert picked[-1][0] == pytest.approx([-1.2, -1.0])
    finally:
        eng.close()
