"""The frozen Whisper encoder at run time: CTranslate2 or ONNX, on the clip's real length.

    enc = load_encoder(bundle.encoder, n_threads=4)
    states = enc.encode(mel)          # mel: [n_mels, T] float32 (assistant.audio.log_mel) -> [T/2, d_model]

No 30-second padding: Whisper's encoder runs on the real number of frames (CTranslate2 accepts any
T <= 3000; the ONNX export has a dynamic frame axis). Clips longer than 30 s are encoded in 30-s windows
and the states concatenated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import BundleError, EncoderSpec

MAX_FRAMES = 3000  # Whisper's positional table: 30 s of 10-ms frames


class AudioEncoder(Protocol):
    d_model: int

    def encode(self, mel: np.ndarray) -> np.ndarray: ...


def _ct2_compute_type(dtype: str, device: str = "cpu") -> str:
    if device == "cuda":
        # GPU kernels: float16, with int8 weights kept int8 (int8_float16): half the memory of float16
        return "int8_float16" if dtype.startswith("int8") else "float16"
    # CPU kernels: int8, int8_float32, int16, float32 (float16 weights are converted at load).
    return {"int8": "int8", "int8_float32": "int8_float32", "int16": "int16", "float16": "float32",
            "float32": "float32", "bfloat16": "float32"}.get(dtype, "default")


def _windows(mel: np.ndarray) -> list[np.ndarray]:
    if mel.ndim != 2:
        raise ValueError(f"mel must be [n_mels, T], got shape {mel.shape}")
    t = mel.shape[1]
    if t < 2:
        raise ValueError("the clip is too short for the encoder (needs at least 20 ms of audio)")
    return [mel[:, i:i + MAX_FRAMES] for i in range(0, t, MAX_FRAMES) if mel[:, i:i + MAX_FRAMES].shape[1] >= 2]


class CT2Encoder:
    """`ctranslate2.models.Whisper(...).encode` on the real length."""

    def __init__(self, path: str | os.PathLike[str], *, dtype: str = "int8", n_threads: int = 1,
                 workers: int = 1, device: str = "cpu") -> None:
        """`n_threads` threads work on one clip; `workers` clips are encoded at once by `encode_many` (each
        worker with its own `n_threads`). On a 2-core CPU a second thread on one short clip gains nothing
        measurable, while two clips at once encode 1.5x as many per second, with the same states."""
        import ctranslate2

        self.path = Path(path)
        self.workers = max(1, workers)
        self.device = device
        self.n_threads = n_threads
        try:
            self.model = ctranslate2.models.Whisper(str(self.path), device=device,
                                                    compute_type=_ct2_compute_type(dtype, device),
                                                    intra_threads=n_threads, inter_threads=self.workers)
        except Exception as e:
            msg = " ".join(str(e).split())
            raise BundleError(f"CTranslate2 cannot open the encoder in {self.path} ({msg}): re-export the "
                              f"encoder") from None
        self.n_mels = int(self.model.n_mels)
        self.d_model = 0  # learned on the first encode (warm-up)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        import ctranslate2

        outs = []
        for w in _windows(np.asarray(mel, dtype=np.float32)):
            sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(w[None]))
            outs.append(np.array(self.model.encode(sv, to_cpu=True))[0])
        states = np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        self.d_model = states.shape[1]
        return states

    def encode_many(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """`encode` of every mel, `workers` at a time (CTranslate2 releases the GIL while it encodes)."""
        if self.workers == 1 or len(mels) <= 1:
            return [self.encode(m) for m in mels]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.encode, mels))


class OnnxEncoder:
    """onnxruntime session: input `input_features` [1, n_mels, T] -> `last_hidden_state` [1, T/2, d_model]."""

    def __init__(self, path: str | os.PathLike[str], *, n_threads: int = 1, device: str = "cpu") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        # on cuda the CPU provider stays second: ONNX Runtime runs there any node the CUDA provider lacks
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers)
        except Exception as e:
            msg = " ".join(str(e).split())[:200]
            raise BundleError(f"onnxruntime cannot open the encoder {self.path} ({msg}): re-export the "
                              f"encoder") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "input_features" not in inputs or "last_hidden_state" not in outputs:
            raise BundleError(f"{self.path} is not a llasm encoder export (needs input 'input_features' and "
                              f"output 'last_hidden_state'): re-export the encoder")
        shape = inputs["input_features"].shape
        self.n_mels = int(shape[1]) if len(shape) == 3 and isinstance(shape[1], int) else 0
        out_shape = outputs["last_hidden_state"].shape
        self.d_model = int(out_shape[2]) if len(out_shape) == 3 and isinstance(out_shape[2], int) else 0

    def encode(self, mel: np.ndarray) -> np.ndarray:
        outs = []
        for w in _windows(np.asarray(mel, dtype=np.float32)):
            (h,) = self.session.run(["last_hidden_state"], {"input_features": np.ascontiguousarray(w[None])})
            outs.append(h[0])
        states = np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        self.d_model = states.shape[1]
        return states


def load_encoder(spec: EncoderSpec, *, n_threads: int = 1, device: str = "cpu") -> CT2Encoder | OnnxEncoder:
    """`device`: "cpu" or "cuda" (assistant/devices.py chooses)."""
    if spec.format == "ct2":
        return CT2Encoder(spec.path, dtype=spec.dtype, n_threads=n_threads, device=device)
    if spec.format == "onnx":
        return OnnxEncoder(spec.path, n_threads=n_threads, device=device)
    raise BundleError(f"unknown encoder format {spec.format!r}: use 'ct2' or 'onnx'")
