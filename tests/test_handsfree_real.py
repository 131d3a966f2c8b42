"""The hands-free path on the real small models (whisper-tiny.en CT2 + SmolLM2-135M, random adaptor)."""

from __future__ import annotations

import io
import json

import pytest
from llasm.assistant.capture import ArraySource
from llasm.assistant.handsfree import run_headless
from llasm.assistant.settings import Settings
from test_handsfree_fakes import conversation


@pytest.mark.real
def test_headless_json_with_the_real_engine(tmp_path, bundle_factory):
    from llasm.assistant.engine import Engine

    audio, truth = conversation(tmp_path, sentences=["What is the capital of France?", "Tell me a joke."],
                                silences=[0.5, 1.0, 0.8])
    engine = Engine.load(bundle_factory("bundle"), n_threads=1)
    try:
        out = io.StringIO()
        rc = run_headless(engine, ArraySource(audio, realtime=False, name="talk"), Settings(json=True, max_tokens=8),
                          out=out, err=io.StringIO())
        assert rc == 0
        recs = [json.loads(x) for x in out.getvalue().splitlines()]
        assert len(recs) == 2
        for rec, (a, b) in zip(recs, truth, strict=True):
            assert abs(rec["segment_start_s"] - a) <= 0.1 and abs(rec["segment_end_s"] - b) <= 0.1
            for key in ("encoder_ms", "prefill_ms", "ttft_ms", "audio_s"):
                assert rec[key] > 0
            assert isinstance(rec["answer"], str) and "error" not in rec
        # the conversation continues with a typed turn after the spoken ones
        from llasm.assistant.handsfree import Responder

        typed = Responder(engine, Settings(max_tokens=8)).run(text="Thanks. And Germany?")
        assert typed.answer and not typed.cancelled and typed.timings["prefill_ms"] > 0
    finally:
        engine.close()
