"""Build Hugging Face models from the shipped offline weights.

- CTranslate2 Whisper directory -> transformers ``WhisperForConditionalGeneration`` + tokenizer, feature
  extractor and generation config (``model.bin`` read by assistant/ct2file.py).
- GGUF LLaMA / Qwen2 -> transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` + tokenizer with its chat
  template (Llama-3 rope scaling recovered from the GGUF's ``rope_freqs`` tensor).

Both are written once under ``<llasm cache>/hf/`` (a temp directory renamed into place) and reused:
a second call only checks a stamp file. ``base_models()`` materializes the defaults and returns their paths.

Parity with the engines the runtime uses is measured by ``python -m llasm.training.convert --parity``
(numbers in docs/converters.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llasm.assistant import basemodels
from llasm.assistant.basemodels import ModelResolutionError
from llasm.assistant.ct2file import Ct2Model, ModelFileError, read_ct2_model

if TYPE_CHECKING:  # heavy imports stay inside the functions that need them
    import torch

CONVERTER_VERSION = 1
STAMP = "llasm-convert.json"
DEFAULT_WHISPER = "default:whisper-base"
DEFAULT_LLM = "default:smollm2"


# a model could not be read or converted; the message names the problem and the fix
ConversionError = ModelFileError


# ------------------------------------------------------------------------------------------------------
# CT2 Whisper -> HF Whisper


def _whisper_sinusoids(length: int, channels: int) -> np.ndarray:
    log_timescale = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-log_timescale * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _read_special_ids(ct2_dir: Path) -> dict[str, int]:
    """Token -> id for the special tokens, from tokenizer.json's added tokens (else vocabulary.txt)."""
    tok = ct2_dir / "tokenizer.json"
    if tok.is_file():
        d = json.loads(tok.read_text(encoding="utf-8"))
        return {t["content"]: int(t["id"]) for t in d.get("added_tokens", [])}
    voc_json, voc_txt = ct2_dir / "vocabulary.json", ct2_dir / "vocabulary.txt"
    if voc_json.is_file() or voc_txt.is_file():
        if voc_json.is_file():
            tokens = json.loads(voc_json.read_text(encoding="utf-8"))
        else:
            tokens = voc_txt.read_text(encoding="utf-8").split("\n")
        return {t: i for i, t in enumerate(tokens) if t.startswith("<|") and t.endswith("|>")}
    raise ConversionError(
        f"{ct2_dir} has neither tokenizer.json nor vocabulary.txt: cannot build a Whisper tokenizer"
    )


def whisper_state_dict(ct2: Ct2Model) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Map CT2 Whisper variables to HF ``WhisperForConditionalGeneration`` names; also return shape facts."""
    if ct2.spec != "WhisperSpec":
        raise ConversionError(
            f"model.bin holds a {ct2.spec}, not a WhisperSpec: pass a CTranslate2 Whisper model"
        )
    w = ct2.weight
    sd: dict[str, np.ndarray] = {}
    conv1 = w("encoder/conv1/weight")
    d_model, n_mels = conv1.shape[0], conv1.shape[1]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = w(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/gamma")
        sd[f"{dst}.bias"] = w(f"{src}/beta")

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        """CT2 concatenates q, k, v (or k, v) row-wise; Whisper's k_proj has no bias (CT2 stores zeros)."""
        wt, b = w(f"{src}/weight"), w(f"{src}/bias")
        for name, wi, bi in zip(names, np.split(wt, len(names)), np.split(b, len(names)), strict=True):
            sd[f"{dst}.{name}.weight"] = wi
            if name != "k_proj":
                sd[f"{dst}.{name}.bias"] = bi
            elif np.abs(bi).max() > 0:
                raise ConversionError(f"{src}: the key bias is not zero, which Whisper cannot represent")

    for i in (1, 2):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    n_src = 1500
    if "encoder/position_encodings/encodings" in ct2.variables:
        pos = w("encoder/position_encodings/encodings")
        n_src = pos.shape[0]
    else:
        pos = _whisper_sinusoids(n_src, d_model)
    sd["model.encoder.embed_positions.weight"] = pos
    n_enc = ct2.count_layers("encoder")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        fused(f"{d}.self_attn", f"{s}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        linear(f"{d}.fc1", f"{s}/ffn/linear_0")
        linear(f"{d}.fc2", f"{s}/ffn/linear_1")
        norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    emb = w("decoder/embeddings/weight")
    sd["model.decoder.embed_tokens.weight"] = emb
    sd["model.decoder.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    n_dec = ct2.count_layers("decoder")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        fused(f"{d}.self_attn", f"{s}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        linear(f"{d}.encoder_attn.q_proj", f"{s}/attention/linear_0")
        fused(f"{d}.encoder_attn", f"{s}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{d}.encoder_attn.out_proj", f"{s}/attention/linear_2")
        norm(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        linear(f"{d}.fc1", f"{s}/ffn/linear_0")
        linear(f"{d}.fc2", f"{s}/ffn/linear_1")
        norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    proj = ct2.variables.get("decoder/projection/weight")
    tied = proj is None or proj is ct2.variables.get("decoder/embeddings/weight")
    if not tied:
        sd["proj_out.weight"] = w("decoder/projection/weight")
    facts = {
        "d_model": int(d_model),
        "num_mel_bins": int(n_mels),
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": ct2.scalar("encoder/num_heads", max(1, d_model // 64)),
        "decoder_attention_heads": ct2.scalar("decoder/num_heads", max(1, d_model // 64)),
        "encoder_ffn_dim": int(sd["model.encoder.layers.0.fc1.weight"].shape[0]) if n_enc else 4 * d_model,
        "decoder_ffn_dim": int(sd["model.decoder.layers.0.fc1.weight"].shape[0]) if n_dec else 4 * d_model,
        "vocab_size": int(emb.shape[0]),
        "max_source_positions": int(n_src),
        "max_target_positions": int(sd["model.decoder.embed_positions.weight"].shape[0]),
        "tie_word_embeddings": bool(tied),
    }
    return sd, facts


def _whisper_config_and_generation(ct2_dir: Path, facts: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import GenerationConfig, WhisperConfig

    cfg_path = ct2_dir / "config.json"
    ct2_cfg: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    special = _read_special_ids(ct2_dir)
    multilingual = facts["vocab_size"] >= 51865  # CTranslate2's own rule

    def tid(token: str) -> int:
        if token not in special:
            raise ConversionError(f"{ct2_dir}: special token {token} missing from the tokenizer files")
        return special[token]

    eot, sot = tid("<|endoftext|>"), tid("<|startoftranscript|>")
    config = WhisperConfig(
        **facts,
        activation_function="gelu",
        scale_embedding=False,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,  # these live in the generation config only
        suppress_tokens=None,
    )
    id_to_token = {i: t for t, i in special.items()}
    gen: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "begin_suppress_tokens": ct2_cfg.get("suppress_ids_begin", [220, eot]),
        "suppress_tokens": ct2_cfg.get("suppress_ids", []),
        "no_timestamps_token_id": tid("<|notimestamps|>"),
        "max_initial_timestamp_index": 50,
        "max_length": facts["max_target_positions"],
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if "<|startofprev|>" in special:
        gen["prev_sot_token_id"] = special["<|startofprev|>"]
    if ct2_cfg.get("alignment_heads"):
        gen["alignment_heads"] = ct2_cfg["alignment_heads"]
    if multilingual:
        gen["lang_to_id"] = {id_to_token[i]: i for i in ct2_cfg.get("lang_ids", []) if i in id_to_token}
        gen["task_to_id"] = {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")}
    return config, GenerationConfig(**gen)


def _save_whisper_tokenizer(ct2_dir: Path, out_dir: Path, n_mels: int) -> None:
    """Tokenizer + feature extractor (a WhisperProcessor) from the CT2 dir's tokenizer.json."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    src = ct2_dir / "tokenizer.json"
    if not src.is_file():
        raise ConversionError(
            f"{ct2_dir} has no tokenizer.json: copy the tokenizer.json of the matching openai/whisper model there"
        )
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(src, Path(tmp) / "tokenizer.json")
        (Path(tmp) / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "WhisperTokenizer", "model_max_length": 1024})
        )
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    features = WhisperFeatureExtractor(feature_size=n_mels)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out_dir)


def ct2_whisper_to_hf(ct2_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers Whisper directory (float32 safetensors)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if not (ct2_dir / "model.bin").is_file():
        raise ConversionError(f"{ct2_dir} has no model.bin: pass a CTranslate2 Whisper model directory")
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    sd, facts = whisper_state_dict(ct2)
    config, generation = _whisper_config_and_generation(ct2_dir, facts)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    if facts["tie_word_embeddings"]:
        tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if unexpected or missing:
        raise ConversionError(
            f"CT2 -> HF Whisper mapping mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.tie_weights()
    model.generation_config = generation
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    _save_whisper_tokenizer(ct2_dir, out_dir, facts["num_mel_bins"])
    return out_dir


def whisper_encode(encoder: Any, input_features: torch.Tensor) -> torch.Tensor:
    """Run a HF ``WhisperEncoder`` on mel features of any length ``T <= 2 * max_source_positions``.

    Same computation as ``WhisperEncoder.forward`` except that the positional table is sliced to the real
    length (``T/2`` states), as CTranslate2 and Ultravox do, instead of demanding 3000 frames.
    """
    import torch.nn.functional as F

    x = F.gelu(encoder.conv1(input_features))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    n = x.shape[1]
    if n > encoder.embed_positions.num_embeddings:
        raise ValueError(f"{input_features.shape[-1]} mel frames exceed the encoder's 30 s window")
    x = x + encoder.embed_positions.weight[:n]
    for layer in encoder.layers:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)


# ------------------------------------------------------------------------------------------------------
# GGUF -> HF LLaMA


def _gguf_header(gguf_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scalar/string metadata and the tensor table of a GGUF (the runtime's header reader: milliseconds, where
    gguf-py's reader parses every tokenizer array)."""
    from llasm.assistant.bundle import BundleError, read_gguf_index

    try:
        return read_gguf_index(gguf_path)
    except BundleError as e:
        raise ConversionError(str(e)) from None


def _gguf_chat_template(gguf_path: Path) -> str | None:
    template = _gguf_header(gguf_path)[0].get("tokenizer.chat_template")
    return template if isinstance(template, str) else None


GGUF_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
"""GGUF architecture -> the transformers class ``gguf_to_hf`` builds (the ones the export writes back)."""


def llama3_rope_from_factors(factors: np.ndarray, theta: float, head_dim: int,
                             n_ctx: int = 8192) -> dict[str, Any] | None:
    """Llama-3 ``rope_parameters`` that reproduce llama.cpp's ``rope_freqs`` tensor (per-frequency divisors).

    The GGUF keeps only the factors, not ``factor``/``low_freq_factor``/``high_freq_factor``/
    ``original_max_position_embeddings``; only the wavelength band edges ``L/low`` and ``L/high`` matter, so
    ``L`` is llama.cpp's default 8192 (or the model's context ``n_ctx`` when shorter) and the edges are fitted
    to the smoothed band. The result is checked against the tensor. None when every factor is 1."""
    f = np.asarray(factors, dtype=np.float64).reshape(-1)
    inv = 1.0 / (float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if f.shape != inv.shape:
        raise ConversionError(f"rope_freqs has {f.size} factors but the heads have {inv.size} rotary frequencies")
    if np.allclose(f, 1.0, rtol=0, atol=1e-6):
        return None
    x = inv / (2 * math.pi)  # 1 / wavelength
    big = float(f.max())
    ones, flat = np.isclose(f, 1.0, rtol=1e-5), np.isclose(f, big, rtol=1e-5)
    mid = ~(ones | flat)
    s = (1.0 / f - 1.0 / big) / (1.0 - 1.0 / big)  # 0 on the plateau, 1 where unscaled
    x_floor = float(x[flat].max()) if flat.any() else 0.0
    x_ceil = float(x[ones].min()) if ones.any() else float(x.max()) * 2
    if mid.sum() >= 2:
        slope, x_lo = np.polyfit(s[mid], x[mid], 1)
        x_hi = x_lo + slope
    elif mid.sum() == 1:
        x1, s1 = float(x[mid][0]), float(s[mid][0])
        x_lo = x_floor
        x_hi = x_lo + (x1 - x_lo) / s1
        if x_hi > x_ceil:
            x_hi = x_ceil
            x_lo = (x1 - s1 * x_hi) / (1 - s1)
    else:
        x_lo, x_hi = x_floor, x_ceil
    ctx = min(8192, int(n_ctx))
    rope = {"rope_type": "llama3", "rope_theta": float(theta), "factor": round(big, 6),
            "low_freq_factor": round(float(x_lo) * ctx, 6), "high_freq_factor": round(float(x_hi) * ctx, 6),
            "original_max_position_embeddings": ctx}
    wavelen = 2 * math.pi / inv
    lo_w, hi_w = ctx / rope["low_freq_factor"], ctx / rope["high_freq_factor"]
    smooth = (ctx / wavelen - rope["low_freq_factor"]) / (rope["high_freq_factor"] - rope["low_freq_factor"])
    again = np.where(wavelen < hi_w, 1.0, np.where(wavelen > lo_w, big, 1 / ((1 - smooth) / big + smooth)))
    if not np.allclose(again, f, rtol=1e-4, atol=0):
        raise ConversionError(
            f"rope_freqs {np.round(f, 4).tolist()} is not Llama-3 rope scaling: transformers cannot represent it"
        )
    return rope


def _gguf_rope_freqs(gguf_path: Path, tensors: dict[str, Any]) -> np.ndarray | None:
    info = tensors.get("rope_freqs.weight")
    if info is None:
        return None
    from gguf import GGMLQuantizationType

    if info.ggml_type != GGMLQuantizationType.F32:
        kind = GGMLQuantizationType(info.ggml_type).name
        raise ConversionError(f"{gguf_path.name}: rope_freqs is {kind}, not F32: re-convert the model")
    return np.fromfile(gguf_path, dtype=np.float32, count=info.nbytes // 4, offset=info.offset)


def gguf_llama3_rope(gguf_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The Llama-3 ``rope_parameters`` of a llama GGUF with a ``rope_freqs`` tensor (None otherwise), for
    loading it with transformers, whose GGUF loader drops them."""
    gguf_path = Path(gguf_path)
    meta, tensors = _gguf_header(gguf_path)
    if meta.get("general.architecture") != "llama":
        return None
    factors = _gguf_rope_freqs(gguf_path, tensors)
    if factors is None:
        return None
    n_head = int(meta["llama.attention.head_count"])
    head_dim = int(meta.get("llama.rope.dimension_count") or int(meta["llama.embedding_length"]) // n_head)
    theta = float(meta.get("llama.rope.freq_base") or 10000.0)
    return llama3_rope_from_factors(factors, theta, head_dim, int(meta.get("llama.context_length") or 8192))


def gguf_to_hf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Dequantize a LLaMA- or Qwen2-architecture GGUF into a float32 ``LlamaForCausalLM`` /
    ``Qwen2ForCausalLM`` + tokenizer directory.

    transformers' GGUF loader reads the hparams (tied embeddings: no ``output`` tensor) and undoes llama's
    q/k row permutation; it ignores ``rope_freqs``, so Llama-3 rope scaling is recovered here
    (:func:`llama3_rope_from_factors`) and written into the config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ConversionError(f"{gguf_path} is not a file: pass a .gguf model file")
    with open(gguf_path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ConversionError(f"{gguf_path} is not a GGUF file: pass a .gguf model file")
    supported = ", ".join(f"{a} ({c})" for a, c in GGUF_ARCHS.items())
    meta, tensors = _gguf_header(gguf_path)
    arch = meta.get("general.architecture")
    if arch is None:
        raise ConversionError(f"{gguf_path.name} has no general.architecture: it is not a llama.cpp model GGUF")
    if arch not in GGUF_ARCHS:
        raise ConversionError(f"{gguf_path.name} is a {arch!r} GGUF; training handles {supported}: pass one of those")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"transformers cannot load {gguf_path.name} ({first}): pass a GGUF of {supported}"
        ) from None
    if type(model).__name__ != GGUF_ARCHS[arch]:
        raise ConversionError(f"{gguf_path.name} loads as {type(model).__name__}, not {GGUF_ARCHS[arch]}")
    if not getattr(tokenizer, "chat_template", None):
        template = _gguf_chat_template(gguf_path)
        if template is None:
            raise ConversionError(
                f"{gguf_path.name} carries no tokenizer.chat_template: pass an instruct GGUF"
            )
        tokenizer.chat_template = template
    # The GGUF loader marks the model as "quantized with gguf" although its weights are now plain float32
    # tensors; rebuild a plain model around them so that save_pretrained writes ordinary safetensors.
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    rope = gguf_llama3_rope(gguf_path)
    if rope is not None:
        cfg["rope_parameters"] = rope
    config = type(model.config).from_dict(cfg)
    with torch.device("meta"):
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    model = plain.eval()
    model.generation_config.do_sample = False
    model.generation_config.temperature = None
    model.generation_config.top_p = None
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------------------
# cached conversion


def hf_cache_dir() -> Path:
    return basemodels.cache_dir() / "hf"


def _cache_name(kind: str, ref: str, source: Path) -> str:
    """``whisper-base`` / ``smollm2`` for defaults; ``<kind>-<stem>-<hash of path, size, mtime>`` for paths."""
    if basemodels.is_default_ref(ref):
        return ref.removeprefix(basemodels.DEFAULT_PREFIX)
    st = source.stat()
    key = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{kind}-{source.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _cached(kind: str, ref: str, source: Path, build: Callable[[Path, Path], Path], force: bool) -> Path:
    target = hf_cache_dir() / _cache_name(kind, ref, source)
    stamp = target / STAMP
    if not force and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("converter_version") == CONVERTER_VERSION:
                return target
        except (OSError, ValueError):
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        with _status(f"converting {ref} -> {target}"):
            try:
                build(source, tmp)
            except ImportError as e:
                raise ConversionError(
                    f"converting {ref} needs {e.name or 'torch and transformers'}: pip install -e '.[train]'"
                ) from None
        (tmp / STAMP).write_text(
            json.dumps({"converter_version": CONVERTER_VERSION, "ref": ref, "source": str(source)}, indent=1)
        )
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _status:
    """A rich spinner on stderr while something slow runs (silent when stderr is not a terminal)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ctx: Any = None

    def __enter__(self) -> _status:
        if sys.stderr.isatty():
            from rich.console import Console

            self._ctx = Console(stderr=True).status(self.text)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def whisper_hf(ref: str = DEFAULT_WHISPER, *, force: bool = False) -> Path:
    """HF Whisper directory for a CT2 Whisper reference (``default:...`` or a path), converted once."""
    ct2_dir = basemodels.resolve(ref)
    if not ct2_dir.is_dir():
        raise ConversionError(f"{ct2_dir} is not a directory: pass a CTranslate2 Whisper model directory")
    return _cached("whisper", str(ref), ct2_dir, ct2_whisper_to_hf, force)


def llama_hf(ref: str = DEFAULT_LLM, *, force: bool = False) -> Path:
    """HF LLaMA directory for a GGUF reference (``default:smollm2`` or a path), converted once."""
    gguf_path = basemodels.resolve(ref)
    return _cached("llama", str(ref), gguf_path, gguf_to_hf, force)


def base_models(whisper: str = DEFAULT_WHISPER, llm: str = DEFAULT_LLM) -> dict[str, str]:
    """Materialize the default base models; returns
    ``{"whisper_hf": DIR, "whisper_ct2": DIR, "llm_hf": DIR, "llm_gguf": FILE}`` (absolute paths)."""
    return {
        "whisper_hf": str(whisper_hf(whisper)),
        "whisper_ct2": str(basemodels.resolve(whisper)),
        "llm_hf": str(llama_hf(llm)),
        "llm_gguf": str(basemodels.resolve(llm)),
    }


# ------------------------------------------------------------------------------------------------------
# parity with the runtime engines (python -m llasm.training.convert --parity)

PARITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please set a timer for ten minutes.",
    "What is the weather like in Paris today?",
)
PARITY_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "How many legs does a spider have?",
)
ENCODER_TOLERANCE = 2e-3  # max |HF - CT2 float32| on encoder states (whose values reach about 25)


def speak(text: str, out_wav: str | os.PathLike[str], voice: str = "en-us") -> np.ndarray:
    """Synthesize ``text`` with espeak-ng into ``out_wav``; return it as 16 kHz mono float32."""
    import subprocess

    from llasm.assistant.audio import load_audio

    if shutil.which("espeak-ng") is None:
        raise ConversionError("espeak-ng is not installed: apt-get install espeak-ng")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(out_wav), "--", text], check=True, capture_output=True
    )
    return load_audio(out_wav)


def whisper_parity(
    ref: str = DEFAULT_WHISPER, sentences: tuple[str, ...] = PARITY_SENTENCES
) -> dict[str, Any]:
    """Converted HF Whisper vs ``ctranslate2.models.Whisper`` (float32) on espeak-ng clips.

    Encoder: HF's own forward on the 3000-frame (30 s padded) mel, and :func:`whisper_encode` on the real
    length (positional table sliced) against CT2 ``encode`` on the same frames. Decoder: greedy ``generate``
    of both (``<|en|><|transcribe|><|notimestamps|>`` where multilingual), compared as token ids and text.
    """
    import ctranslate2
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    hf_dir, ct2_dir = whisper_hf(ref), basemodels.resolve(ref)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    processor = WhisperProcessor.from_pretrained(hf_dir)
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    tok = processor.tokenizer
    gen = model.generation_config
    prefix = (
        ["<|startoftranscript|>"]
        + (["<|en|>", "<|transcribe|>"] if gen.is_multilingual else [])
        + ["<|notimestamps|>"]
    )
    prompt_ids = tok.convert_tokens_to_ids(prefix)
    clips = []
    padded_diff, sliced_diff, state_max = 0.0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, text in enumerate(sentences):
            audio = speak(text, Path(tmp) / f"clip{k}.wav")
            mel = fe(audio, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
            n = min(mel.shape[-1], 2 * (len(audio) // 320 + 1))  # real length in frames, even
            short = np.ascontiguousarray(mel[:, :, :n])
            with torch.no_grad():
                hf_full = model.model.encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
                hf_short = whisper_encode(model.model.encoder, torch.from_numpy(short)).numpy()
                kwargs = {"language": "en", "task": "transcribe"} if gen.is_multilingual else {}
                from transformers.modeling_outputs import BaseModelOutput

                hf_ids = model.generate(
                    input_features=torch.from_numpy(mel),
                    encoder_outputs=BaseModelOutput(last_hidden_state=torch.from_numpy(hf_full)),
                    do_sample=False,
                    num_beams=1,
                    **kwargs,
                )[0].tolist()
            ct_full = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel)))
            ct_short = np.array(ct2.encode(ctranslate2.StorageView.from_array(short)))
            res = ct2.generate(ctranslate2.StorageView.from_array(mel), [prompt_ids], beam_size=1)
            ct_ids = list(res[0].sequences_ids[0])
            hf_ids = [t for t in hf_ids if t not in prompt_ids and t != gen.eos_token_id]
            padded_diff = max(padded_diff, float(np.abs(hf_full - ct_full).max()))
            sliced_diff = max(sliced_diff, float(np.abs(hf_short - ct_short).max()))
            state_max = max(state_max, float(np.abs(ct_full).max()))
            hf_text = tok.decode(hf_ids, skip_special_tokens=True).strip()
            ct_text = tok.decode(ct_ids, skip_special_tokens=True).strip()
            clips.append(
                {
                    "spoken": text,
                    "frames": int(n),
                    "hf": hf_text,
                    "ct2": ct_text,
                    "same_tokens": hf_ids == ct_ids,
                }
            )
    return {
        "ref": ref,
        "encoder_max_abs_diff_padded_3000": padded_diff,
        "encoder_max_abs_diff_real_length": sliced_diff,
        "encoder_state_max_abs": state_max,
        "tolerance": ENCODER_TOLERANCE,
        "clips": clips,
    }


def llama_parity(
    ref: str = DEFAULT_LLM, prompts: tuple[str, ...] = PARITY_PROMPTS, n_tokens: int = 32
) -> dict[str, Any]:
    """Converted HF LLaMA vs llama.cpp on the same GGUF: greedy continuations of chat prompts.

    Both start from the same token ids (the chat template rendered by the HF tokenizer and tokenized by
    llama.cpp with ``special=True``; the HF tokenization is compared too). For each prompt: whether the
    greedy tokens are equal, the first divergence, and, teacher-forced along llama.cpp's sequence, the
    fraction of steps where HF's argmax equals llama.cpp's token, the max |logit| difference, and llama.cpp's
    own margin between its pick and HF's pick at the first divergence (a near tie explains a divergence).
    """
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir, gguf_path = llama_hf(ref), basemodels.resolve(ref)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    llm = Llama(
        str(gguf_path),
        n_ctx=512,
        n_threads=1,  # deterministic and immune to spin-waiting on a busy machine
        logits_all=True,
        verbose=False,
    )
    eos = {llm.token_eos(), tok.eos_token_id}
    rows = []
    for prompt in prompts:
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        hf_prompt_ids = tok(text, add_special_tokens=False).input_ids
        ll: list[int] = []
        llm.reset()
        for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            if t in eos or len(ll) >= n_tokens:
                break
            ll.append(int(t))
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=n_tokens,
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=tok.eos_token_id,
            )[0, len(ids) :].tolist()
        hf = [int(t) for t in out if t not in eos]
        first = next((i for i, (a, b) in enumerate(zip(hf, ll, strict=False)) if a != b), None)
        if first is None and len(hf) != len(ll):
            first = min(len(hf), len(ll))
        # teacher forcing along llama.cpp's continuation
        seq = ids + ll
        llm.reset()
        llm.eval(seq)
        ll_logits = np.array(llm.scores[: len(seq)], dtype=np.float32)[len(ids) - 1 : len(seq) - 1]
        with torch.no_grad():
            hf_logits = model(torch.tensor([seq])).logits[0, len(ids) - 1 : len(seq) - 1].numpy()
        agree = float((hf_logits.argmax(-1) == np.array(ll)).mean()) if ll else 1.0
        margin = None
        if first is not None and first < len(ll) and first < len(hf):
            margin = float(ll_logits[first, ll[first]] - ll_logits[first, hf[first]])
        rows.append(
            {
                "prompt": prompt,
                "same_prompt_tokens": hf_prompt_ids == ids,
                "equal": hf == ll,
                "first_divergence": first,
                "n_hf": len(hf),
                "n_llama_cpp": len(ll),
                "teacher_forced_top1_agreement": agree,
                "max_abs_logit_diff": float(np.abs(hf_logits - ll_logits).max()) if ll else 0.0,
                "llama_cpp_margin_at_divergence": margin,
                "hf_text": tok.decode(hf),
                "llama_cpp_text": tok.decode(ll),
            }
        )
    return {"ref": ref, "gguf": str(gguf_path), "n_tokens": n_tokens, "prompts": rows}


_GGUF_TO_HF = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def llama_weight_parity(ref: str = DEFAULT_LLM, blocks: int | None = None) -> dict[str, Any]:
    """Max |HF weight - gguf-py dequantization of the GGUF tensor| over the first ``blocks`` blocks
    (all when None) plus the embedding and final norm. q/k rows are compared in llama.cpp's RoPE layout.
    Zero means the converter is exact and any logit gap comes from llama.cpp's own arithmetic."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    hf_dir, gguf_path = llama_hf(ref), basemodels.resolve(ref)
    reader = GGUFReader(str(gguf_path))

    def field(name: str) -> int:
        f = reader.fields[name]
        return int(f.parts[f.data[0]][0])

    n_head, n_kv = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    hf = {}
    for shard in sorted(Path(hf_dir).glob("*.safetensors")):
        hf.update(load_file(shard))
    worst, compared, types = 0.0, 0, set()
    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk":
            if blocks is not None and int(parts[1]) >= blocks:
                continue
            name = f"model.layers.{parts[1]}.{_GGUF_TO_HF[parts[2]]}.{parts[3]}"
        else:
            name = f"{_GGUF_TO_HF[parts[0]]}.{parts[1]}"
        if name not in hf:
            continue  # e.g. a tied lm_head saved once
        w = hf[name].astype(np.float32)
        if parts[-2] in ("attn_q", "attn_k"):  # llama.cpp's RoPE row permutation
            heads = n_head if parts[-2] == "attn_q" else n_kv
            w = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        g = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(w.shape)
        worst = max(worst, float(np.abs(w - g).max()))
        compared += 1
        types.add(t.tensor_type.name)
    return {"tensors_compared": compared, "max_abs_diff": worst, "gguf_types": sorted(types)}


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    w = report["whisper"]
    a.bar(
        ["padded 3000", "real length"],
        [w["encoder_max_abs_diff_padded_3000"], w["encoder_max_abs_diff_real_length"]],
    )
    a.axhline(w["tolerance"], color="r", ls="--", label=f"tolerance {w['tolerance']:g}")
    a.set_title("Whisper encoder: max |HF - CT2 fp32|")
    a.legend()
    rows = report["llama"]["prompts"]
    x = np.arange(len(rows))
    b.bar(x - 0.2, [r["teacher_forced_top1_agreement"] for r in rows], 0.4, label="top-1 agreement")
    b.bar(
        x + 0.2,
        [
            (r["first_divergence"] if r["first_divergence"] is not None else r["n_llama_cpp"])
            / max(1, report["llama"]["n_tokens"])
            for r in rows
        ],
        0.4,
        label="equal prefix / n_tokens",
    )
    b.set_xticks(x, [r["prompt"][:18] for r in rows], rotation=20, fontsize=7)
    b.set_ylim(0, 1.05)
    b.set_title("SmolLM2: HF (dequantized) vs llama.cpp (Q4_1)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m llasm.training.convert", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--parity", action="store_true", help="measure converter parity with CTranslate2 / llama.cpp"
    )
    ap.add_argument("--whisper", default=DEFAULT_WHISPER)
    ap.add_argument("--llm", default=DEFAULT_LLM)
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (LLaMA parity)")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--plot", type=Path, help="write a PNG summary here")
    args = ap.parse_args(argv)
    try:
        if not args.parity:
            print(json.dumps(base_models(args.whisper, args.llm)))
            return 0
        report = {
            "whisper": whisper_parity(args.whisper),
            "llama": llama_parity(args.llm, n_tokens=args.tokens),
            "llama_weights": llama_weight_parity(args.llm),
        }
    except (ModelResolutionError, ConversionError) as e:
        print(f"training.convert: {e}", file=sys.stderr)
        return 1
    w = report["whisper"]
    print(
        f"Whisper encoder max |HF-CT2| padded-3000 {w['encoder_max_abs_diff_padded_3000']:.2e}, "
        f"real-length {w['encoder_max_abs_diff_real_length']:.2e} (states up to {w['encoder_state_max_abs']:.1f}; "
        f"tolerance {w['tolerance']:g})"
    )
    for c in w["clips"]:
        print(f"  same tokens={c['same_tokens']}  HF={c['hf']!r}  CT2={c['ct2']!r}")
    lw = report["llama_weights"]
    print(
        f"LLaMA weights: {lw['tensors_compared']} tensors ({', '.join(lw['gguf_types'])}) max |HF - dequant(GGUF)| "
        f"= {lw['max_abs_diff']:.3g}"
    )
    for r in report["llama"]["prompts"]:
        print(
            f"LLaMA {r['prompt']!r}: equal={r['equal']} first_divergence={r['first_divergence']} "
            f"top1={r['teacher_forced_top1_agreement']:.2f} max|dlogit|={r['max_abs_logit_diff']:.2f} "
            f"margin={r['llama_cpp_margin_at_divergence']}"
        )
        print(f"    HF: {r['hf_text']!r}\n    ll: {r['llama_cpp_text']!r}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if args.plot:
        _plot(report, args.plot)
    return 0


__all__ = [
    "ConversionError",
    "ModelResolutionError",
    "base_models",
    "ct2_whisper_to_hf",
    "gguf_to_hf",
    "llama_hf",
    "read_ct2_model",
    "whisper_encode",
    "whisper_hf",
]


if __name__ == "__main__":
    sys.exit(main())
