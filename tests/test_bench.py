"""`llasm-assistant bench`: summaries, the Whisper byte decoder, and one real end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from llasm.assistant.bench import BenchError, run_bench, summarize
from llasm.assistant.hearing import byte_decoder as _byte_decoder


def test_summarize_median_p90():
    s = summarize([float(x) for x in range(1, 11)])
    assert s["median"] == 5.5 and s["p90"] == pytest.approx(9.1) and s["n"] == 10
    assert summarize([])["n"] == 0


def test_byte_decoder_roundtrip():
    dec = _byte_decoder()
    assert len(dec) == 256 and sorted(dec.values()) == list(range(256))
    assert bytes(dec[c] for c in "ĠHello") == b" Hello"


def test_no_clips_is_an_error(tmp_path):
    with pytest.raises(BenchError, match="no readable audio"):
        run_bench(tmp_path, bundle=tmp_path / "unused")


@pytest.mark.real
def test_bench_runs_with_cascade(tmp_path):
    from conftest import build_bundle, clip

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        sf.write(clips / f"c{i}.wav", clip(1.5, seed=i), 16000)
    res = run_bench(clips, bundle=build_bundle(tmp_path / "b"), out=tmp_path / "out", max_tokens=4, threads=1)
    assert res["n_clips"] == 2 and res["llasm"]["ttft_ms"]["n"] == 2
    assert res["cascade"]["ttft_ms"]["median"] > res["cascade"]["asr_ms"]["median"] > 0
    assert res["llama_cpp_decode_tokens_per_s"] > 0 and res["peak_rss_mb"] > 50
    # the decode ratio comes from spoken turns timed in turns with llama.cpp's own decode
    pairs = res["decode_pairs"]
    assert len(pairs) == 2 and all(p["llasm"] > 0 and p["llama_cpp"] > 0 for p in pairs)
    assert res["decode_vs_llama_cpp"] == pytest.approx(float(np.median([p["ratio"] for p in pairs])))
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["llasm"]["encoder_ms"]["median"] > 0
    assert (tmp_path / "out" / "bench.png").stat().st_size > 10_000
