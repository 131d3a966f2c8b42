"""The real trainer's output (training/, tiny models) exports and verifies: the checkpoint contract end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from llasm.export.bundle import export_bundle  # noqa: E402
from llasm.export.verify import Thresholds, verify_bundle  # noqa: E402
from llasm.training.tiny import make_dataset, make_models  # noqa: E402
from llasm.training.train import TrainConfig, train  # noqa: E402


def test_trained_lora_checkpoint_exports_and_verifies(tmp_path: Path) -> None:
    make_models(tmp_path)
    make_dataset(tmp_path)
    cfg = TrainConfig.from_recipe(None, stage=2, encoder=str(tmp_path / "whisper"), llm=str(tmp_path / "llm"),
                                  data=str(tmp_path / "data" / "conv.jsonl"), out=str(tmp_path / "run"),
                                  adaptor="ultravox", llm_weights="lora", max_steps=2, batch_size=2,
                                  warmup_steps=1, save_every=100, log_every=1, eval_every=100)
    ckpt = train(cfg)
    assert json.loads((ckpt / "llasm.json").read_text())["llm_weights"] == "lora"
    out = tmp_path / "bundle"
    # the toy tokenizer is a plain byte-level BPE that llama.cpp's probe table does not list: name it
    export_bundle(ckpt, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", lora_adapter=True,
                  tokenizer_pre="gpt-2")
    report = verify_bundle(out, thresholds=Thresholds(encoder_rel=1e-3, adaptor_rel=1e-3,
                                                      first_token_agreement=1.0, top5_overlap=0.8))
    assert report.passed, report.failures()
