"""The frozen Whisper encoder -> CTranslate2 directory or ONNX file, both run on the clip's real length.

- CTranslate2: CTranslate2's own Whisper converter (`TransformersConverter`) on the local HF directory; the
  runtime calls `Whisper.encode` with any `T <= 3000` mel frames.
- ONNX: a wrapper around transformers' `WhisperEncoder` that slices the positional table to the input length
  (transformers itself insists on 3000 frames), exported with a dynamic frame axis: input `input_features`
  `[batch, n_mels, T]`, output `last_hidden_state` `[batch, ceil(T/2), d_model]`. Optional int8 dynamic
  quantization (onnxruntime.quantization) or float16 weights (onnxruntime's float16 converter).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from llasm.export.errors import ExportError

ENCODER_DTYPES = ("int8", "float16", "float32")
ONNX_INPUT = "input_features"
ONNX_OUTPUT = "last_hidden_state"


def load_hf_encoder(whisper_dir: str | os.PathLike[str]) -> Any:
    """transformers' WhisperEncoder (eager attention, float32, eval) from a HF Whisper directory."""
    import torch
    from transformers import WhisperModel

    whisper_dir = Path(whisper_dir)
    if not (whisper_dir / "config.json").is_file():
        raise ExportError(f"{whisper_dir} is not a Hugging Face Whisper directory (no config.json): fix encoder.path "
                          f"in llasm.json")
    model = WhisperModel.from_pretrained(str(whisper_dir), attn_implementation="eager", dtype=torch.float32)
    return model.get_encoder().eval()


def varlen_encoder(hf_encoder: Any) -> Any:
    """A torch module: mel `[B, n_mels, T]` -> states `[B, ceil(T/2), d_model]` on the real length."""
    import torch
    import torch.nn.functional as F

    class VarLenWhisperEncoder(torch.nn.Module):
        def __init__(self, enc: Any) -> None:
            super().__init__()
            self.enc = enc

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            e = self.enc
            x = F.gelu(e.conv1(input_features))
            x = F.gelu(e.conv2(x)).permute(0, 2, 1)
            x = x + e.embed_positions.weight[: x.shape[1]]
            for layer in e.layers:
                out = layer(x, None)
                x = out[0] if isinstance(out, tuple) else out
            return e.layer_norm(x)

    return VarLenWhisperEncoder(hf_encoder).eval()


def export_ct2(whisper_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], dtype: str = "int8") -> Path:
    """CTranslate2's Whisper conversion of a local HF Whisper directory (needs its tokenizer files too)."""
    if dtype not in ENCODER_DTYPES:
        raise ExportError(f"unknown encoder dtype {dtype!r}: use one of {', '.join(ENCODER_DTYPES)}")
    from ctranslate2.converters import TransformersConverter

    whisper_dir, out_dir = Path(whisper_dir), Path(out_dir)
    if not (whisper_dir / "tokenizer.json").is_file() and not (whisper_dir / "vocab.json").is_file():
        raise ExportError(f"{whisper_dir} has no Whisper tokenizer files; CTranslate2's converter needs them: "
                          f"use an encoder directory made by `llasm-train base-models` or pass --encoder onnx")
    try:
        TransformersConverter(str(whisper_dir)).convert(str(out_dir), quantization=dtype, force=True)
    except Exception as e:  # the converter raises many types (ValueError, KeyError, OSError ...)
        msg = " ".join(str(e).split())[:200]
        raise ExportError(f"CTranslate2 could not convert {whisper_dir} ({type(e).__name__}: {msg}): "
                          f"pass --encoder onnx or check the Whisper directory") from None
    return out_dir


def export_onnx(whisper_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], dtype: str = "float32",
                *, opset: int = 17) -> Path:
    """ONNX export with a dynamic frame axis; `dtype` int8 (dynamic quantization), float16 or float32."""
    if dtype not in ENCODER_DTYPES:
        raise ExportError(f"unknown encoder dtype {dtype!r}: use one of {', '.join(ENCODER_DTYPES)}")
    import torch

    out_path = Path(out_path)
    enc = varlen_encoder(load_hf_encoder(whisper_dir))
    n_mels = int(enc.enc.config.num_mel_bins)
    example = torch.zeros(1, n_mels, 200)
    work = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out_path.parent))
    try:
        raw = work / "fp32.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                enc, (example,), str(raw), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch", 2: "frames"}, ONNX_OUTPUT: {0: "batch", 1: "states"}},
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )
        if dtype == "int8":
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process, printed on every call
            try:
                quantize_dynamic(str(raw), str(out_path), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
        elif dtype == "float16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(raw)), keep_io_types=True)
            onnx.save(model, str(out_path))
        else:
            shutil.move(str(raw), str(out_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path
