"""The evaluation command's metrics and manifest handling (the full run is in test_default_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.evaluate import EvalError, edit_distance, normalize, read_asr, read_questions, similarity, wer


def test_normalize_and_wer() -> None:
    assert normalize("Hello, World! It's TWO o'clock.") == ["hello", "world", "its", "2", "oclock"]
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance([], ["x", "y"]) == 2
    assert wer(["the cat sat", "a dog"], ["the cat sat", "a dog"]) == 0.0
    # one substitution + one deletion over five reference words
    assert wer(["the cat sat", "a dog"], ["the bat sat", "a"]) == pytest.approx(2 / 5)
    assert wer(["x"], ["x y z"]) == pytest.approx(2.0)  # insertions count: WER can exceed 1


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
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(EvalError, match="bad.jsonl:1 is not JSON"):
        read_asr(tmp_path / "bad.jsonl", limit=5)
