"""The evaluation command: metrics, manifest handling, and a small end-to-end run on the default bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from llasm.assistant.evaluate import (
    EvalError,
    edit_distance,
    normalize,
    read_asr,
    read_questions,
    similarity,
    wer,
    wilson_interval,
)


def test_normalize_and_wer() -> None:
    assert normalize("Hello, World! It's TWO o'clock.") == ["hello", "world", "its", "2", "oclock"]
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance([], ["x", "y"]) == 2
    assert wer(["the cat sat", "a dog"], ["the cat sat", "a dog"]) == 0.0
    # one substitution + one deletion over five reference words
    assert wer(["the cat sat", "a dog"], ["the bat sat", "a"]) == pytest.approx(2 / 5)
    assert wer(["x"], ["x y z"]) == pytest.approx(2.0)  # insertions count: WER can exceed 1
    # Chinese is not spaced into words: each character counts as one (a character error rate), punctuation
    # in either width is dropped
    assert normalize("对，这就是我。") == ["对", "这", "就", "是", "我"]
    assert wer(["对，这就是我。"], ["对,这就是我"]) == 0.0
    assert wer(["万人敬仰的太乙真人"], ["万人仅仰的太以真人"]) == pytest.approx(2 / 9)
    assert normalize("Hi 你好 there") == ["hi", "你", "好", "there"]


def test_similarity() -> None:
    assert similarity("The capital of France is Paris.", "the capital of france is paris") == 1.0
    assert similarity("Grass is green.", "The sky is blue.") < 0.5


def test_manifests(tmp_path: Path) -> None:
    (tmp_path / "asr.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "hi"}) + "\n\n" +
                                        json.dumps({"audio": "b.wav", "text": "yo"}) + "\n")
    clips = read_asr(tmp_path / "asr.jsonl", limit=1)
    assert [(c.audio.name, c.text) for c in clips] == [("a.wav", "hi")]
    conv = {"id": "1", "conversations": [{"from": "human", "value": "what is up", "audio": "q.wav"},
                                         {"from": "gpt", "value": "sky"}]}
    (tmp_path / "q.jsonl").write_text(json.dumps(conv) + "\n")
    q = read_questions(tmp_path / "q.jsonl", limit=5)
    assert q[0].audio == tmp_path / "q.wav" and q[0].text == "what is up"
    with pytest.raises(EvalError, match="no spoken questions"):
        read_questions(tmp_path / "asr.jsonl", limit=5)
    with pytest.raises(EvalError, match="cannot read"):
        read_asr(tmp_path / "missing.jsonl", limit=5)
    # --skip-asr / --skip-questions leave out a dev part (the first N clips)
    assert [c.text for c in read_asr(tmp_path / "asr.jsonl", limit=5, skip=1)] == ["yo"]
    with pytest.raises(EvalError, match="not more than the 2 to skip"):
        read_asr(tmp_path / "asr.jsonl", limit=5, skip=2)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(EvalError, match="bad.jsonl:1 is not JSON"):
        read_asr(tmp_path / "bad.jsonl", limit=5)


@pytest.mark.real
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")
def test_evaluate_end_to_end_on_the_default_bundle(tmp_path: Path) -> None:
    from llasm.assistant.evaluate import AGREE_SIMILARITY, evaluate

    def speak(text: str, name: str) -> str:
        (tmp_path / "audio").mkdir(exist_ok=True)
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(tmp_path / "audio" / name), "--", text],
                       check=True)
        return f"audio/{name}"

    asr = tmp_path / "asr.jsonl"
    asr.write_text("".join(json.dumps({"audio": speak(t, f"a{i}.wav"), "text": t}) + "\n"
                           for i, t in enumerate(["Please open the window.", "Turn off the lights."])))
    qs = tmp_path / "q.jsonl"
    qs.write_text("".join(json.dumps({"id": str(i), "conversations": [
        {"from": "human", "value": t, "audio": speak(t, f"q{i}.wav")}, {"from": "gpt", "value": "x"}]}) + "\n"
        for i, t in enumerate(["What is the capital of France?", "How old are you?"])))
    r = evaluate(None, asr=asr, questions=qs, out=tmp_path / "out", n_asr=2, n_questions=2, max_tokens=12,
                 threads=1, latency=False, modes=["whisper", "adaptor", "embeddings"])
    assert r["n_asr"] == 2 and r["n_questions"] == 2 and list(r["modes"]) == ["whisper", "adaptor", "embeddings"]
    assert r["whisper"]["beam"] == 5 and 0 <= r["whisper"]["wer"] <= 1.5
    whisper, adaptor = r["modes"]["whisper"], r["modes"]["adaptor"]
    assert r["wer_llm"] == whisper["wer_llm"] and r["mode"] == "whisper"  # the first mode's figures at the top
    # Whisper's decoder: the transcript is the reply; the spoken answer is the typed answer to what was heard
    assert all(a["llm"] == a["heard"] for a in whisper["asr_rows"])
    assert 0 <= adaptor["wer_heard"] <= 1.5 and adaptor["wer_ratio"] == adaptor["wer_llm"] / r["whisper"]["wer"]
    for m in r["modes"].values():
        rows = m["question_rows"]
        assert m["agreement"] == sum(q["similarity"] >= AGREE_SIMILARITY for q in rows) / 2
        assert m["agreement_cascade"] == sum(q["cascade_similarity"] >= AGREE_SIMILARITY for q in rows) / 2
        assert list(m["agreement_ci95"]) == list(wilson_interval(round(m["agreement"] * 2), 2))
        assert all(q["whisper"] and q["cascade_answer"] and q["typed_answer"] for q in rows)
        questions = [q["question"] for q in rows]
        assert m["questions_wer_heard"] == wer(questions, [q["heard"] for q in rows])
        assert m["questions_wer_whisper"] == wer(questions, [q["whisper"] for q in rows]) < 0.5
        agree = sum(similarity(a["spoken_answer"], a["typed_answer"]) >= AGREE_SIMILARITY for a in m["asr_rows"])
        assert m["asr_agreement"] == agree / 2
    assert "capital" in whisper["question_rows"][0]["whisper"].lower()  # Whisper base hears this clean clip
    for f in ("eval.json", "eval.png", "examples.md"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    assert "adaptor's embeddings (LLaSM)" in (tmp_path / "out" / "examples.md").read_text()


@pytest.mark.real
def test_evaluate_hears_the_real_mandarin_set_in_its_language(tmp_path: Path) -> None:
    """`llasm-assistant evaluate --asr zh.jsonl --language zh`: both the hearing and Whisper's 30-s reference hear
    Mandarin (the reference used to be asked for English whatever the language), scored per character."""
    import soundfile as sf
    from llasm.training.datagen.real import F5_WHEEL, f5_references, setup_wheel

    rec = f5_references(setup_wheel(F5_WHEEL, tmp_path, "--f5-wheel"), tmp_path)["zh"]
    sf.write(tmp_path / "zh.wav", rec.load(), 16000)
    (tmp_path / "zh.jsonl").write_text(json.dumps({"audio": "zh.wav", "text": rec.text, "language": "zh"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "llasm.assistant.cli", "evaluate", "--asr", str(tmp_path / "zh.jsonl"),
                           "--language", "zh", "--threads", "2", "--no-latency", "--max-tokens", "8",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "eval.json").read_text())
    row = r["modes"]["whisper"]["asr_rows"][0]
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in row["heard"]) >= 12, row
    assert r["whisper"]["wer"] <= 0.2 and r["wer_llm"] <= 0.2 and r["wer_ratio"] <= 1.5, (r["whisper"], row)


@pytest.mark.real
def test_latency_runs_in_a_fresh_process(tmp_path: Path) -> None:
    import soundfile as sf
    from conftest import build_bundle, clip
    from llasm.assistant.evaluate import EvalError, bench_in_fresh_process

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        sf.write(clips / f"c{i}.wav", clip(2.5, seed=i), 16000)
    out = tmp_path / "out"
    out.mkdir()
    # this process grows past 1 GB first: the child must report its own memory, not its parent's (ru_maxrss
    # survives exec on Linux, so a bench started from a large pytest process used to report 1.9 GB)
    import numpy as np

    ballast = np.ones(160_000_000)  # 1.2 GiB, touched
    bench = bench_in_fresh_process(clips, bundle=build_bundle(tmp_path / "b"), out=out, threads=1)
    assert bench["n_clips"] == 2 and bench["llasm"]["ttft_ms"]["median"] > 0
    assert 50 < bench["peak_rss_mb"] < 1024 and (out / "bench.png").is_file()
    del ballast
    with pytest.raises(EvalError, match="the latency benchmark failed"):
        bench_in_fresh_process(tmp_path / "missing", bundle=None, out=out, threads=1)


@pytest.mark.parametrize("k,n", [(2, 40), (0, 40), (40, 40), (0, 77), (77, 77), (31, 192), (1, 3)])
def test_wilson_interval_bounds_are_where_the_score_test_is_at_1_96(k: int, n: int) -> None:
    """A measured rate's 95 % interval: each bound inside (0, 1) is a rate p0 whose score statistic
    |k/n - p0| / sqrt(p0 (1 - p0) / n) is exactly 1.96, and k/n lies between them."""
    import math

    lo, hi = wilson_interval(k, n)
    assert 0 <= lo <= k / n <= hi <= 1 and hi - lo > 0
    for p0 in (lo, hi):
        if 0 < p0 < 1:
            assert abs(abs(k / n - p0) / math.sqrt(p0 * (1 - p0) / n) - 1.96) < 1e-9
    assert (lo == 0) == (k == 0) and (hi == 1) == (k == n)
    assert wilson_interval(k * 4, n * 4)[1] - wilson_interval(k * 4, n * 4)[0] < hi - lo  # more questions, narrower


def test_the_plot_shows_the_questions_agreement_and_drops_the_empty_latency_panel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval.png's middle panel is the spoken questions' agreement when there are questions (the ASR clips'
    otherwise); without a latency run the figure has two panels, not an empty third."""
    pytest.importorskip("matplotlib")
    from llasm.assistant import evaluate, plotting

    plt = plotting.pyplot()
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    monkeypatch.setattr(plotting, "pyplot", lambda: plt)
    mode = {"wer_llm": 0.08, "asr_agreement": 0.5, "agreement": 0.7, "agreement_cascade": 0.66}
    r = {"modes": {"whisper": mode}, "whisper": {"wer": 0.078, "beam": 5}, "mode": "whisper"}
    evaluate._plot(r, tmp_path / "two.png")
    lat = {"llasm": {k: {"median": 100.0} for k in ("encoder_ms", "decoder_ms", "prefill_ms", "ttft_ms")},
           "cascade": {"ttft_ms": {"median": 1400.0}}}
    evaluate._plot({**r, "latency": lat}, tmp_path / "three.png")
    no_questions = {"wer_llm": 0.08, "asr_agreement": 0.5}
    evaluate._plot({**r, "modes": {"whisper": no_questions}}, tmp_path / "asr.png")
    two, three, asr = figures
    assert [len(f.axes) for f in figures] == [2, 3, 2]
    assert all((tmp_path / n).stat().st_size > 0 for n in ("two.png", "three.png", "asr.png"))
    assert "questions" in two.axes[1].get_title() and two.axes[1].patches[0].get_height() == pytest.approx(70)
    assert "ASR clips" in asr.axes[1].get_title() and asr.axes[1].patches[0].get_height() == pytest.approx(50)
    assert three.axes[2].get_title().startswith("latency")
