"""LLaMA -> GGUF (model and LoRA adapter) round trips through llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from assistant.basemodels import resolve  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.gguf_llm import (  # noqa: E402
    gguf_metadata,
    permute_rows,
    quantize_gguf,
    tokenizer_from_gguf,
    write_llama_gguf,
    write_lora_gguf,
)

IDS = [1, 504, 3458, 314, 253, 1232, 30, 2, 905, 28]


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    return resolve("default:smollm2")


@pytest.fixture(scope="module")
def smol_tok(base_gguf: Path):
    return tokenizer_from_gguf(base_gguf)


def tiny_llama(seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=tie)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def llama_logits(path: Path, ids: list[int], **kw) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, **kw)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)])
    llm.close()
    return out


def torch_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def test_permute_matches_llama_cpp_layout() -> None:
    # 2 heads of head_dim 4: rows [h0: a0 a1 b0 b1 | h1: ...] -> [a0 b0 a1 b1 | ...]
    w = np.arange(8)
    assert permute_rows(w, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(ExportError):
        permute_rows(np.arange(6), 2)


def test_tiny_llama_f32_logits_match_torch(tmp_path: Path, smol_tok) -> None:
    m = tiny_llama(tie=False)  # an untied output.weight (tied models are covered below and in the bundle tests)
    out = write_llama_gguf(tmp_path / "m.gguf", m.state_dict(), m.config, smol_tok, dtype="f32")
    meta = gguf_metadata(out, ["llama.attention.head_count_kv", "tokenizer.ggml.pre", "general.type"])
    assert meta == {"llama.attention.head_count_kv": 2, "tokenizer.ggml.pre": "smollm", "general.type": "model"}
    lc, lt = llama_logits(out, IDS), torch_logits(m, IDS)
    assert np.abs(lc - lt).max() < 5e-3 * np.abs(lt).max()


def test_tiny_llama_quantized_close_to_torch(tmp_path: Path, smol_tok) -> None:
    m = tiny_llama()
    f16 = write_llama_gguf(tmp_path / "m16.gguf", m.state_dict(), m.config, smol_tok, dtype="f16")
    q8 = quantize_gguf(f16, tmp_path / "m8.gguf", "q8_0")
    assert q8.stat().st_size < 0.75 * f16.stat().st_size  # tensors shrink; ~3 MB of tokenizer metadata stays
    assert gguf_metadata(q8, ["general.file_type"]) == {"general.file_type": 7}
    lt = torch_logits(m, IDS)
    for path in (f16, q8):
        lc = llama_logits(path, IDS)
        corr = np.corrcoef(lc.ravel(), lt.ravel())[0, 1]
        assert corr > 0.999, (path.name, corr)
    with pytest.raises(ExportError, match="unknown LLM quantization"):
        quantize_gguf(f16, tmp_path / "x.gguf", "q3_banana")


def test_vocab_mismatch_is_a_clear_error(tmp_path: Path, smol_tok) -> None:
    m = tiny_llama()
    m.config.vocab_size = 1000
    with pytest.raises(ExportError, match="embedding rows"):
        write_llama_gguf(tmp_path / "m.gguf", m.state_dict(), m.config, smol_tok)


def _peft_lora(model, seed: int = 1, **cfg_kw):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                     lora_dropout=0.0, **cfg_kw)
    pm = get_peft_model(model, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    return pm.eval()


def test_lora_adapter_over_base_equals_merged(tmp_path: Path, smol_tok) -> None:
    """rsLoRA: PEFT's scale alpha/sqrt(r) differs from llama.cpp's alpha/r and is folded into lora_b (plain
    LoRA is covered by the bundle tests)."""
    base = tiny_llama(seed=3)
    base_path = write_llama_gguf(tmp_path / "base.gguf", base.state_dict(), base.config, smol_tok, dtype="f32")
    pm = _peft_lora(base, use_rslora=True)
    pm.save_pretrained(tmp_path / "lora")
    lora_path = write_lora_gguf(tmp_path / "lora.gguf", tmp_path / "lora", base.config)
    meta = gguf_metadata(lora_path, ["general.type", "adapter.type", "adapter.lora.alpha"])
    assert meta == {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 8.0}
    lt = torch_logits(pm, IDS)  # PEFT forward (unmerged)
    merged = pm.merge_and_unload()
    merged_path = write_llama_gguf(tmp_path / "merged.gguf", merged.state_dict(), merged.config, smol_tok, dtype="f32")
    with_lora = llama_logits(base_path, IDS, lora_path=str(lora_path))
    plain = llama_logits(base_path, IDS)
    lm = llama_logits(merged_path, IDS)
    scale = np.abs(lt).max()
    assert np.abs(plain - lt).max() > 0.05 * scale  # the adapter matters
    assert np.abs(with_lora - lt).max() < 5e-3 * scale
    assert np.abs(with_lora - lm).max() < 5e-3 * scale


def test_lora_with_modules_to_save_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "lora"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                      "modules_to_save": ["embed_tokens"]}))
    (d / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ExportError, match="merged"):
        write_lora_gguf(tmp_path / "x.gguf", d, tiny_llama().config)


@pytest.mark.real
def test_smollm2_to_gguf_greedy_matches_torch(tmp_path: Path, base_gguf: Path, smol_tok) -> None:
    from transformers import AutoTokenizer

    m = LlamaForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name,
                                         torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name)
    out = write_llama_gguf(tmp_path / "smol.gguf", m.state_dict(), m.config, smol_tok, dtype="f16")
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        gen = m.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0][len(ids):].tolist()
    llm = llama_cpp.Llama(str(out), n_ctx=256, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    got = []
    for t in llm.generate(ids, temp=0.0, top_k=1):
        got.append(t)
        if len(got) == len(gen):
            break
    assert tok.decode(got) == tok.decode(gen)
    assert "Paris" in tok.decode(got)
