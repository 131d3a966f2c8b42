"""Structural checks of bundle files: catch a truncated or corrupt GGUF / ONNX / CTranslate2 / safetensors
file with a one-line error naming the file. No torch; numpy, onnx (optional) and the runtime's header readers.

The runtime (`assistant/bundle.py`) already checks sha256 checksums and headers at load; this module goes one
step further and walks every structure to its end (each CT2 variable, the ONNX protobuf, every GGUF tensor
extent), so that `llasm-export verify` can say exactly which file is damaged. It is written to be mirrored:
each check reads only the format's own layout.

    validate_bundle("bundles/mine")         # raises ExportError("... <file> ...") on the first bad file
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from llasm.export.errors import ExportError

_CT2_DTYPE_SIZE = {0: 4, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2}  # f32, i8, i16, i32, f16, bf16


def check_ct2_model_bin(path: str | os.PathLike[str]) -> int:
    """Walk a CTranslate2 `model.bin` (header, every variable, aliases) and return the variable count.

    Layout: u32 version, u16-length string spec name, u32 revision, u32 count, then per variable: string name,
    u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes; then u32 alias count and string pairs.
    """
    path = Path(path)
    data = _read(path)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ExportError(f"{path} is truncated (CTranslate2 model.bin ends at byte {len(data)}, needs "
                              f"{pos + n}): re-export the encoder")
        out = data[pos:pos + n]
        pos += n
        return out

    def string() -> str:
        (n,) = struct.unpack("<H", take(2))
        return take(n).rstrip(b"\0").decode("utf-8", "replace")

    (version,) = struct.unpack("<I", take(4))
    if not 1 <= version <= 64:
        raise ExportError(f"{path} is not a CTranslate2 model (version field {version}): re-export the encoder")
    spec = string()
    if "Spec" not in spec and spec not in ("", "whisper"):
        raise ExportError(f"{path} is not a CTranslate2 model (spec name {spec!r}): re-export the encoder")
    if version >= 2:
        take(4)  # revision
    (count,) = struct.unpack("<I", take(4))
    if count > 1 << 20:
        raise ExportError(f"{path} is corrupt ({count} variables): re-export the encoder")
    for _ in range(count):
        name = string()
        (rank,) = struct.unpack("<B", take(1))
        dims = struct.unpack(f"<{rank}I", take(4 * rank))
        (dtype,) = struct.unpack("<B", take(1))
        if dtype not in _CT2_DTYPE_SIZE:
            raise ExportError(f"{path} is corrupt (variable {name} has unknown dtype {dtype}): re-export the encoder")
        (nbytes,) = struct.unpack("<I", take(4))
        n_el = 1
        for d in dims:
            n_el *= d
        if nbytes != n_el * _CT2_DTYPE_SIZE[dtype]:
            raise ExportError(f"{path} is corrupt (variable {name}: {nbytes} bytes for shape {dims}): re-export "
                              f"the encoder")
        take(nbytes)
    if version >= 3 and pos < len(data):
        (n_alias,) = struct.unpack("<I", take(4))
        for _ in range(n_alias):
            string()
            string()
    if pos != len(data):
        raise ExportError(f"{path} has {len(data) - pos} unexpected trailing bytes: re-export the encoder")
    return count


def check_onnx(path: str | os.PathLike[str]) -> None:
    """Parse the ONNX protobuf completely (a truncated file fails to parse) and run onnx's checker."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: re-export the encoder") from None
    except Exception as e:  # protobuf DecodeError, onnx ValidationError, OSError for external data
        msg = " ".join(str(e).split())[:160]
        raise ExportError(f"{path} is not a valid ONNX model ({type(e).__name__}: {msg}): re-export the encoder") from None
    names = {i.name for i in model.graph.input}
    if "input_features" not in names:
        raise ExportError(f"{path} has no 'input_features' input: it is not a llasm encoder export")


def check_gguf(path: str | os.PathLike[str]) -> dict[str, object]:
    """GGUF header, metadata and every tensor extent inside the file; returns the scalar metadata."""
    from llasm.assistant.bundle import BundleError, read_gguf_index

    path = Path(path)
    try:
        meta, tensors = read_gguf_index(path)
    except BundleError as e:
        raise ExportError(str(e)) from None
    if "general.architecture" not in meta:
        raise ExportError(f"{path} lacks general.architecture: it is not a llama.cpp GGUF; re-export it")
    if not tensors:
        raise ExportError(f"{path} holds no tensors: re-export it")
    return meta


def check_safetensors(path: str | os.PathLike[str]) -> None:
    from llasm.assistant.bundle import BundleError
    from llasm.assistant.bundle import check_safetensors as _check

    try:
        _check(Path(path))
    except BundleError as e:
        raise ExportError(str(e)) from None


def check_file(path: str | os.PathLike[str]) -> None:
    """Dispatch on the file name: *.gguf, *.onnx, model.bin (CT2), *.safetensors; others: readable."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} is missing: re-export the bundle")
    if path.suffix == ".gguf":
        check_gguf(path)
    elif path.suffix == ".onnx":
        check_onnx(path)
    elif path.name == "model.bin":
        check_ct2_model_bin(path)
    elif path.suffix == ".safetensors":
        check_safetensors(path)
    else:
        _read(path)


def validate_bundle(bundle_dir: str | os.PathLike[str]) -> list[Path]:
    """Checksums and headers (the runtime's loader), then a full structural walk of every file it names.
    Returns the files checked; raises ExportError naming the first bad file."""
    from llasm.assistant.bundle import Bundle, BundleError

    root = Path(bundle_dir)
    try:
        b = Bundle.load(root)
    except BundleError as e:
        raise ExportError(str(e)) from None
    files: list[Path] = []
    enc = b.encoder.path
    files += [enc / "model.bin"] if b.encoder.format == "ct2" else [enc]
    files += [b.adaptor_path, b.llm.path] + ([b.llm.lora] if b.llm.lora else [])
    mm = b.manifest.get("mmproj")
    if isinstance(mm, dict) and mm.get("path"):
        files.append(root / str(mm["path"]))
    for f in files:
        check_file(f)
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ExportError(f"{path} cannot be read ({e.strerror}): re-export the bundle") from None
