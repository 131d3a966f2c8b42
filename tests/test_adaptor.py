"""The numpy adaptor reference (assistant/adaptor.py): maths, layout and errors."""

from __future__ import annotations

import numpy as np
import pytest
from llasm.assistant.adaptor import (
    AdaptorConfig,
    AdaptorError,
    ctc_mix,
    ctc_segments,
    load_adaptor,
    random_tensors,
    save_adaptor,
    stack_frames,
)


def test_stack_frames_pads_and_concatenates() -> None:
    s = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = stack_frames(s, 2)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(out[2], [8, 9, 0, 0])
    assert stack_frames(s, 1) is not None and stack_frames(s, 1).shape == (5, 2)


def test_linear_matches_hand_computation(tmp_path) -> None:
    cfg = AdaptorConfig.from_dict({"type": "linear", "stack": 2, "d_model": 3, "n_embd": 4})
    t = random_tensors(cfg, seed=1)
    save_adaptor(tmp_path / "a.safetensors", t)
    ad = load_adaptor(tmp_path / "a.safetensors", cfg.to_dict())
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    y = ad(x)
    assert y.shape == (4, 4)
    xs = np.concatenate([x, np.zeros((1, 3), np.float32)]).reshape(4, 6)
    np.testing.assert_allclose(y, xs @ t["proj.weight"].T + t["proj.bias"], rtol=1e-5, atol=1e-6)


def test_ultravox_gates_second_half(tmp_path) -> None:
    cfg = AdaptorConfig.from_dict({"type": "ultravox", "stack": 2, "d_model": 4, "n_embd": 3, "hidden": 6})
    t = random_tensors(cfg, seed=2)
    ad = load_adaptor(_save(tmp_path, t), cfg)
    x = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)
    xs = x.reshape(2, 8)
    h = xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 1e-6) * t["ln_pre.weight"]
    h = h @ t["linear_1.weight"].T
    a, g = h[:, :3], h[:, 3:]
    h = a * g / (1 + np.exp(-g))
    h = h / np.sqrt((h**2).mean(-1, keepdims=True) + 1e-6) * t["ln_mid.weight"]
    np.testing.assert_allclose(ad(x), h @ t["linear_2.weight"].T, rtol=1e-5, atol=1e-6)


def test_ctc_segments_collapse() -> None:
    b = 9
    path = np.array([b, 3, 3, b, 3, 5, 5, b, b, 2])
    assert ctc_segments(path, b) == [(3, 1, 3), (3, 4, 5), (5, 5, 7), (2, 9, 10)]
    assert ctc_segments(np.array([b, b]), b) == []


def test_ctc_mixes_topk_token_embeddings(tmp_path) -> None:
    cfg = AdaptorConfig.from_dict({"type": "ctc", "stack": 1, "d_model": 4, "n_embd": 5, "hidden": 6,
                                   "vocab_size": 11, "topk": 3})
    t = random_tensors(cfg, seed=3, scale=1.0)
    table = np.random.default_rng(4).standard_normal((11, 5)).astype(np.float32)
    ad = load_adaptor(_save(tmp_path, t), cfg, token_embeddings=table)
    x = np.random.default_rng(5).standard_normal((12, 4)).astype(np.float32)
    out = ad.run(x)
    logits = ad.ctc_logits(x)
    best = logits.argmax(-1)
    segs = ctc_segments(best, 11)
    assert out.heard == [s[0] for s in segs]
    assert out.embeddings.shape == (len(segs), 5)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for j, (_tok, a, b) in enumerate(segs):
        q = p[a:b, :11].mean(0)
        idx = np.argsort(-q)[:3]
        want = (q[idx] / q[idx].sum()) @ table[idx]
        np.testing.assert_allclose(out.embeddings[j], want, rtol=1e-5, atol=1e-6)


def test_ctc_top1_shortcut_equals_the_mean_posterior_argmax() -> None:
    rng = np.random.default_rng(6)
    vocab, table = 40, rng.standard_normal((40, 7)).astype(np.float32)
    for trial in range(30):
        logits = rng.standard_normal((60, vocab + 1)).astype(np.float32) * 3
        logits[rng.random(60) < 0.4, vocab] += 8  # many blank frames
        if trial % 3 == 0:  # ties inside segments
            logits[:, 5] = logits[:, 2] = logits[:, :vocab].max(-1) + 1
        segs = ctc_segments(logits.argmax(-1), vocab)
        got = ctc_mix(logits, segs, table, 1)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        want = [table[int(np.argmax(p[a:b, :vocab].mean(0)))] for _, a, b in segs]  # first max: lower id
        assert got.shape == (len(segs), 7) and got.dtype == np.float32
        if segs:
            np.testing.assert_array_equal(got, np.stack(want))


@pytest.mark.parametrize("topk", [1, 3])
def test_ctc_shortlist_scores_only_the_listed_tokens(tmp_path, topk) -> None:
    base = {"type": "ctc", "stack": 1, "d_model": 4, "n_embd": 5, "hidden": 6, "vocab_size": 30, "topk": topk}
    t = random_tensors(AdaptorConfig.from_dict(base), seed=7, scale=1.0)
    table = np.random.default_rng(8).standard_normal((30, 5)).astype(np.float32)
    x = np.random.default_rng(9).standard_normal((40, 4)).astype(np.float32)
    full = load_adaptor(_save(tmp_path, t), base, token_embeddings=table)
    ids = np.array(sorted(set(full.run(x).heard) | {0, 7, 29}))
    cfg = {**base, "shortlist": len(ids)}
    short = load_adaptor(_save(tmp_path, {**t, "vocab.ids": ids.astype(np.float32)}), cfg, token_embeddings=table)
    assert short.config.to_dict()["shortlist"] == len(ids)
    logits = short.ctc_logits(x)
    np.testing.assert_allclose(logits[:, ids], full.ctc_logits(x)[:, ids], rtol=1e-5, atol=1e-5)
    assert np.isneginf(np.delete(logits[:, :30], ids, axis=1)).all()
    # the reference algorithm on the listed columns (+ blank), with their table rows, mapped back to ids
    sub = np.concatenate([logits[:, ids], logits[:, 30:]], axis=1)
    segs = ctc_segments(sub.argmax(-1), len(ids))
    out = short.run(x)
    assert out.heard == [int(ids[s[0]]) for s in segs]
    np.testing.assert_allclose(out.embeddings, ctc_mix(sub, segs, table[ids], topk), rtol=1e-5, atol=1e-6)
    if topk == 1:  # every greedy winner is listed: the same transcript and embeddings as the full vocabulary
        assert out.heard == full.run(x).heard
        np.testing.assert_array_equal(out.embeddings, full.run(x).embeddings)
    for bad in (ids[::-1], np.append(ids[:-1], 30), ids + 0.5):
        with pytest.raises(AdaptorError, match="vocab.ids"):
            load_adaptor(_save(tmp_path, {**t, "vocab.ids": np.asarray(bad, np.float32)}), cfg, token_embeddings=table)


def test_ctc_without_table_and_bad_shapes_fail_clearly(tmp_path) -> None:
    cfg = AdaptorConfig.from_dict({"type": "ctc", "d_model": 4, "n_embd": 5, "hidden": 6, "vocab_size": 11})
    ad = load_adaptor(_save(tmp_path, random_tensors(cfg)), cfg)
    with pytest.raises(AdaptorError, match="token-embedding table"):
        ad(np.zeros((3, 4), np.float32))
    with pytest.raises(AdaptorError, match=r"\[11, 5\]"):
        ad.set_token_embeddings(np.zeros((11, 4), np.float32))
    with pytest.raises(AdaptorError, match="unknown adaptor type"):
        AdaptorConfig.from_dict({"type": "conv", "d_model": 1, "n_embd": 1})
    lin = AdaptorConfig.from_dict({"type": "linear", "stack": 2, "d_model": 4, "n_embd": 5})
    with pytest.raises(AdaptorError, match="lack proj.bias, proj.weight"):
        load_adaptor(_save(tmp_path, {"x": np.zeros(1, np.float32)}), lin)
    bad = AdaptorConfig.from_dict({"type": "linear", "stack": 3, "d_model": 4, "n_embd": 5})
    with pytest.raises(AdaptorError, match="shape"):
        load_adaptor(_save(tmp_path, random_tensors(lin)), bad)
    with pytest.raises(AdaptorError, match="encoder states"):
        load_adaptor(_save(tmp_path, random_tensors(lin)), lin)(np.zeros((3, 7), np.float32))
    with pytest.raises(AdaptorError, match="not found"):
        load_adaptor(tmp_path / "nope.safetensors", lin)


def test_config_round_trip() -> None:
    d = {"type": "ctc", "stack": 2, "d_model": 4, "n_embd": 5, "hidden": 6, "vocab_size": 11, "topk": 4}
    assert AdaptorConfig.from_dict(d).to_dict() == d
    assert AdaptorConfig.from_dict({"type": "ultravox", "d_model": 4, "n_embd": 5, "hidden": 8}).stack == 8


def _save(tmp_path, tensors) -> str:
    p = tmp_path / f"ad{len(list(tmp_path.iterdir()))}.safetensors"
    save_adaptor(p, tensors)
    return str(p)
