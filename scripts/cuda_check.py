"""A short CUDA check of both training stages (bf16), with throughput.

Runs `training.train.train` on the real architectures (whisper-base + SmolLM2-135M): with their real weights
when `--whisper`/`--llm` point at Hugging Face directories, otherwise randomly initialised from the
configs in `--configs` (throughput does not depend on the weights). Writes `cuda_check.json` with
samples/s and tokens/s per run and a loss curve per run.

    python scripts/cuda_check.py --data asr/train.jsonl --conv inst/train.jsonl --configs cfg --out OUT
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def random_model_dir(kind: str, config_dir: Path, out: Path) -> Path:
    """Save a randomly initialised model with the config and tokenizer files of `config_dir`."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(config_dir)
    model = (WhisperForConditionalGeneration if kind == "whisper" else LlamaForCausalLM)(cfg).float()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in config_dir.iterdir():
        if f.is_file() and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def run(name: str, out: Path, **overrides: object) -> dict[str, object]:
    import torch
    from llasm.training.train import TrainConfig, train

    cfg = TrainConfig.from_recipe("cpu", out=str(out / name), **overrides)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    t0 = time.time()
    train(cfg)
    wall = time.time() - t0
    rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "samples_per_s" in r]
    warm = steps[1:] or steps  # the first log window includes start-up and compilation
    result = {
        "name": name,
        "wall_s": round(wall, 1),
        "steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "samples_per_s": round(statistics.median(r["samples_per_s"] for r in warm), 1),
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in warm), 1),
        "first_loss": round(steps[0]["loss"], 3),
        "last_loss": round(steps[-1]["loss"], 3),
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0,
    }
    print(json.dumps(result), flush=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ASR manifest (stage 1)")
    ap.add_argument("--conv", required=True, help="conversations manifest (stage 2)")
    ap.add_argument("--configs", help="folder with whisper/ and llm/ config + tokenizer files (random init)")
    ap.add_argument("--whisper", help="HF Whisper dir (real weights)")
    ap.add_argument("--llm", help="HF LLaMA dir (real weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / "llasm-cuda-check"  # the system temporary folder, wherever it is
    whisper = args.whisper or str(random_model_dir("whisper", Path(args.configs) / "whisper", work / "whisper"))
    llm = args.llm or str(random_model_dir("llm", Path(args.configs) / "llm", work / "llm"))
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "weights": "real" if args.whisper else "random init (real shapes)"}
    print(json.dumps(info), flush=True)
    common = dict(encoder=whisper, llm=llm, mixed_precision="bf16", max_steps=args.steps,
                  batch_size=args.batch_size, log_every=5, save_every=args.steps, eval_every=10**9,
                  warmup_steps=5)
    results = [
        run("stage1-ultravox", work, stage=1, data=args.data, adaptor="ultravox", **common),
        run("stage1-ctc", work, stage=1, data=args.data, adaptor="ctc", objective="ctc", **common),
        run("stage2-lora-ce", work, stage=2, data=args.conv, adaptor="ultravox", llm_weights="lora",
            loss="ce", init=str(work / "stage1-ultravox" / "final"), **common),
        run("stage2-full-kl", work, stage=2, data=args.conv, adaptor="ultravox", llm_weights="full",
            loss="kl", init=str(work / "stage1-ultravox" / "final"), **common),
    ]
    (out / "cuda_check.json").write_text(json.dumps({**info, "runs": results}, indent=1))
    for r in results:
        png = work / str(r["name"]) / "loss.png"
        if png.exists():
            shutil.copy(png, out / f"{r['name']}.png")


if __name__ == "__main__":
    main()
