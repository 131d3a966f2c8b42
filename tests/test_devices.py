"""--device auto|cpu|cuda: the selection logic with stand-in probes (no GPU needed), and --device cuda on a machine
without CUDA giving one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import child_env
from llasm.assistant.devices import DeviceError, Devices, choose_devices
from llasm.assistant.settings import load_settings

ALL_OK = {"llm": lambda: None, "ct2": lambda: None, "onnx": lambda: None}
NO_LLAMA = dict(ALL_OK, llm=lambda: "this llama-cpp-python build has no GPU offload")
NOTHING = {p: (lambda p=p: f"no CUDA for {p}") for p in ALL_OK}


def _choose(device, parts=("llm", "ct2"), probes=ALL_OK, gpu=True):  # noqa: ANN001, ANN202
    said: list[str] = []
    got = choose_devices(device, parts, probes=probes, gpu_seen=lambda: gpu, warn=said.append)
    return got, said


def test_cpu_asks_no_library() -> None:
    def boom() -> str | None:
        raise AssertionError("--device cpu probed a library")

    got, said = _choose("cpu", probes={"llm": boom, "ct2": boom, "onnx": boom})
    assert got == Devices() and not said


def test_auto_takes_the_gpu_where_each_part_can_use_it() -> None:
    assert _choose("auto") == (Devices(llm="cuda", ct2="cuda"), [])
    assert _choose(None, ("llm", "onnx"))[0] == Devices(llm="cuda", onnx="cuda")  # None is auto
    got, said = _choose("auto", probes=NO_LLAMA)
    assert got == Devices(llm="cpu", ct2="cuda")
    assert len(said) == 1 and "llama.cpp" in said[0] and "no GPU offload" in said[0] and "\n" not in said[0]


def test_auto_without_a_gpu_is_quietly_cpu() -> None:
    assert _choose("auto", probes=NOTHING, gpu=False) == (Devices(), [])
    got, said = _choose("auto", probes=NOTHING, gpu=True)  # a driver is loaded but nothing can use it: say why
    assert got == Devices() and len(said) == 1 and "no CUDA for llm" in said[0] and "no CUDA for ct2" in said[0]


def test_cuda_needs_every_part() -> None:
    assert _choose("cuda")[0] == Devices(llm="cuda", ct2="cuda")
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA for llama.cpp .*use --device cpu"):
        _choose("cuda", probes=NO_LLAMA)
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        _choose("gpu")


def test_settings_file_names_the_device_and_the_llm(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "settings.toml"
    p.write_text('device = "cpu"\nllm = "/models/my.gguf"\n')
    s = load_settings(p)
    assert (s.device, s.llm) == ("cpu", "/models/my.gguf")


@pytest.mark.skipif(choose_devices("auto", ("llm",)).llm == "cuda", reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path) -> None:  # noqa: ANN001
    proc = subprocess.run([sys.executable, "-m", "llasm.assistant.cli", "--text", "Hi", "--device", "cuda"],
                          capture_output=True, text=True, env=child_env(LLASM_CONFIG=str(tmp_path / "none.toml")),
                          timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llasm-assistant: --device cuda: no CUDA for") and \
        "Traceback" not in proc.stderr, proc.stderr
