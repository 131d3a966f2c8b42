"""CTranslate2's ``model.bin``, read into numpy arrays: a flat list of named arrays (format version >= 5).

The runtime reads it to run Whisper's decoder in ONNX Runtime (assistant/whisperdecoder.py); training reads it to
build a Hugging Face Whisper (training/convert.py).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class ModelFileError(RuntimeError):
    """A model file could not be read or converted; the message names the problem and the fix."""


@dataclass
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]

    def weight(self, name: str) -> np.ndarray:
        """A float32 copy of variable ``name``; int8/int16 weights are dequantized with ``<name>_scale``."""
        if name not in self.variables:
            raise ModelFileError(f"{self.spec} model.bin has no variable {name!r}: not a supported Whisper model")
        w = self.variables[name]
        scale = self.variables.get(name + "_scale")
        if w.dtype in (np.int8, np.int16):
            if scale is None:
                raise ModelFileError(f"quantized variable {name!r} has no {name}_scale: model.bin is damaged")
            s = scale.astype(np.float32)
            return w.astype(np.float32) / (s.reshape(-1, *([1] * (w.ndim - 1))) if s.ndim else s)
        return w.astype(np.float32)

    def scalar(self, name: str, default: int | None = None) -> int:
        if name not in self.variables:
            if default is None:
                raise ModelFileError(f"{self.spec} model.bin has no variable {name!r}")
            return default
        return int(np.asarray(self.variables[name]).reshape(-1)[0])

    def count_layers(self, prefix: str) -> int:
        """How many ``<prefix>/layer_N/`` blocks the model has."""
        n = 0
        while any(k.startswith(f"{prefix}/layer_{n}/") for k in self.variables):
            n += 1
        return n


def read_ct2_model(path: str | os.PathLike[str]) -> Ct2Model:
    """Read a CTranslate2 ``model.bin`` (format version >= 5) as numpy arrays (read-only views of the mapped
    file; aliases resolved)."""
    path = Path(path)
    try:
        with path.open("rb") as f:  # mapped, not read: the arrays are views of the file, paged in where used
            data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError) as e:  # ValueError: an empty file cannot be mapped
        reason = getattr(e, "strerror", None) or "the file is empty"
        raise ModelFileError(f"cannot read {path}: {reason}; pass a CTranslate2 model directory") from None
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise ModelFileError(f"{path} ends early: the file is truncated; reinstall or re-convert the model")
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return out

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = bytes(data[pos : pos + n])
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if version < 5 or version > 64:
        raise ModelFileError(f"{path} is not a CTranslate2 model.bin of a supported version (found {version})")
    spec = string()
    (revision,) = take("I")
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank) if rank else ()
        (code,) = take("B")
        (nbytes,) = take("I")
        if pos + nbytes > len(data):
            raise ModelFileError(f"{path} ends inside {name!r}: the file is truncated; reinstall the model")
        raw = data[pos : pos + nbytes]
        pos += nbytes
        dt = _CT2_DTYPES.get(code)
        if dt is None:
            raise ModelFileError(f"{path}: variable {name!r} has unknown dtype code {code}")
        if dt == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dt)
        variables[name] = arr.reshape(dims)
    if pos < len(data):
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias, target = string(), string()
            if target in variables:
                variables[alias] = variables[target]
    return Ct2Model(spec=spec, revision=revision, variables=variables)
