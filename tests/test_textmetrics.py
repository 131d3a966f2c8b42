"""One normalisation and WER (assistant/textmetrics.py): `evaluate` and training's held-out eval agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from llasm.assistant import evaluate, textmetrics

PAIRS = [
    ("Hello, World! It's TWO o'clock.", "hello world its 2 oclock"),
    ("the cat sat on the mat", "the bat sat on mat"),
    ("Set a timer for ten minutes.", "set a timer for 10 minutes please"),
    ("What's the weather like?", ""),
    ("", "stray words"),
    ("Naïve café — ﬁne.", "naive cafe fine"),
]


@pytest.mark.parametrize(("ref", "hyp"), PAIRS)
def test_same_as_evaluate(ref: str, hyp: str) -> None:
    assert textmetrics.normalize(ref) == evaluate.normalize(ref)
    r, h = textmetrics.normalize(ref), textmetrics.normalize(hyp)
    assert textmetrics.edit_distance(r, h) == evaluate.edit_distance(r, h)
    assert textmetrics.wer([ref], [hyp]) == evaluate.wer([ref], [hyp])


def test_wer() -> None:
    assert textmetrics.normalize("Hello, World! It's TWO o'clock.") == ["hello", "world", "its", "2", "oclock"]
    assert textmetrics.wer(["the cat sat", "a dog"], ["the bat sat", "a"]) == pytest.approx(2 / 5)
    assert textmetrics.wer(["x"], ["x y z"]) == pytest.approx(2.0)  # insertions count: WER can exceed 1
    refs, hyps = [r for r, _ in PAIRS], [h for _, h in PAIRS]
    assert textmetrics.wer(refs, hyps) == evaluate.wer(refs, hyps)


def test_training_eval_reports_evaluates_wer(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """training.train.evaluate on a tiny model, its greedy transcriptions replaced by fixed strings: the WER it
    logs is `evaluate`'s WER of the same references and transcriptions."""
    import llasm.training.train as tt
    from llasm.training.data import read_manifest
    from llasm.training.model import LLaSM, ModelSpec

    manifest = read_manifest(tiny / "data" / "train.jsonl")
    refs = [ex.text for ex in manifest.examples[:4]]
    # hypotheses that differ from the references in case, punctuation, number words and a word or two
    hyps = [refs[0].upper() + "!", refs[1].rsplit(" ", 1)[0], refs[2] + " two", "one " + refs[3].lower()]
    made = iter(hyps)
    monkeypatch.setattr(tt, "transcribe_batch", lambda model, batch, chunk: [next(made) for _ in chunk])
    model = LLaSM.build(ModelSpec(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), adaptor={"type": "linear"}))
    cfg = tt.TrainConfig.from_recipe(None, encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), batch_size=4)
    out = tt.evaluate(model, manifest, cfg, max_examples=4, n_generate=4)
    expected = evaluate.wer(refs, hyps)
    assert 0 < expected < 1
    assert out["wer"] == expected
