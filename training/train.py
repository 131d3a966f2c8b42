"""The training loop for both stages (and the ctc "stage 0" objective), read top to bottom.

    cfg = TrainConfig.from_recipe("training/recipes/cpu.toml", stage=1, data="train.jsonl", out="runs/s1")
    train(cfg)       # or: accelerate launch -m llasm.training.cli stage1 --recipe ... (DDP / FSDP)

Checkpoints go to OUT/checkpoints/step-NNNNNNN (layout in docs/architecture.md), written to a temporary
directory and renamed, keep-last-K; OUT/final is the last one. A run restarted with the same OUT resumes
exactly from the newest checkpoint whose checksums verify (model, optimizer, scheduler, RNG, data position).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llasm.assistant.plotting import pyplot
from llasm.assistant.textmetrics import wer
from llasm.training.data import (
    HeardCache,
    Manifest,
    StateCache,
    batch_tokens,
    collate,
    length_grouped_batches,
    load_clip,
    read_manifest,
    spoken_turns_as_asr,
)
from llasm.training.model import CTC_VOCAB, LLaSM, ModelSpec, load_checkpoint, read_checkpoint_config

RECIPES = Path(__file__).parent / "recipes"


class TrainError(ValueError):
    """A bad training setup; the message names the fix."""


@dataclass
class TrainConfig:
    stage: int = 1
    data: str = ""
    eval_data: str = ""
    out: str = "runs/llasm"
    # model
    encoder: str = "default:whisper-base"
    llm: str = "default:smollm2"
    llm_gguf: str = ""
    adaptor: str = "ultravox"
    stack: int = 0  # 0: the adaptor type's default
    hidden: int = 0  # 0: derived from the widths
    topk: int = 0  # ctc: tokens mixed per segment (0: the adaptor's default, or the --init checkpoint's)
    objective: str = "llm"  # llm (LLM in the loop) | ctc (ctc adaptor, stage 0, no LLM forward)
    init: str = ""  # start from this checkpoint (stage 2 from stage 1)
    llm_weights: str = ""  # stage 2: full | lora (stage 1: base)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # comma separated
    loss: str = "ce"  # ce | kl
    # optimisation
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 200
    max_minutes: float = 0.0  # also stop (evaluating and saving) after this much training time; 0: no limit
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto | no | bf16 (auto: bf16 where the hardware computes it natively)
    gradient_checkpointing: bool = False
    state_mask: float = 0.0  # SpecAugment on the encoder states while training (fraction of frames/channels)
    seed: int = 0
    # bookkeeping
    save_every: int = 100
    keep_last: int = 3
    eval_every: int = 100
    eval_max: int = 64
    eval_generate: int = 16  # clips transcribed greedily for WER per eval
    log_every: int = 10
    state_cache: str = ""
    heard_cache: str = ""  # stage 2 over a frozen top-1 ctc adaptor: its heard token ids stand in for the audio
    ctc_shortlist: bool = False  # ctc objective: softmax over the training transcripts' tokens only (as bundles run)
    limit: int = 0  # use only the first N examples (0: all)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: str | Path | None, **overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {}
        if recipe:
            p = Path(recipe)
            if not p.exists() and (RECIPES / f"{recipe}.toml").exists():
                p = RECIPES / f"{recipe}.toml"
            try:
                raw = tomllib.loads(p.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise TrainError(f"recipe {recipe}: {e}; give a TOML file or one of {recipe_names()}") from None
            for k, v in raw.items():  # sections only group keys
                if isinstance(v, dict):
                    values.update(v)
                else:
                    values[k] = v
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TrainError(f"unknown setting(s) {', '.join(unknown)}; see training/recipes/cpu.toml")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.stage not in (1, 2):
            raise TrainError(f"stage must be 1 or 2, got {self.stage}")
        if self.objective not in ("llm", "ctc"):
            raise TrainError("objective must be 'llm' or 'ctc'")
        if self.objective == "ctc" and (self.adaptor != "ctc" or self.stage != 1):
            raise TrainError("the ctc objective trains a ctc adaptor in stage 1 (--adaptor ctc --stage 1)")
        if self.loss not in ("ce", "kl"):
            raise TrainError("loss must be 'ce' or 'kl'")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise TrainError("mixed_precision must be 'auto', 'no' or 'bf16'")
        if not 0 <= self.state_mask < 1:
            raise TrainError(f"state_mask must be in [0, 1), not {self.state_mask}")
        if self.llm_weights not in ("", "base", "full", "lora"):
            raise TrainError("llm_weights must be base, full or lora")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_steps < 1:
            raise TrainError("batch_size, grad_accum and max_steps must be >= 1")
        if self.ctc_shortlist and self.objective != "ctc":
            raise TrainError("--ctc-shortlist shapes the ctc objective's softmax (--objective ctc)")
        if self.heard_cache and (self.stage != 2 or not self.init or self.state_cache):
            raise TrainError("a heard cache feeds stage 2 from a ctc checkpoint (--stage 2 --init CKPT), "
                             "in place of a state cache")

    def what_trains(self) -> str:
        if self.stage == 1:
            return "base"
        return self.llm_weights or "lora"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def resolve_base(ref: str, kind: str) -> str:
    """A HF directory for `default:...` refs (converted once by training.convert), else the path as is."""
    if not ref.startswith("default:"):
        if not Path(ref).exists():
            raise TrainError(f"{kind} {ref} not found; give a local Hugging Face directory or default:NAME")
        return ref
    from llasm.training import convert

    return str(convert.whisper_hf(ref) if kind == "encoder" else convert.llama_hf(ref))


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Elsewhere torch emulates bf16
    matmuls, measured here at over 100x slower than float32 (docs/training.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(mode: str) -> str:
    """`auto` -> bf16 on a CUDA GPU that supports it or a CPU with native bf16, else no (float32)."""
    if mode != "auto":
        return mode
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


# ---- schedule ------------------------------------------------------------------------------------------
def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---- checkpoints -----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def hearing_sha256(ckpt: str | Path) -> str:
    """What a heard cache is tied to: the adaptor's weights and, for a --ctc-shortlist head, its vocabulary
    (`ctc_vocab.json` maps the head's outputs to token ids). Without one it is the weights' sha256 alone."""
    ckpt = Path(ckpt)
    digest = _sha256(ckpt / "adaptor.safetensors")
    vocab = ckpt / CTC_VOCAB
    if vocab.exists():
        digest = hashlib.sha256(f"{digest} {_sha256(vocab)}".encode()).hexdigest()
    return digest


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    js = {"python": _jsonable(random.getstate()),
          "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    ts = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        ts.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return js, ts


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _set_rng_state(js: dict[str, Any], ts: dict[str, torch.Tensor]) -> None:
    py = js["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = js["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(ts["torch"])
    cuda = [ts[k] for k in sorted(ts) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer state as flat tensors + JSON. Under FSDP every rank must call this (in the same order):
    each sharded state tensor is all-gathered into the full tensor, so the file is the same as unsharded."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                if _is_dtensor(v):
                    v = v.full_tensor()
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    params = [p for g in opt.param_groups for p in g["params"]]
    if any(_is_dtensor(p) for p in params):  # FSDP: shard each full state tensor like its parameter
        from torch.distributed.tensor import distribute_tensor

        for pid in sorted(state):
            p = params[pid]
            for name in sorted(state[pid]):
                v = state[pid][name]
                if _is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape:
                    state[pid][name] = distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _is_dtensor(t: Any) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _is_sharded(opt: torch.optim.Optimizer) -> bool:
    return any(_is_dtensor(p) for g in opt.param_groups for p in g["params"])


def save_checkpoint(model: LLaSM, ckpt: Path, *, cfg: TrainConfig, step: int, opt: torch.optim.Optimizer | None,
                    sched: Any, accelerator: Any) -> None:
    """Write a checkpoint atomically: everything into `.tmp-NAME`, checksums last, then rename.

    Under FSDP (every rank calls it) the weights and optimizer state are gathered from the shards and the
    main process writes the same full tensors, in the same files, as an unsharded run."""
    from safetensors.torch import save_file

    tmp = ckpt.parent / f".tmp-{ckpt.name}"
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "trainer").mkdir(parents=True)
    accelerator.wait_for_everyone()
    js, ts = _rng_state()
    save_file(ts, str(tmp / "trainer" / f"rng-{rank}.safetensors"))
    (tmp / "trainer" / f"rng-{rank}.json").write_text(json.dumps(js))
    # FSDP: every rank takes part in gathering the sharded weights and optimizer state into full tensors
    full: dict[str, dict[str, torch.Tensor]] | None = None
    if is_sharded(model):
        main = accelerator.is_main_process
        full = {"adaptor": {k: v.float().contiguous() for k, v in gather_state(model.adaptor, main).items()}}
        if model.spec.llm_weights in ("full", "lora"):
            full["llm"] = gather_state(model.llm, main, "lora_" if model.spec.llm_weights == "lora" else "")
    gathered = optimizer_tensors(opt) if opt is not None and _is_sharded(opt) else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        desc = model.describe() | {"format": "llasm-checkpoint", "version": 1, "stage": cfg.stage, "step": step,
                                   "objective": cfg.objective}
        (tmp / "llasm.json").write_text(json.dumps(desc, indent=2, ensure_ascii=False))
        save_file(full["adaptor"] if full else model.adaptor.tensors(), str(tmp / "adaptor.safetensors"))
        if model.adaptor.vocab_ids is not None:
            (tmp / CTC_VOCAB).write_text(json.dumps(model.adaptor.vocab_ids.tolist()))
        given = {"state_dict": full["llm"]} if full and "llm" in full else {}
        if model.spec.llm_weights == "full":
            model.llm.save_pretrained(str(tmp / "llm"), max_shard_size="100GB", **given)
        elif model.spec.llm_weights == "lora":
            model.llm.save_pretrained(str(tmp / "lora"), **given)
        model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if opt is not None:
            tensors, meta = gathered or optimizer_tensors(opt)
            save_file(tensors, str(tmp / "trainer" / "optimizer.safetensors"))
            (tmp / "trainer" / "optimizer.json").write_text(json.dumps(meta))
            (tmp / "trainer" / "scheduler.json").write_text(json.dumps(
                {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        state = {"step": step, "world_size": world, "config": dataclasses.asdict(cfg),
                 "sha256": {str(p.relative_to(tmp)): _sha256(p) for p in files}}
        (tmp / "trainer" / "state.json").write_text(json.dumps(state, indent=1))
        for p in [*files, tmp / "trainer" / "state.json"]:
            with p.open("rb") as f:
                os.fsync(f.fileno())
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(tmp, ckpt)
    accelerator.wait_for_everyone()


def verify_checkpoint(ckpt: Path) -> dict[str, Any] | None:
    """The trainer state of a complete, uncorrupted checkpoint, else None."""
    try:
        state = json.loads((ckpt / "trainer" / "state.json").read_text())
        for rel, digest in state["sha256"].items():
            if _sha256(ckpt / rel) != digest:
                return None
        return state
    except (OSError, ValueError, KeyError):
        return None


def latest_checkpoint(out: Path, log: Any = print) -> tuple[Path, dict[str, Any]] | None:
    """Newest verified checkpoint under OUT/checkpoints; corrupt ones are reported and skipped."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    for ckpt in sorted(root.glob("step-*"), reverse=True):
        state = verify_checkpoint(ckpt)
        if state is not None:
            return ckpt, state
        log(f"checkpoint {ckpt} is incomplete or corrupt; falling back to an earlier one")
    return None


def prune_checkpoints(out: Path, keep: int) -> None:
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    for old in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


# ---- model setup -------------------------------------------------------------------------------------------
def _lora_targets(cfg: TrainConfig) -> tuple[str, ...]:
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
    if not targets:
        raise TrainError("--lora-targets is empty; name the LLM's linear layers (e.g. q_proj,v_proj)")
    return targets


def build_model(cfg: TrainConfig) -> LLaSM:
    trains = cfg.what_trains()
    kl_teacher = cfg.loss == "kl" and trains == "full"
    if cfg.init:
        ccfg = read_checkpoint_config(cfg.init)
        if cfg.heard_cache:
            a = ccfg.get("adaptor", {})
            if a.get("type") != "ctc" or (cfg.topk or a.get("topk")) != 1:
                raise TrainError(f"a heard cache stands in for a top-1 ctc adaptor; {cfg.init} has a "
                                 f"{a.get('type')} adaptor (give --topk 1 for a ctc one)")
        model = load_checkpoint(cfg.init, llm_weights=trains, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                lora_targets=_lora_targets(cfg), gradient_checkpointing=cfg.gradient_checkpointing,
                                kl_teacher=kl_teacher, state_mask=cfg.state_mask,
                                adaptor_overrides={"topk": cfg.topk} if cfg.topk else None,
                                with_encoder=not cfg.heard_cache)
        c = model.adaptor.config
        if c.type == "ctc" and c.topk == 1:
            # each segment is read as one token's embedding row: no gradient reaches the adaptor
            model.adaptor.requires_grad_(False)
        return model
    adaptor: dict[str, Any] = {"type": cfg.adaptor}
    if cfg.topk:
        adaptor["topk"] = cfg.topk
    if cfg.stack:
        adaptor["stack"] = cfg.stack
    if cfg.hidden:
        adaptor["hidden"] = cfg.hidden
    llm = resolve_base(cfg.llm, "llm")
    gguf = cfg.llm_gguf or None
    if Path(llm).is_file() and llm.endswith(".gguf"):
        llm, gguf = str(Path(llm).parent), Path(llm).name
    spec = ModelSpec(encoder=resolve_base(cfg.encoder, "encoder"), llm=llm, llm_gguf=gguf, adaptor=adaptor,
                     llm_weights=trains, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                     lora_targets=_lora_targets(cfg), gradient_checkpointing=cfg.gradient_checkpointing, kl_teacher=kl_teacher,
                     state_mask=cfg.state_mask)
    return LLaSM.build(spec)


def restore_weights(model: LLaSM, ckpt: Path) -> None:
    from safetensors.torch import load_file

    model.adaptor.load_state_dict(load_file(str(ckpt / "adaptor.safetensors")))
    if model.spec.llm_weights == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model.llm, load_file(str(ckpt / "lora" / "adapter_model.safetensors")))
    elif model.spec.llm_weights == "full":
        sd: dict[str, torch.Tensor] = {}
        for f in sorted((ckpt / "llm").glob("*.safetensors")):
            sd.update(load_file(str(f)))
        missing, unexpected = model.llm.load_state_dict(sd, strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise TrainError(f"{ckpt}/llm does not match the model ({len(missing)} missing, {len(unexpected)} unexpected)")


# ---- FSDP --------------------------------------------------------------------------------------------------
def fsdp_requested() -> bool:
    """True under `accelerate launch --use_fsdp` or a launcher config with `distributed_type: FSDP`.

    The trainer then shards the model itself with torch's FSDP2 (`fully_shard`) on CUDA and on the CPU alike;
    Accelerate's own FSDP mode exists only for accelerators (its AcceleratorState keeps MULTI_CPU on a CPU)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def shard_model(model: LLaSM, device: torch.device) -> None:
    """FSDP2, in place: every transformer block (LLM, encoder, KL teacher) is its own unit, the rest (adaptor,
    embeddings, norms, head, convolutions) the root unit. Parameters, gradients and optimizer state are
    sharded over all processes; frozen and trainable parameters may share a unit. Rank 0's initial weights
    (random adaptor / LoRA init) are broadcast first, as DDP does."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model.to(device)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    block_names: set[str] = set()
    for m in model.modules():
        block_names.update(getattr(m, "_no_split_modules", None) or [])
    for m in list(model.modules()):
        if type(m).__name__ in block_names:
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    # the ctc adaptor's token table is a view of the embedding weight: take it once FSDP has unsharded it
    model.register_forward_pre_hook(lambda m, args: m._attach_table())


@contextlib.contextmanager
def full_parameters(model: LLaSM, sharded: bool) -> Iterator[None]:
    """Under FSDP (call on every rank): all-gather every unit's full parameters and keep them through forward
    calls, so the main process alone can evaluate, generate and save with the plain modules; reshard on exit.
    Without FSDP: nothing to do. (`state_dict()` reshards FSDP units: use `gather_state` to save.)"""
    if not sharded:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for u in units:
        u.unshard()
        u.set_reshard_after_forward(False, recurse=False)
    model._attach_table()
    try:
        yield
    finally:
        for u in units:
            u.set_reshard_after_forward(u is not model, recurse=False)
            u.reshard()


def is_sharded(model: torch.nn.Module) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gather_state(module: torch.nn.Module, keep: bool, select: str = "") -> dict[str, torch.Tensor]:
    """`module.state_dict()` (entries whose name contains `select`) with every FSDP shard all-gathered into the
    full tensor, one tensor at a time; a collective: every rank calls it, `keep` says where the CPU copy stays."""
    out: dict[str, torch.Tensor] = {}
    done: dict[int, torch.Tensor] = {}  # tied weights (one parameter, two names) stay one tensor, as unsharded
    for k, v in module.state_dict(keep_vars=True).items():
        if select not in k:
            continue
        if id(v) not in done:
            full = v.full_tensor() if _is_dtensor(v) else v
            done[id(v)] = full.detach().cpu().clone() if keep else full[:0]
        if keep:
            out[k] = done[id(v)]
    return out


# ---- eval -----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: LLaSM, manifest: Manifest, cfg: TrainConfig, cache: StateCache | None = None,
             max_examples: int | None = None, n_generate: int | None = None,
             heard: HeardCache | None = None) -> dict[str, float]:
    """Held-out loss (fixed instruction, audio after) and WER of greedy transcriptions (the WER
    `llasm-assistant evaluate` reports: assistant/textmetrics.py)."""
    was_training = model.training
    model.eval()
    exs = manifest.examples[: max_examples or cfg.eval_max]
    losses, weights, hyps, refs = [], [], [], []
    n_gen = cfg.eval_generate if n_generate is None else n_generate
    for i in range(0, len(exs), cfg.batch_size):
        chunk = exs[i: i + cfg.batch_size]
        # conversations (a stage-2 mix) are scored as they are written; ASR clips with the fixed instruction
        stage = 1 if all(e.is_asr for e in chunk) else 2
        batch = collate(chunk, model, stage=stage, objective=cfg.objective, seed=cfg.seed, epoch=0,
                        indices=list(range(i, i + len(chunk))), cache=cache, train=False, heard=heard)
        loss, n = model(batch)
        losses.append(float(loss) * n)
        weights.append(n)
        if len(hyps) < n_gen:
            hyps.extend(transcribe_batch(model, batch, chunk)[: n_gen - len(hyps)])
            refs.extend(_reference(e) for e in chunk[: len(hyps) - len(refs)])
    model.train(was_training)
    out = {"eval_loss": sum(losses) / max(1, sum(weights))}
    if hyps:
        out["wer"] = wer(refs, hyps)
        out["example"] = f"{refs[0]!r} -> {hyps[0]!r}"
    return out


def _reference(ex: Any) -> str:
    """What a held-out example should produce: its transcript, or a conversation's last reply."""
    if ex.is_asr:
        return ex.text
    replies = [t.get("value", "") for t in ex.turns if t.get("from") in ("gpt", "assistant")]
    return replies[-1] if replies else ""


def transcribe_batch(model: LLaSM, batch: dict[str, Any], examples: list[Any]) -> list[str]:
    emb, heard = model.batch_audio(batch)
    if heard is not None and model.adaptor.config.type == "ctc" and batch["objective"] == "ctc":
        return [model.tokenizer.decode(h, skip_special_tokens=True).strip() for h in heard]
    from llasm.training.data import asr_turns, conversation_turns

    out, first = [], 0  # the batch's clips are its examples' clips, in order
    for ex in examples:
        if ex.is_asr:
            turns = asr_turns(ex, None, with_answer=False)
        else:  # a conversation: everything before its last reply
            turns = conversation_turns(ex)
            while turns and turns[-1].role == "assistant":
                turns.pop()
        clips, first = emb[first: first + len(ex.clips)], first + len(ex.clips)
        sample = model.prompt.build(turns, add_generation=True)
        out.append(model.generate(sample, clips, max_new_tokens=max(16, 3 * len(_reference(ex).split()) + 8)))
    return out


# ---- the loop ----------------------------------------------------------------------------------------------
def trim_metrics(path: Path, step: int) -> int:
    """Drop the rows of metrics.jsonl past `step`, and a last line a kill cut short: a run resumed from the
    checkpoint at `step` logs those steps again, and each step must appear once. Returns the rows dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    keep: list[str] = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step:
            continue
        keep.append(line)
    dropped = sum(1 for x in lines if x.strip()) - len(keep)
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def plot_metrics(out: Path) -> Path | None:
    plt = pyplot()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    tr = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    ev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not tr and not ev:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train loss")
    if ev:
        ax.plot(*zip(*ev, strict=True), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "loss.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) a training run; returns the final checkpoint directory."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from tqdm import tqdm

    precision = resolve_precision(cfg.mixed_precision)
    fsdp = fsdp_requested()
    if fsdp:  # the trainer shards with FSDP2 itself (shard_model); Accelerate sets up the processes only
        os.environ["ACCELERATE_USE_FSDP"] = "false"
    # Accelerate keeps its state per process and refuses a second Accelerator with another precision; each run
    # here builds its own, so the precision state is reset first (the process group, if any, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    try:
        acc = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    finally:
        if fsdp:
            os.environ["ACCELERATE_USE_FSDP"] = "true"
    sharded = fsdp and acc.num_processes > 1
    out = Path(cfg.out)
    log = (lambda m: print(m, file=sys.stderr)) if acc.is_main_process else (lambda m: None)
    if cfg.mixed_precision == "auto":
        log(f"mixed precision: {precision} (auto)")
    if fsdp:
        log(f"FSDP2 over {acc.num_processes} processes" if sharded else "FSDP with one process: nothing to shard")
    if acc.is_main_process:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    torch.manual_seed(cfg.seed + acc.process_index)
    random.seed(cfg.seed + acc.process_index)
    np.random.seed(cfg.seed + acc.process_index)

    if not cfg.data:
        raise TrainError("no training data: pass --data MANIFEST")
    heard = HeardCache(cfg.heard_cache) if cfg.heard_cache else None
    if heard is not None and cfg.init:
        if heard.adaptor_sha256 != hearing_sha256(cfg.init):
            raise TrainError(f"{cfg.heard_cache} was heard by another adaptor than {cfg.init}'s: rebuild it "
                             "with `llasm-train cache-heard --init` on that checkpoint")
    known = heard.seconds if heard is not None else None
    manifest = read_manifest(cfg.data, limit=cfg.limit or None, known_seconds=known)
    if acc.is_main_process:
        manifest.report()
    eval_manifest = read_manifest(cfg.eval_data, known_seconds=known) if cfg.eval_data else None
    if cfg.stage == 1:  # spoken questions train the adaptor's hearing too
        manifest = spoken_turns_as_asr(manifest)
        eval_manifest = spoken_turns_as_asr(eval_manifest) if eval_manifest else None
    cache = StateCache(cfg.state_cache) if cfg.state_cache else None

    model = build_model(cfg)
    resume = latest_checkpoint(out, log)
    if resume is not None and resume[1]["world_size"] != acc.num_processes:
        raise TrainError(f"{resume[0]} was written by {resume[1]['world_size']} process(es); resume with as many")
    if sharded:  # full weights first, then shard; the optimizer is built on the sharded parameters
        if resume is not None:
            restore_weights(model, resume[0])
        shard_model(model, acc.device)
    params = model.trainable_parameters()
    if not params:
        raise TrainError("nothing to train: the adaptor and LLM are all frozen")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    start = 0
    if resume is not None:
        ckpt, state = resume
        if not sharded:
            restore_weights(model, ckpt)
        from safetensors.torch import load_file

        load_optimizer(opt, load_file(str(ckpt / "trainer" / "optimizer.safetensors")),
                       json.loads((ckpt / "trainer" / "optimizer.json").read_text()))
        sched.load_state_dict(json.loads((ckpt / "trainer" / "scheduler.json").read_text())
                              | {"lr_lambdas": [None] * len(opt.param_groups)})
        r = acc.process_index
        _set_rng_state(json.loads((ckpt / "trainer" / f"rng-{r}.json").read_text()),
                       load_file(str(ckpt / "trainer" / f"rng-{r}.safetensors")))
        start = state["step"]
        log(f"resumed from {ckpt} at step {start}")
    if sharded:
        wrapped, opt = model, acc.prepare(opt)
    else:
        wrapped, opt = acc.prepare(model, opt)
        model.to(acc.device)
    model._attach_table()
    if cfg.ctc_shortlist:
        ids = sorted({t for e in manifest.examples for t in model.prompt.encode(e.text)})
        model.adaptor.vocab_ids = torch.tensor(ids, dtype=torch.long)
        log(f"ctc softmax over the {len(ids):,} tokens of the training transcripts "
            f"(of {model.adaptor.config.vocab_size:,})")
    elif cfg.objective == "ctc":  # a head trained on the whole vocabulary scores all of it
        model.adaptor.vocab_ids = None

    seconds = [e.seconds for e in manifest.examples]
    world, rank = acc.num_processes, acc.process_index
    n_batches = len(length_grouped_batches(seconds, cfg.batch_size, cfg.seed, 0, world))
    epoch_cache: dict[int, list[list[int]]] = {}

    def micro_batch(m: int) -> tuple[int, list[int]]:
        g = m * world + rank  # global micro-batch index: the data position is a function of the step
        epoch, k = divmod(g, n_batches)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = length_grouped_batches(seconds, cfg.batch_size, cfg.seed, epoch, world)
        return epoch, epoch_cache[epoch][k]

    if acc.is_main_process:
        trim_metrics(out / "metrics.jsonl", start)
    metrics = (out / "metrics.jsonl").open("a") if acc.is_main_process else None
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not acc.is_main_process, dynamic_ncols=True,
               desc=f"stage {cfg.stage} ({model.adaptor.config.type}, {cfg.objective})")
    wrapped.train()
    if model.encoder is not None:
        model.encoder.eval()
    t_last, samples_acc, tokens_acc, loss_acc, n_acc = time.time(), 0, 0, 0.0, 0
    train_s = 0.0  # time spent in training steps by this process (evaluation and saving excluded)
    for step in range(start, cfg.max_steps):
        t_step = time.time()
        for a in range(cfg.grad_accum):
            epoch, idx = micro_batch(step * cfg.grad_accum + a)
            batch = collate([manifest.examples[i] for i in idx], model, stage=cfg.stage, objective=cfg.objective,
                            seed=cfg.seed, epoch=epoch, indices=idx, cache=cache, kl=cfg.loss == "kl",
                            heard=heard)
            if sharded:  # FSDP2: accumulate unsharded gradients, reduce-scatter on the last micro-batch
                model.set_requires_gradient_sync(a == cfg.grad_accum - 1)
                ctx = _nullcontext()
            else:
                ctx = acc.no_sync(wrapped) if a < cfg.grad_accum - 1 else _nullcontext()
            with ctx, acc.autocast():
                loss, _ = wrapped(batch)
                acc.backward(loss / cfg.grad_accum)
            loss_acc += float(loss.detach())
            n_acc += 1
            samples_acc += len(idx)
            tokens_acc += batch_tokens(batch)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        bar.update(1)
        train_s += time.time() - t_step
        last = done == cfg.max_steps
        if cfg.max_minutes > 0 and not last:  # every rank stops at the same step
            over = torch.tensor([float(train_s > 60 * cfg.max_minutes)], device=acc.device)
            last = bool(acc.reduce(over, reduction="max").item() > 0)
            if last:
                log(f"time budget of {cfg.max_minutes:g} min reached at step {done}")
        if done % cfg.log_every == 0 or last:
            stats = torch.tensor([loss_acc, n_acc, samples_acc, tokens_acc], dtype=torch.float64, device=acc.device)
            stats = acc.reduce(stats, reduction="sum")
            dt = time.time() - t_last
            row = {"step": done, "loss": float(stats[0] / stats[1]), "lr": sched.get_last_lr()[0],
                   "samples_per_s": float(stats[2]) / dt, "tokens_per_s": float(stats[3]) / dt, "epoch": epoch,
                   "train_s": round(train_s, 2)}
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}")
            if metrics:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
            t_last, samples_acc, tokens_acc, loss_acc, n_acc = time.time(), 0, 0, 0.0, 0
        if eval_manifest is not None and (done % cfg.eval_every == 0 or last):
            # FSDP: every rank evaluates on the full parameters (transformers syncs FSDP generation over ranks)
            with full_parameters(model, sharded):
                ev = evaluate(model, eval_manifest, cfg, cache, heard=heard) if sharded else None
                if acc.is_main_process:
                    ev = ev or evaluate(model, eval_manifest, cfg, cache, heard=heard)
                    row = {"step": done, "train_s": round(train_s, 2),
                           **{k: v for k, v in ev.items() if k != "example"}}
                    bar.write(f"step {done}: eval loss {ev['eval_loss']:.3f}  "
                              f"WER {ev.get('wer', float('nan')):.3f}  {ev.get('example', '')}")
                    if metrics:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                    plot_metrics(out)
                acc.wait_for_everyone()
            t_last = time.time()
        if done % cfg.save_every == 0 or last:
            save_checkpoint(model, out / "checkpoints" / f"step-{done:07d}", cfg=cfg, step=done, opt=opt,
                            sched=sched, accelerator=acc)
            if acc.is_main_process:
                prune_checkpoints(out, cfg.keep_last)
            acc.wait_for_everyone()
            t_last = time.time()
        if last:
            break
    bar.close()
    final = out / "final"
    if acc.is_main_process:
        last = latest_checkpoint(out, log)
        if last is None:
            raise TrainError(f"no valid checkpoint under {out}/checkpoints after training")
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(last[0], final)
        if metrics:
            metrics.close()
            plot_metrics(out)
    acc.wait_for_everyone()
    return final


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def evaluate_checkpoint(ckpt: str | Path, data: str, *, max_examples: int = 200, n_generate: int = 50,
                        batch_size: int = 8) -> dict[str, float]:
    cfgj = read_checkpoint_config(ckpt)
    model = load_checkpoint(ckpt)
    cfg = TrainConfig(objective=cfgj.get("objective", "llm"), batch_size=batch_size, eval_max=max_examples,
                      eval_generate=n_generate, adaptor=cfgj["adaptor"]["type"])
    return evaluate(model, read_manifest(data), cfg, max_examples=max_examples, n_generate=n_generate)


def cache_states(data: str, encoder: str, out: str | Path, *, shard_size: int = 512, batch_size: int = 8,
                 engine: str = "torch", dtype: str = "int8") -> Path:
    """Encode every clip once; write shard-NNNNN.safetensors (float16 states) and index.json.

    `engine="ct2"` encodes with CTranslate2 (`dtype` compute) — the same encoder a bundle runs, and about
    ten times faster than the torch float32 encoder on a CPU without bf16 units.

    Incremental and resumable: clips already in `out`'s index are skipped, so a killed run continues where its
    last shard ended and another manifest can be added to the same cache. The index is rewritten (atomically)
    after every shard. Adding to a cache made by another encoder or engine is refused."""
    from llasm.training.data import features_batch
    from safetensors.torch import save_file
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[str]] = {}
    n_shard = 0
    if (out / "index.json").exists():
        try:
            old = json.loads((out / "index.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TrainError(f"{out / 'index.json'} is unreadable ({e}): delete {out} to rebuild the cache") from None
        if (old.get("encoder"), old.get("engine")) != (encoder, engine):
            raise TrainError(f"{out} holds states of {old.get('encoder')} ({old.get('engine')}), not {encoder} "
                             f"({engine}): use another --out")
        index = old["clips"]
        n_shard = 1 + max((int(v[0][6:11]) for v in index.values()), default=-1)
    manifest = read_manifest(data)
    manifest.report()
    clips = sorted({str(c.resolve()) for e in manifest.examples for c in e.clips} - set(index))
    if not clips:
        print(f"all clips of {data} are already in {out}")
        return out
    if engine == "ct2":
        enc = _CT2StateEncoder(encoder, dtype)
    elif engine == "torch":
        from llasm.training.model import WhisperEncoderVL
        from transformers import WhisperModel

        enc = WhisperEncoderVL(WhisperModel.from_pretrained(resolve_base(encoder, "encoder")).get_encoder()).eval()
    else:
        raise TrainError(f"unknown encoder engine {engine!r}; use torch or ct2")
    shard: dict[str, torch.Tensor] = {}
    pending: dict[str, list[str]] = {}

    def flush() -> None:
        nonlocal shard, n_shard
        if shard:
            name = f"shard-{n_shard:05d}.safetensors"
            save_file(shard, str(out / name))
            index.update({c: [name, k] for c, k in pending.items()})
            tmp = out / "index.json.tmp"
            tmp.write_text(json.dumps({"encoder": encoder, "engine": engine, "d_model": enc.d_model,
                                       "clips": index}))
            os.replace(tmp, out / "index.json")
            n_shard += 1
            shard = {}
            pending.clear()

    with torch.no_grad():
        for i in tqdm(range(0, len(clips), batch_size), desc="encoding", unit="batch"):
            group = clips[i: i + batch_size]
            feats, lens = features_batch([load_clip(Path(c)) for c in group], enc.n_mels)
            states, slen = enc(feats, lens)
            for c, s, n in zip(group, states, slen, strict=True):
                key = str(len(pending))
                shard[key] = s[: int(n)].to(torch.float16).contiguous()
                pending[c] = key
                if len(shard) >= shard_size:
                    flush()
    flush()
    return out


def cache_heard(init: str | Path, data: str, out: str | Path, *, state_cache: str | Path | None = None,
                batch_size: int = 16) -> Path:
    """What a top-1 ctc checkpoint's adaptor hears in every clip of `data`, written once as a heard cache
    (`training.data.HeardCache`, one JSON file): the token ids it reads to the LLM and each clip's length.

    Stage 2 over that frozen adaptor then reads this file in place of the audio (`--heard-cache`): the same
    embeddings the adaptor would give, without the clips, their states or the encoder. States come from
    `state_cache` where it holds them, else the checkpoint's encoder runs on the audio."""
    from llasm.training.data import DataError, HeardCache, clip_key, pad_states
    from tqdm import tqdm

    init, out = Path(init), Path(out)
    cfg = read_checkpoint_config(init)
    if cfg.get("adaptor", {}).get("type") != "ctc":
        raise TrainError(f"{init} has a {cfg.get('adaptor', {}).get('type')} adaptor: only a ctc adaptor's "
                         "hearing is a list of tokens")
    manifest = read_manifest(data)
    manifest.report()
    seconds = {clip_key(c): s for e in manifest.examples for c, s in zip(e.clips, e.clip_seconds, strict=True)}
    clips = sorted(seconds)
    sha = hearing_sha256(init)
    if out.exists():  # a rerun over the same adaptor and clips has nothing to do
        try:
            old = HeardCache(out)
        except DataError:
            old = None
        if old is not None and old.adaptor_sha256 == sha and set(clips) <= set(old.clips):
            print(f"{out} already holds what {init} hears in all {len(clips)} clips")
            return out
    model = load_checkpoint(init, adaptor_overrides={"topk": 1}).eval()
    cache = StateCache(state_cache) if state_cache else None
    heard: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for i in tqdm(range(0, len(clips), batch_size), desc="hearing", unit="batch"):
            group = [Path(c) for c in clips[i: i + batch_size]]
            if cache is not None and all(c in cache for c in group):
                x, lens = pad_states([cache.get(c) for c in group])
            else:
                x, lens = model.encode(*model.features([load_clip(c) for c in group]))
            _, ids = model.adaptor(x, lens)
            for c, h in zip(group, ids or [], strict=True):
                heard[str(c)] = {"ids": [int(t) for t in h], "seconds": seconds[str(c)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"format": HeardCache.FORMAT, "checkpoint": str(init.resolve()),
                               "adaptor_sha256": sha, "clips": heard}))
    os.replace(tmp, out)
    return out


class _CT2StateEncoder:
    """The runtime's CTranslate2 encoder behind the torch encoder's batch interface."""

    def __init__(self, ref: str, dtype: str) -> None:
        import os

        from llasm.assistant.basemodels import resolve
        from llasm.assistant.encoder import CT2Encoder

        path = resolve(ref) if ref.startswith("default:") else Path(ref)
        if not (Path(path) / "model.bin").exists():
            raise TrainError(f"{ref} is not a CTranslate2 Whisper directory (no model.bin); use --engine torch")
        self.ct2 = CT2Encoder(path, dtype=dtype, n_threads=1, workers=os.cpu_count() or 1)
        self.n_mels = self.ct2.n_mels
        self.d_model = 0

    def __call__(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mels = [f[:, : int(n)].numpy() for f, n in zip(feats, lens, strict=True)]
        outs = [torch.from_numpy(s) for s in self.ct2.encode_many(mels)]
        self.d_model = self.ct2.d_model
        out_lens = torch.tensor([o.shape[0] for o in outs])
        states = torch.zeros(len(outs), int(out_lens.max()), self.d_model)
        for i, o in enumerate(outs):
            states[i, : o.shape[0]] = o
        return states, out_lens
