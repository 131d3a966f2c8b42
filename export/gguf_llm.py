"""LLaMA-family / Qwen2 weights (Hugging Face layout) -> GGUF that llama.cpp loads, and a PEFT LoRA -> GGUF
LoRA adapter.

The writer follows llama.cpp's own converter (``convert_hf_to_gguf.py``: ``LlamaModel`` and ``Qwen2Model``):
hparams under the ``<arch>.*`` keys, tensor names from ``gguf.get_tensor_name_map``, and, for the ``llama``
architecture only, the rows of ``q_proj``/``k_proj`` permuted into llama.cpp's rotary layout (per head, the
two rotary halves interleaved). Llama-3.x rope scaling (``rope_type: llama3``) is stored as the
``rope_freqs`` tensor of per-frequency factors, as ``LlamaModel.generate_extra_tensors`` computes it.
Tied embeddings write no ``output`` tensor (llama.cpp then reuses ``token_embd``). Tokenizer metadata comes
either from an existing GGUF of the same base model (copied verbatim: the runtime tokenizes exactly as the
shipped model does) or from a Hugging Face tokenizer directory (gpt2-style BPE with a pre-tokenizer name, or
SentencePiece). Quantization is llama.cpp's own (``llama_model_quantize``), so K-quants are available.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGUFValueType
from llasm.export.errors import ExportError

# llama.cpp's `llama_ftype` values for the quantizations a bundle may use (names as in `--llm-quant`).
LLM_QUANTS: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_m": 12,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
}

_ARCH = gguf.MODEL_ARCH.LLAMA
_ARCH_NAME = gguf.MODEL_ARCH_NAMES[_ARCH]

# transformers architecture -> (model_type, GGUF architecture); what the writer handles
SUPPORTED_ARCHS: dict[str, tuple[str, gguf.MODEL_ARCH]] = {
    "LlamaForCausalLM": ("llama", gguf.MODEL_ARCH.LLAMA),
    "Qwen2ForCausalLM": ("qwen2", gguf.MODEL_ARCH.QWEN2),
}
_BY_MODEL_TYPE = {mt: arch for arch, (mt, _) in SUPPORTED_ARCHS.items()}
SUPPORTED_TEXT = "LlamaForCausalLM (rope default or llama3, tied or untied embeddings) and Qwen2ForCausalLM"


# --------------------------------------------------------------------------------------------------------
# hparams


def llama3_rope_factors(rope: Mapping[str, Any], head_dim: int, theta: float,
                        original_ctx: int | None = None) -> np.ndarray:
    """Per-frequency divisors of Llama-3.x rope scaling (llama.cpp's ``rope_freqs`` tensor, float32 [head_dim/2]).

    As ``LlamaModel.generate_extra_tensors`` in llama.cpp's converter; the original context length comes
    from the rope parameters (where transformers reads it), else the config's top level, else 8192.
    """
    freqs = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    factor = float(rope.get("factor", 8.0))
    low_freq_factor = float(rope.get("low_freq_factor", 1.0))
    high_freq_factor = float(rope.get("high_freq_factor", 4.0))
    old_context_len = float(rope.get("original_max_position_embeddings") or original_ctx or 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_freq_wavelen:
            factors.append(1.0)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


@dataclass(frozen=True)
class LlamaHParams:
    """The hyper-parameters a GGUF stores, read from a transformers `LlamaConfig` / `Qwen2Config` (or its
    dict). `arch` is the GGUF architecture (`llama` or `qwen2`); `rope_freqs` the Llama-3 rope factors."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    rms_eps: float
    rope_theta: float
    tie_embeddings: bool
    arch: str = "llama"
    rope_freqs: tuple[float, ...] | None = None

    @property
    def gguf_arch(self) -> gguf.MODEL_ARCH:
        return next(a for _, a in SUPPORTED_ARCHS.values() if gguf.MODEL_ARCH_NAMES[a] == self.arch)

    @property
    def permutes_qk(self) -> bool:
        """llama.cpp's converter permutes q/k rows for the llama architecture only (`LlamaModel.undo_permute`)."""
        return self.arch == "llama"

    @classmethod
    def from_config(cls, config: Any) -> LlamaHParams:
        c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        model_type = c.get("model_type", "llama")
        arch = (c.get("architectures") or [_BY_MODEL_TYPE.get(model_type, "")])[0]
        if arch not in SUPPORTED_ARCHS or SUPPORTED_ARCHS[arch][0] != model_type:
            what = f"{arch!r} ({model_type!r})" if arch else f"{model_type!r} model"
            raise ExportError(
                f"the LLM is a {what}; the GGUF writer handles {SUPPORTED_TEXT}: "
                f"train on one of those (e.g. SmolLM2, Llama-3.x, Qwen2.5)"
            )
        gguf_arch = gguf.MODEL_ARCH_NAMES[SUPPORTED_ARCHS[arch][1]]
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        if not isinstance(rope, dict):
            rope = {}
        if "full_attention" in rope:  # per-layer-type rope parameters
            rope = rope["full_attention"]
        rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
        supported_rope = ("default", "llama3") if gguf_arch == "llama" else ("default",)
        if rope_type not in supported_rope:
            raise ExportError(
                f"rope scaling {rope_type!r} of the {arch} is not supported by the GGUF writer "
                f"(it writes rope {' or '.join(supported_rope)} for {arch}): use a model with those"
            )
        if c.get("use_sliding_window"):
            raise ExportError(f"the {arch} uses sliding-window attention, which llama.cpp's {gguf_arch} does not: "
                              f"set use_sliding_window to false")
        theta = rope.get("rope_theta") or c.get("rope_theta") or 10000.0
        n_head = int(c["num_attention_heads"])
        head_dim = int(c.get("head_dim") or c["hidden_size"] // n_head)
        freqs = None
        if rope_type == "llama3":
            freqs = tuple(float(x) for x in llama3_rope_factors(rope, head_dim, float(theta),
                                                                  c.get("original_max_position_embeddings")))
        return cls(
            n_vocab=int(c["vocab_size"]),
            n_embd=int(c["hidden_size"]),
            n_layer=int(c["num_hidden_layers"]),
            n_ff=int(c["intermediate_size"]),
            n_head=n_head,
            n_head_kv=int(c.get("num_key_value_heads") or n_head),
            head_dim=head_dim,
            n_ctx_train=int(c.get("max_position_embeddings") or 2048),
            rms_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            tie_embeddings=bool(c.get("tie_word_embeddings", False)),
            arch=gguf_arch,
            rope_freqs=freqs,
        )

    def add_to(self, w: gguf.GGUFWriter) -> None:
        w.add_context_length(self.n_ctx_train)
        w.add_embedding_length(self.n_embd)
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_layer_norm_rms_eps(self.rms_eps)
        w.add_rope_freq_base(self.rope_theta)
        if self.head_dim * self.n_head != self.n_embd:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        if self.arch == "llama":  # LlamaModel.set_gguf_parameters adds these two; Qwen2Model does not
            w.add_rope_dimension_count(self.head_dim)
            w.add_vocab_size(self.n_vocab)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF q/k rows -> llama.cpp's rotary layout: per head, interleave the two rotary halves.

    Works on weights `[n_head*head_dim, in]`, on LoRA B `[n_head*head_dim, r]` and on biases `[n_head*head_dim]`.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ExportError(f"cannot permute {rows} rows into {n_head} heads: the model config does not match its weights")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------------------------------------
# tokenizer metadata


@dataclass
class TokenizerMetadata:
    """GGUF key/values describing a tokenizer (`tokenizer.*`), ready to add to a writer."""

    fields: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] = field(default_factory=list)
    n_vocab: int = 0
    source: str = ""

    def add_to(self, w: gguf.GGUFWriter) -> None:
        for key, val, vtype, sub in self.fields:
            w.add_key_value(key, val, vtype, sub_type=sub)

    def get(self, key: str) -> Any:
        for k, v, _, _ in self.fields:
            if k == key:
                return v
        return None


def tokenizer_from_gguf(path: str | os.PathLike[str]) -> TokenizerMetadata:
    """Copy every `tokenizer.*` key of an existing GGUF (the base model's), so tokenization is unchanged."""
    reader = _reader(path)
    meta = TokenizerMetadata(source=f"gguf:{path}")
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        val = f.contents()
        meta.fields.append((key, val, vtype, sub))
        if key == "tokenizer.ggml.tokens":
            meta.n_vocab = len(val)
    if not meta.n_vocab:
        raise ExportError(f"{path} holds no tokenizer (no tokenizer.ggml.tokens): pass a GGUF of a chat model")
    return meta


def tokenizer_from_hf(tok_dir: str | os.PathLike[str], n_vocab: int, *, pre: str | None = None) -> TokenizerMetadata:
    """Tokenizer metadata from a Hugging Face tokenizer directory (as llama.cpp's converter builds it).

    A directory with `tokenizer.model` is SentencePiece (`llama`); otherwise a gpt2-style BPE whose
    pre-tokenizer is identified by llama.cpp's probe-text hash (override with `pre`).
    """
    tok_dir = Path(tok_dir)
    if not tok_dir.is_dir():
        raise ExportError(f"tokenizer directory {tok_dir} does not exist: the checkpoint needs tokenizer/")
    w = _CollectingWriter()
    if (tok_dir / "tokenizer.model").is_file():
        vocab: Any = gguf.SentencePieceVocab(tok_dir)
        tokens, scores, types = [], [], []
        for text, score, toktype in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(int(toktype))
        while len(tokens) < n_vocab:
            tokens.append(f"[PAD{len(tokens)}]".encode())
            scores.append(-1000.0)
            types.append(int(gguf.TokenType.UNUSED))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(tok_dir, n_vocab=len(tokens))
    else:
        tokens, types, detected, add_bos = _bpe_vocab(tok_dir, n_vocab, pre)
        w.add_add_bos_token(add_bos)  # what the HF tokenizer does; tokenizer_config may override it below
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre or detected)
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(tok_dir, load_merges=True)
    special.add_to_gguf(w)  # merges, bos/eos/unk/pad ids, add_bos/add_eos, chat template
    meta = TokenizerMetadata(fields=w.collected, n_vocab=n_vocab, source=f"hf:{tok_dir}")
    return meta


def _bpe_vocab(tok_dir: Path, n_vocab: int, pre: str | None = None) -> tuple[list[str], list[int], str, bool]:
    from llasm.export._tokpre import CHKTXT, PRE_BY_HASH
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    vocab = tok.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise ExportError(
            f"tokenizer in {tok_dir} has ids up to {max(vocab.values())} but the LLM has {n_vocab} rows: "
            f"resize the model's embeddings before export"
        )
    chkhsh = sha256(str(tok.encode(CHKTXT)).encode()).hexdigest()
    pre = pre or PRE_BY_HASH.get(chkhsh)
    if pre is None:
        raise ExportError(
            f"llama.cpp does not know the pre-tokenizer of {tok_dir} (probe hash {chkhsh[:12]}...): "
            f"export with a base GGUF of the same model (llm.gguf in llasm.json), or name one with "
            f"--tokenizer-pre (e.g. gpt-2 for a plain byte-level BPE)"
        )
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        t = reverse.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif t in added:
            if not decoder[i].normalized:
                t = tok.decode(tok.encode(t, add_special_tokens=False))
            special = decoder[i].special or (t.startswith("<|") and t.endswith("|>"))
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
            tokens.append(t)
        else:
            tokens.append(t)
            types.append(int(gguf.TokenType.NORMAL))
    probe = tok.encode("a")
    add_bos = tok.bos_token_id is not None and bool(probe) and probe[0] == tok.bos_token_id
    return tokens, types, pre, add_bos


class _CollectingWriter(gguf.GGUFWriter):
    """A GGUFWriter that records key/values instead of writing (to reuse gguf's SpecialVocab.add_to_gguf)."""

    def __init__(self) -> None:
        self.collected: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] = []
        super().__init__(None, _ARCH_NAME, dry_run=True)

    def add_key_value(self, key: str, val: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None = None) -> None:
        if vtype == GGUFValueType.ARRAY and sub_type is None and len(val):
            sub_type = GGUFValueType.get_type(val[0])
        if key.startswith("tokenizer."):
            self.collected = [c for c in self.collected if c[0] != key] + [(key, val, vtype, sub_type)]


# --------------------------------------------------------------------------------------------------------
# writing a model GGUF


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().to("cpu")
        if str(t.dtype) != "torch.float32":
            t = t.float()
        return t.numpy()
    return np.asarray(t, dtype=np.float32)


def llama_tensors(state_dict: Mapping[str, Any], hp: LlamaHParams, *, dtype: str = "f16") -> Iterable[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every tensor of a HF LLaMA / Qwen2 state dict, in the GGUF dtype.

    Q/K rows are permuted for the llama architecture (not for qwen2, as in llama.cpp's converter); a tied
    `lm_head` is skipped; Llama-3 rope scaling adds `rope_freqs.weight`. 2-D weights are stored as `dtype`
    (f16 or f32); norms, biases and `rope_freqs` stay f32 (as llama.cpp expects).
    """
    tmap = gguf.get_tensor_name_map(hp.gguf_arch, hp.n_layer)
    for name, tensor in state_dict.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and hp.tie_embeddings:
            continue
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ExportError(f"tensor {name!r} has no llama.cpp {hp.arch} name: the LLM is not one of {SUPPORTED_TEXT}")
        arr = _np(tensor)
        if hp.permutes_qk and name.endswith(("q_proj.weight", "q_proj.bias")):
            arr = permute_rows(arr, hp.n_head)
        elif hp.permutes_qk and name.endswith(("k_proj.weight", "k_proj.bias")):
            arr = permute_rows(arr, hp.n_head_kv)
        if arr.ndim >= 2 and dtype == "f16":
            arr = arr.astype(np.float16)
        else:
            arr = arr.astype(np.float32)
        yield new, np.ascontiguousarray(arr)
    if hp.rope_freqs is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", np.asarray(hp.rope_freqs, dtype=np.float32)


def write_llama_gguf(
    out_path: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    config: Any,
    tokenizer: TokenizerMetadata,
    *,
    dtype: str = "f16",
    name: str = "llasm",
    chat_template: str | None = None,
    rope_freqs: np.ndarray | None = None,
) -> Path:
    """Write a LLaMA / Qwen2 GGUF (f16 or f32) from a HF state dict and config; returns the path.

    `rope_freqs`: Llama-3 rope factors for a model whose config lost them (transformers loaded it from a
    GGUF: see `gguf_rope_freqs`); used only when the config has no llama3 rope of its own."""
    if dtype not in ("f16", "f32"):
        raise ExportError(f"unquantized GGUF dtype must be f16 or f32, not {dtype!r}")
    hp = LlamaHParams.from_config(config)
    if rope_freqs is not None and hp.rope_freqs is None and hp.arch == "llama":
        if np.asarray(rope_freqs).shape != (hp.head_dim // 2,):
            raise ExportError(f"rope_freqs has shape {np.asarray(rope_freqs).shape}; the heads need {hp.head_dim // 2}")
        hp = replace(hp, rope_freqs=tuple(float(x) for x in np.asarray(rope_freqs, dtype=np.float32)))
    if tokenizer.n_vocab != hp.n_vocab:
        raise ExportError(
            f"the tokenizer ({tokenizer.source}) has {tokenizer.n_vocab} tokens but the LLM has {hp.n_vocab} "
            f"embedding rows: export with the tokenizer the model was trained with"
        )
    out_path = Path(out_path)
    w = gguf.GGUFWriter(str(out_path), hp.arch)
    try:
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(name)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        hp.add_to(w)
        tokenizer.add_to(w)
        if chat_template is not None:
            w.add_chat_template(chat_template)
        for tname, arr in llama_tensors(state_dict, hp, dtype=dtype):
            w.add_tensor(tname, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return out_path


# --------------------------------------------------------------------------------------------------------
# quantizing with llama.cpp


_LOG: dict[str, Any] = {"callback": None, "errors": []}


def silence_llama_cpp() -> None:
    """Route llama.cpp's log to a callback that keeps only error lines (for our one-line messages)."""
    import llama_cpp

    if _LOG["callback"] is not None:
        return

    def on_log(level: int, text: bytes, _user: object) -> None:
        if level == 4 and text:  # GGML_LOG_LEVEL_ERROR
            _LOG["errors"] = (_LOG["errors"] + [text.decode("utf-8", "replace").strip()])[-4:]

    _LOG["callback"] = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(_LOG["callback"], ctypes.c_void_p(0))


def quantize_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str], quant: str, *, threads: int = 0) -> Path:
    """Quantize a f16/f32 GGUF with llama.cpp's own quantizer (`llama_model_quantize`)."""
    quant = quant.lower()
    if quant not in LLM_QUANTS:
        raise ExportError(f"unknown LLM quantization {quant!r}: use one of {', '.join(LLM_QUANTS)}")
    import llama_cpp

    silence_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLM_QUANTS[quant]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if rc != 0 or not Path(dst).is_file():
        detail = "; ".join(_LOG["errors"]) or f"code {rc}"
        raise ExportError(f"llama.cpp failed to quantize {src} to {quant} ({detail}): check the GGUF loads in llama.cpp")
    return Path(dst)


# --------------------------------------------------------------------------------------------------------
# LoRA adapter


def write_lora_gguf(
    out_path: str | os.PathLike[str],
    lora_dir: str | os.PathLike[str],
    config: Any,
    *,
    name: str = "llasm-lora",
) -> Path:
    """Write a PEFT LoRA (adapter_config.json + adapter_model.safetensors) as a llama.cpp LoRA adapter GGUF.

    llama.cpp scales each pair by `alpha / rank` (rank read from the tensor shape). PEFT's scale per module
    (`lora_alpha / r`, or `/ sqrt(r)` with rsLoRA, with per-module patterns) is folded into `lora_b` where it
    differs, so the adapter equals the PEFT model at `lora_scale = 1`.
    """
    from safetensors.numpy import load_file

    lora_dir = Path(lora_dir)
    cfg_path = lora_dir / "adapter_config.json"
    weights = lora_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ExportError(f"{lora_dir} is not a PEFT LoRA directory (needs adapter_config.json and adapter_model.safetensors)")
    lcfg = json.loads(cfg_path.read_text())
    if lcfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{lora_dir} holds a {lcfg.get('peft_type')} adapter; only LoRA exports to GGUF")
    if lcfg.get("modules_to_save"):
        raise ExportError(
            f"the LoRA in {lora_dir} also trains whole modules ({lcfg['modules_to_save']}): export merged "
            f"weights instead (drop --lora-adapter)"
        )
    if lcfg.get("use_dora"):
        raise ExportError("DoRA adapters have no llama.cpp form: export merged weights instead (drop --lora-adapter)")
    hp = LlamaHParams.from_config(config)
    alpha = float(lcfg["lora_alpha"])
    r_default = int(lcfg["r"])
    rank_pattern = lcfg.get("rank_pattern") or {}
    alpha_pattern = lcfg.get("alpha_pattern") or {}
    rslora = bool(lcfg.get("use_rslora"))

    tensors = load_file(str(weights))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in tensors.items():
        if ".lora_A." in key or ".lora_B." in key:
            ab = "A" if ".lora_A." in key else "B"
            base = key.replace(f".lora_{ab}.weight", "").replace(f".lora_{ab}.default.weight", "")
            base = base.removeprefix("base_model.model.")
            pairs.setdefault(base, {})[ab] = arr.astype(np.float32)
        else:
            raise ExportError(f"unexpected tensor {key!r} in {weights}: only lora_A/lora_B pairs export to GGUF")
    tmap = gguf.get_tensor_name_map(hp.gguf_arch, hp.n_layer)
    w = gguf.GGUFWriter(str(out_path), hp.arch)  # llama.cpp refuses an adapter of another architecture
    try:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_name(name)
        for base, ab in sorted(pairs.items()):
            if "A" not in ab or "B" not in ab:
                raise ExportError(f"LoRA tensor pair for {base!r} is incomplete in {weights}")
            if base.endswith(("embed_tokens", "lm_head")):
                raise ExportError(f"the LoRA targets {base}; llama.cpp adapters cannot: export merged weights instead")
            new = tmap.get_name(base + ".weight", try_suffixes=(".weight",))
            if new is None:
                raise ExportError(f"LoRA target {base!r} has no llama.cpp tensor name")
            a, b = ab["A"], ab["B"]
            r = a.shape[0]
            suffix = base.rsplit(".", 1)[-1]
            r_peft = int(_pattern(rank_pattern, base, r_default))
            a_peft = float(_pattern(alpha_pattern, base, alpha))
            want = a_peft / (math.sqrt(r_peft) if rslora else r_peft)
            factor = want / (alpha / r)
            if abs(factor - 1.0) > 1e-7:
                b = b * np.float32(factor)
            if hp.permutes_qk and suffix == "q_proj":
                b = permute_rows(b, hp.n_head)
            elif hp.permutes_qk and suffix == "k_proj":
                b = permute_rows(b, hp.n_head_kv)
            stem = new.removesuffix(".weight") + ".weight"
            # float16, as llama.cpp's own LoRA converter writes them: half the bytes, and the rank-r factors
            # of a fine-tune lie well inside float16's range
            w.add_tensor(stem + ".lora_a", np.ascontiguousarray(a, dtype=np.float16))
            w.add_tensor(stem + ".lora_b", np.ascontiguousarray(b, dtype=np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return Path(out_path)


def _pattern(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank/alpha pattern lookup: a key matches when the module name ends with it."""
    for key, val in patterns.items():
        if module == key or module.endswith("." + key) or module.endswith(key):
            return val
    return default


# --------------------------------------------------------------------------------------------------------
# small readers


def _reader(path: str | os.PathLike[str]) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(str(path))
    except FileNotFoundError as e:
        raise ExportError(f"GGUF file {path} does not exist") from e
    except Exception as e:  # gguf raises ValueError/IndexError/struct errors on damaged files
        raise ExportError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}): re-create or re-download it") from e


def gguf_rope_freqs(path: str | os.PathLike[str]) -> np.ndarray | None:
    """A GGUF's `rope_freqs.weight` (Llama-3 rope factors, float32), or None. transformers' GGUF loader ignores
    this tensor, so an export that loaded its LLM from a GGUF passes it on to `write_llama_gguf`."""
    from llasm.assistant.bundle import BundleError, read_gguf_index

    try:
        _, tensors = read_gguf_index(path)
    except BundleError as e:
        raise ExportError(str(e)) from None
    info = tensors.get("rope_freqs.weight")
    if info is None:
        return None
    if info.ggml_type != gguf.GGMLQuantizationType.F32:
        raise ExportError(f"{path}: rope_freqs is not F32 (type {info.ggml_type}): re-convert the base model")
    return np.fromfile(path, dtype=np.float32, count=info.nbytes // 4, offset=info.offset)


def gguf_metadata(path: str | os.PathLike[str], keys: Iterable[str]) -> dict[str, Any]:
    """Selected key/values of a GGUF (strings, numbers, arrays as lists)."""
    reader = _reader(path)
    return {k: reader.fields[k].contents() for k in keys if k in reader.fields}
