"""FSDP training: torch FSDP2 through the real `accelerate launch --use_fsdp`, two gloo processes on the CPU.

Stage 1 under FSDP must match DDP step for step; stage 2 (full and LoRA) learns, writes the unsharded checkpoint
format (loadable without torch.distributed, readable by export) and resumes exactly from a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import child_env
from llasm.training.train import TrainConfig, TrainError, train
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="needs torch.distributed with gloo"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tiny: Path, out: Path, *args: str, fsdp: bool = True) -> subprocess.CompletedProcess:
    mode = ["--use_fsdp", "--fsdp_version", "2"] if fsdp else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "llasm.training.cli", *args, "--recipe", str(ROOT / "training/recipes/cpu.toml"),
           "--encoder", str(tiny / "whisper"), "--llm", str(tiny / "llm"), "--out", str(out), "--batch-size", "4",
           "--log-every", "1", "--warmup-steps", "1", "--mixed-precision", "no"]
    env = child_env(OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}  # the last row per step wins (a resumed run)


def _tensors(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(f.relative_to(ckpt)): load_file(str(f)) for f in sorted(ckpt.rglob("*.safetensors"))}


def _assert_same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]], atol: float) -> None:
    assert sorted(a) == sorted(b)
    for f in a:
        assert sorted(a[f]) == sorted(b[f]), f
        for k in a[f]:
            torch.testing.assert_close(a[f][k], b[f][k], rtol=0, atol=atol, msg=f"{f}:{k}")


@pytest.fixture(scope="module")
def stage1(tiny: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "s1"
    r = _launch(tiny, out, "stage1", "--adaptor", "ultravox", "--stack", "2", "--data", str(tiny / "data/train.jsonl"),
                "--eval-data", str(tiny / "data/eval.jsonl"), "--eval-every", "8", "--max-steps", "8",
                "--save-every", "4", "--lr", "3e-3")
    assert "FSDP2 over 2 processes" in r.stderr  # sharded, not silently DDP
    return out


def test_stage1_fsdp_matches_ddp(tiny: Path, stage1: Path, tmp_path: Path) -> None:
    ddp = tmp_path / "ddp"
    _launch(tiny, ddp, "stage1", "--adaptor", "ultravox", "--stack", "2", "--data", str(tiny / "data/train.jsonl"),
            "--eval-data", str(tiny / "data/eval.jsonl"), "--eval-every", "8", "--max-steps", "8",
            "--save-every", "4", "--lr", "3e-3", fsdp=False)
    f, d = _losses(stage1), _losses(ddp)
    assert sorted(f) == sorted(d) == list(range(1, 9))
    for s in f:
        assert f[s] == pytest.approx(d[s], rel=1e-6)
    ev = [json.loads(x) for x in (stage1 / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x]
    ev_d = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x]
    assert ev[-1]["eval_loss"] == pytest.approx(ev_d[-1]["eval_loss"], rel=1e-6)
    # the same files, names and (up to summation order) values as the unsharded DDP checkpoint
    files = sorted(str(p.relative_to(stage1 / "final")) for p in (stage1 / "final").rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(ddp / "final")) for p in (ddp / "final").rglob("*") if p.is_file())
    _assert_same(_tensors(stage1 / "final"), _tensors(ddp / "final"), atol=1e-6)
    assert json.loads((stage1 / "final/trainer/state.json").read_text())["world_size"] == 2


def test_stage2_full_learns_resumes_exactly_and_loads_unsharded(tiny: Path, stage1: Path, tmp_path: Path) -> None:
    args = ["stage2", "--init", str(stage1 / "final"), "--llm-weights", "full", "--loss", "ce",
            "--data", str(tiny / "data/conv.jsonl"), "--max-steps", "6", "--save-every", "3", "--lr", "1e-2"]
    ref = tmp_path / "ref"
    _launch(tiny, ref, *args)
    ref_loss = _losses(ref)
    assert ref_loss[6] < 0.8 * ref_loss[1]
    # the state a kill -9 after the step-3 checkpoint leaves behind, then the same command again
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints/step-0000006")
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("".join(x + "\n" for x in rows if json.loads(x)["step"] <= 3))
    r = _launch(tiny, run, *[a.replace(str(ref), str(run)) for a in args])
    assert "at step 3" in r.stderr
    run_loss = _losses(run)
    for s in (4, 5, 6):
        assert run_loss[s] == ref_loss[s]  # bit for bit: weights, sharded optimizer state, schedule, RNG, data
    _assert_same(_tensors(run / "final"), _tensors(ref / "final"), atol=0)
    # another world size is refused with a one-line reason
    with pytest.raises(TrainError, match="2 process"):
        train(TrainConfig.from_recipe(None, stage=2, init=str(stage1 / "final"), llm_weights="full",
                                      data=str(tiny / "data/conv.jsonl"), out=str(run), max_steps=8))
    # the checkpoint is the unsharded format: a plain process and export read it as written
    from llasm.export.checkpoint import Checkpoint
    from llasm.training.model import load_checkpoint

    saved = load_file(str(ref / "final/llm/model.safetensors"))
    model = load_checkpoint(ref / "final")
    sd = model.llm.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(sd[k], v, rtol=0, atol=0)
    ck = Checkpoint.load(ref / "final")
    assert ck.llm_weights == "full"
    exported = ck.load_llm().state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(exported[k], v, rtol=0, atol=0)
    adaptor = load_file(str(ref / "final/adaptor.safetensors"))
    for k, v in ck.adaptor_tensors().items():
        assert torch.equal(torch.from_numpy(v), adaptor[k])


def test_stage2_lora_with_grad_accum_learns(tiny: Path, stage1: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    _launch(tiny, out, "stage2", "--init", str(stage1 / "final"), "--llm-weights", "lora", "--loss", "ce",
            "--data", str(tiny / "data/conv.jsonl"), "--max-steps", "6", "--save-every", "6", "--lr", "2e-2",
            "--grad-accum", "2")
    loss = _losses(out)
    assert loss[6] < loss[1]
    lora = load_file(str(out / "final/lora/adapter_model.safetensors"))
    assert lora and all("lora_" in k for k in lora)
    assert any(float(v.abs().max()) > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it trained
