"""Where each part of the runtime runs: `--device auto|cpu|cuda` (the assistant, bench and evaluate).

Three libraries run the models, and each decides for itself whether it can use a GPU:
- llama.cpp (the LLM): a llama-cpp-python built with CUDA (`LLASM_CUDA=1 scripts/setup.sh`); all layers offloaded.
- CTranslate2 (the Whisper encoder, and Whisper's decoder when it hears): its wheels include CUDA; float16.
- ONNX Runtime (an ONNX encoder): the `onnxruntime-gpu` package (`pip install 'llasm[gpu]'`), CUDA provider.

    devices = choose_devices("auto", ("llm", "ct2"))   # Devices(llm="cpu", ct2="cpu", onnx="cpu") here
    devices.llm                                         # "cuda" | "cpu"

`auto` puts a part on the GPU only when its library says it can, and when a GPU seems present (an NVIDIA driver
is loaded) but a part cannot use it, says why in one line on stderr. `cuda` with a part that cannot is a one-line
`DeviceError`. `cpu` asks no library anything. The probes are module-level functions in `PROBES`, so tests
replace them (no GPU is needed to test the selection).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"
PARTS = ("llm", "ct2", "onnx")
LABELS = {"llm": "llama.cpp (the LLM)", "ct2": "CTranslate2 (Whisper)", "onnx": "ONNX Runtime (the encoder)"}


class DeviceError(RuntimeError):
    """A device that cannot be used (`--device cuda` without CUDA, an unknown device); one line with the fix."""


@dataclass(frozen=True)
class Devices:
    """The device of each part: "cpu" or "cuda"."""

    llm: str = "cpu"
    ct2: str = "cpu"
    onnx: str = "cpu"

    def describe(self, parts: Sequence[str] = PARTS) -> str:
        """"llm cuda, ct2 cpu" for the parts that run."""
        return ", ".join(f"{p} {getattr(self, p)}" for p in parts)


def _llama_cuda() -> str | None:
    """None when llama.cpp can offload layers to a GPU, else why not."""
    try:
        import llama_cpp

        if llama_cpp.llama_supports_gpu_offload():
            return None
    except Exception as e:  # noqa: BLE001 - a broken build is a reason like any other
        return f"llama-cpp-python cannot be asked ({type(e).__name__})"
    return "this llama-cpp-python build has no GPU offload (rebuild it: LLASM_CUDA=1 scripts/setup.sh)"


def _ct2_cuda() -> str | None:
    """None when CTranslate2 sees a CUDA device, else why not."""
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return None
    except Exception as e:  # noqa: BLE001
        return f"CTranslate2 cannot be asked ({type(e).__name__})"
    return "CTranslate2 sees no CUDA device (driver or CUDA 12 runtime libraries missing?)"


def _onnx_cuda() -> str | None:
    """None when ONNX Runtime has its CUDA execution provider, else why not."""
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return None
    except Exception as e:  # noqa: BLE001
        return f"onnxruntime cannot be asked ({type(e).__name__})"
    return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu: pip install 'llasm[gpu]')"


def gpu_present() -> bool:
    """Whether an NVIDIA driver is loaded (a GPU seems present), whatever the libraries can do with it."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


PROBES: dict[str, Callable[[], str | None]] = {"llm": _llama_cuda, "ct2": _ct2_cuda, "onnx": _onnx_cuda}


def _warn(msg: str) -> None:
    print(f"llasm: {msg}", file=sys.stderr, flush=True)


def choose_devices(device: str | None, parts: Sequence[str], *,
                   probes: Mapping[str, Callable[[], str | None]] | None = None,
                   gpu_seen: Callable[[], bool] | None = None,
                   warn: Callable[[str], None] | None = None) -> Devices:
    """The device of each of `parts` (a subset of PARTS) for `device` (auto, cpu or cuda; None: auto). Parts not
    named stay on "cpu"."""
    device = (device or DEFAULT_DEVICE).strip().lower()
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}")
    if device == "cpu":
        return Devices()
    probes = PROBES if probes is None else probes
    why_not = {p: probes[p]() for p in dict.fromkeys(parts)}
    blocked = {p: why for p, why in why_not.items() if why is not None}
    if device == "cuda" and blocked:
        reasons = "; ".join(f"{LABELS[p]}: {why}" for p, why in blocked.items())
        raise DeviceError(f"--device cuda: no CUDA for {reasons}; use --device cpu or --device auto")
    if blocked and (gpu_seen or gpu_present)():
        # auto with a GPU that some part cannot use: say so once, the rest of the run is on the CPU for that part
        reasons = "; ".join(f"{LABELS[p]}: {why}" for p, why in blocked.items())
        (warn or _warn)(f"--device auto: a GPU is present, but these run on the CPU: {reasons}")
    return Devices(**{p: ("cpu" if p in blocked else "cuda") for p in why_not})
