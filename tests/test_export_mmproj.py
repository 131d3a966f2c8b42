"""ultravox adaptor -> llama.cpp mmproj GGUF, run by llama.cpp's own mtmd library, equals torch + numpy."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")
mtmd = pytest.importorskip("llama_cpp.mtmd_cpp")

from llasm.assistant.adaptor import Adaptor  # noqa: E402
from llasm.assistant.audio import log_mel  # noqa: E402
from llasm.export.bundle import export_bundle  # noqa: E402
from llasm.export.checkpoint import Checkpoint  # noqa: E402
from llasm.export.encoder import load_hf_encoder, varlen_encoder  # noqa: E402
from llasm.export.errors import ExportError  # noqa: E402
from llasm.export.gguf_llm import gguf_metadata, silence_llama_cpp  # noqa: E402
from llasm.export.testing import make_tiny_checkpoint  # noqa: E402
from llasm.export.validate import validate_bundle  # noqa: E402


def _mtmd_audio_embeddings(mmproj: Path, llm: Path, wav: np.ndarray, n_embd: int) -> np.ndarray:
    silence_llama_cpp()
    model = llama_cpp.llama_model_load_from_file(str(llm).encode(), llama_cpp.llama_model_default_params())
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.warmup = False, 2, False
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, params)
    assert ctx and mtmd.mtmd_support_audio(ctx)
    bitmap = mtmd.mtmd_bitmap_init_from_audio(len(wav), wav.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    chunks = mtmd.mtmd_input_chunks_init()
    text = b"Listen: " + mtmd.mtmd_default_marker()
    inp = mtmd.mtmd_input_text()
    inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), False, True
    try:
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != 0:  # the audio chunk
                n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0
                out = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * n_embd,))
                return out.reshape(n, n_embd).copy()
        raise AssertionError("mtmd produced no audio chunk")
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(ctx)
        llama_cpp.llama_model_free(model)


def test_ultravox_mmproj_runs_in_llama_cpp_mtmd(tmp_path: Path) -> None:
    ck = make_tiny_checkpoint(tmp_path / "ck", adaptor="ultravox", cache_root=tmp_path)
    out = tmp_path / "bundle"
    export_bundle(ck, out, encoder="onnx", llm_quant="f32", mmproj=True)
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["mmproj"] == {"path": "mmproj.gguf"} and "mmproj.gguf" in manifest["checksums"]
    validate_bundle(out)
    meta = gguf_metadata(out / "mmproj.gguf", ["clip.projector_type", "clip.audio.projector.stack_factor",
                                               "general.type"])
    assert meta == {"clip.projector_type": "ultravox", "clip.audio.projector.stack_factor": 4, "general.type": "mmproj"}

    t = np.arange(2 * 16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32)
    got = _mtmd_audio_embeddings(out / "mmproj.gguf", out / "llm.gguf", wav, 64)

    # llama.cpp pads every clip to 30 s: the reference is the encoder on 3000 frames, then the adaptor
    c = Checkpoint.load(ck)
    padded = np.zeros(30 * 16000, np.float32)
    padded[: len(wav)] = wav
    with torch.no_grad():
        states = varlen_encoder(load_hf_encoder(c.encoder_dir))(torch.from_numpy(log_mel(padded)[None, :, :3000]))[0]
    ref = Adaptor(c.adaptor, c.adaptor_tensors()).run(states.numpy()).embeddings
    assert got.shape == ref.shape == (1500 // 4, 64)
    rel_rms = np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref**2))
    assert rel_rms < 0.02, rel_rms


def test_mmproj_only_for_ultravox(tmp_path: Path) -> None:
    ck = make_tiny_checkpoint(tmp_path / "ck", adaptor="linear", cache_root=tmp_path)
    with pytest.raises(ExportError, match="ultravox"):
        export_bundle(ck, tmp_path / "b", mmproj=True)
    assert not (tmp_path / "b").exists()
