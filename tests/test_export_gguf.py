"""LLaMA / Llama-3 / Qwen2 -> GGUF (model and LoRA adapter) round trips through llama.cpp.

Every architecture the writer supports (`export.testing.TINY_ARCHS`) passes the same parity tests: f32, f16
and q8_0 logits and greedy continuations equal transformers' within the dtype's tolerance, and feeding the
token-embedding rows equals feeding the token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")

from llasm.assistant.basemodels import resolve  # noqa: E402
from llasm.export.errors import ExportError  # noqa: E402
from llasm.export.gguf_llm import (  # noqa: E402
    LlamaHParams,
    TokenizerMetadata,
    permute_rows,
    quantize_gguf,
    tokenizer_from_gguf,
    write_llama_gguf,
    write_lora_gguf,
)
from llasm.export.testing import TINY_ARCHS, make_tiny_llm, tiny_llm_config  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

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


def llama_logits(path: Path, ids: list[int], n_ctx: int = 64, **kw) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, **kw)
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


# ---- every supported architecture: the same parity tests ---------------------------------------------

# rel: max |llama.cpp - torch| over all logits / max |torch logit|; corr: correlation of all logits
TOLERANCE = {"f32": {"rel": 2e-3, "corr": 0.99999}, "f16": {"rel": 4e-3, "corr": 0.9999},
             "q8_0": {"rel": 5e-2, "corr": 0.999}}
LONG_IDS = [1] + np.random.default_rng(0).integers(3, 49152, 59).tolist()  # 60 positions: rope scaling matters
PROMPT, N_GREEDY = LONG_IDS[:20], 12


def tokenizer_for(arch: str, smol_tok: TokenizerMetadata) -> TokenizerMetadata:
    """SmolLM2's tokenizer; for qwen2 with Qwen2's pre-tokenizer name, as an export from a Qwen2 tokenizer
    (its probe hash, export._tokpre) or a Qwen2 base GGUF writes it."""
    if not arch.startswith("qwen2"):
        return smol_tok
    fields = [(k, "qwen2" if k == "tokenizer.ggml.pre" else v, t, st) for k, v, t, st in smol_tok.fields]
    return TokenizerMetadata(fields=fields, n_vocab=smol_tok.n_vocab, source=smol_tok.source + " (pre qwen2)")


@pytest.fixture(scope="module", params=list(TINY_ARCHS))
def exported(request, tmp_path_factory, smol_tok) -> dict:
    """A tiny random model of one architecture, written as f32 and f16 GGUF and quantized to q8_0."""
    arch = request.param
    d = tmp_path_factory.mktemp(arch)
    m = make_tiny_llm(arch)
    tok = tokenizer_for(arch, smol_tok)
    f32 = write_llama_gguf(d / "f32.gguf", m.state_dict(), m.config, tok, dtype="f32")
    f16 = write_llama_gguf(d / "f16.gguf", m.state_dict(), m.config, tok, dtype="f16")
    q8 = quantize_gguf(f16, d / "q8_0.gguf", "q8_0")
    return {"arch": arch, "model": m, "tok": tok, "dir": d, "f32": f32, "f16": f16, "q8_0": q8}


def _gguf_index(path: Path) -> tuple[dict, set[str]]:
    """Scalar metadata and tensor names (the runtime's header reader: gguf-py's parses the 49152-token arrays
    for seconds)."""
    from llasm.assistant.bundle import read_gguf_index

    meta, tensors = read_gguf_index(path)
    return meta, set(tensors)


def test_arch_metadata_and_tensors(exported) -> None:
    arch, m = exported["arch"], exported["model"]
    gguf_arch = "qwen2" if arch.startswith("qwen2") else "llama"
    meta, names = _gguf_index(exported["f32"])
    assert meta["general.architecture"] == gguf_arch and meta["general.type"] == "model"
    assert meta[f"{gguf_arch}.attention.head_count_kv"] == 2
    assert meta["tokenizer.ggml.pre"] == ("qwen2" if gguf_arch == "qwen2" else "smollm")
    assert meta[f"{gguf_arch}.rope.freq_base"] == pytest.approx(100.0 if arch == "llama3-rope" else 10000.0)
    # llama.cpp's LlamaModel writes vocab_size and rope.dimension_count; its Qwen2Model does not
    assert (f"{gguf_arch}.vocab_size" in meta) == (gguf_arch == "llama")
    q8, f16 = exported["q8_0"], exported["f16"]
    assert q8.stat().st_size < 0.75 * f16.stat().st_size  # tensors shrink; ~3 MB of tokenizer metadata stays
    assert _gguf_index(q8)[0]["general.file_type"] == 7
    with pytest.raises(ExportError, match="unknown LLM quantization"):
        quantize_gguf(f16, exported["dir"] / "x.gguf", "q3_banana")
    assert ("output.weight" in names) == (not m.config.tie_word_embeddings)
    assert ("rope_freqs.weight" in names) == (arch == "llama3-rope")
    assert ({"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= names) == (gguf_arch == "qwen2")
    assert "blk.1.ffn_down.weight" in names and "token_embd.weight" in names and "output_norm.weight" in names


def _llama_cpp_greedy(path: Path, prompt: list[int], n: int) -> list[int]:
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, verbose=False)
    out = []
    for t in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(int(t))
        if len(out) == n:
            break
    llm.close()
    return out


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_arch_logits_and_greedy_match_torch(exported, dtype: str) -> None:
    m, path, tol = exported["model"], exported[dtype], TOLERANCE[dtype]
    lt = torch_logits(m, LONG_IDS)
    lc = llama_logits(path, LONG_IDS, n_ctx=128, n_threads=2)
    scale = np.abs(lt).max()
    rel = np.abs(lc - lt).max() / scale
    corr = np.corrcoef(lc.ravel(), lt.ravel())[0, 1]
    assert rel < tol["rel"] and corr > tol["corr"], (exported["arch"], dtype, rel, corr)
    # greedy: llama.cpp's continuation, teacher-forced through torch, picks at each step a token whose torch
    # logit is within the tolerance of torch's best (random weights have near ties that any rounding flips)
    got = _llama_cpp_greedy(path, PROMPT, N_GREEDY)
    assert len(got) == N_GREEDY
    steps = torch_logits(m, PROMPT + got)[len(PROMPT) - 1 : -1]
    gaps = steps.max(-1) - steps[np.arange(N_GREEDY), got]
    assert gaps.max() <= tol["rel"] * scale, (exported["arch"], dtype, gaps)
    if dtype == "f32":
        with torch.no_grad():
            gen = m.generate(torch.tensor([PROMPT]), max_new_tokens=N_GREEDY, do_sample=False, pad_token_id=0)
        want = gen[0, len(PROMPT):].tolist()
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
        assert first is None or gaps[first] <= tol["rel"] * scale  # equal, or split at a near tie


def test_arch_embedding_path_equals_token_path(exported) -> None:
    from llasm.assistant.llm import LlamaLM

    ids = LONG_IDS[:32]
    for dtype in ("f32", "q8_0"):
        lm = LlamaLM(exported[dtype], n_ctx=128, n_threads=2)
        try:
            table = lm.token_embeddings()
            assert table.shape == (49152, 64)
            by_id = lm.decode_tokens(ids, 0)
            lm.clear()
            by_emb = lm.decode_embeddings(table[ids], 0)
            lm.clear()
            half = len(ids) // 2
            lm.decode_tokens(ids[:half], 0, logits=False)
            mixed = lm.decode_embeddings(table[ids[half:]], half)
        finally:
            lm.close()
        scale = np.abs(by_id).max()
        np.testing.assert_allclose(by_emb, by_id, atol=1e-5 * scale)
        np.testing.assert_allclose(mixed, by_id, atol=1e-5 * scale)


def test_llama3_rope_freqs_carry_the_scaling(tmp_path: Path, smol_tok) -> None:
    """Without its rope_freqs tensor the Llama-3 model's logits leave the f32 tolerance: the parity test would
    catch a writer that dropped the scaling."""
    m = make_tiny_llm("llama3-rope")
    hp = LlamaHParams.from_config(m.config)
    assert hp.rope_freqs is not None and min(hp.rope_freqs) == 1.0 and max(hp.rope_freqs) == 8.0
    assert any(1.0 < f < 8.0 for f in hp.rope_freqs)  # all three bands occur
    # llama.cpp divides each rotary frequency by its factor: the same frequencies as transformers' llama3 rope
    theta = 100.0 ** (-np.arange(0, 16, 2) / 16)
    np.testing.assert_allclose(theta / np.array(hp.rope_freqs), m.model.rotary_emb.inv_freq.numpy(), rtol=1e-5)
    cfg = m.config.to_dict()
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 100.0}
    plain = write_llama_gguf(tmp_path / "plain.gguf", m.state_dict(), cfg, smol_tok, dtype="f32")
    lt = torch_logits(m, LONG_IDS)
    rel = np.abs(llama_logits(plain, LONG_IDS, n_ctx=128, n_threads=2) - lt).max() / np.abs(lt).max()
    assert rel > 10 * TOLERANCE["f32"]["rel"]


def test_llama3_rope_freqs_survive_a_model_loaded_from_gguf(tmp_path: Path) -> None:
    """transformers' GGUF loader drops rope_freqs; an export that loaded its LLM from a base GGUF passes the
    base's factors on (export.bundle does), so the re-written GGUF still equals the original model. (The
    400-token tokenizer of training.tiny: transformers converts a 49k-token GGUF tokenizer for half a minute.)"""
    from llasm.export.gguf_llm import gguf_rope_freqs, tokenizer_from_hf
    from llasm.training.tiny import make_tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_dir = make_tokenizer(tmp_path / "tok")
    n_vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    smol_tok = tokenizer_from_hf(tok_dir, n_vocab, pre="gpt-2")
    m = make_tiny_llm("llama3-rope", vocab_size=n_vocab)
    ids = LONG_IDS[:1] + [i % n_vocab for i in LONG_IDS[1:]]
    base = write_llama_gguf(tmp_path / "base.gguf", m.state_dict(), m.config, smol_tok, dtype="f32")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="base.gguf", dtype=torch.float32)
    assert loaded.config.rope_parameters["rope_type"] == "default"  # what the loader makes of it
    factors = gguf_rope_freqs(base)
    np.testing.assert_array_equal(factors, np.array(LlamaHParams.from_config(m.config).rope_freqs, dtype=np.float32))
    again = write_llama_gguf(tmp_path / "again.gguf", loaded.state_dict(), loaded.config, smol_tok, dtype="f32",
                             rope_freqs=factors)
    lt = torch_logits(m, ids)
    rel = np.abs(llama_logits(again, ids, n_ctx=128, n_threads=2) - lt).max() / np.abs(lt).max()
    assert rel < TOLERANCE["f32"]["rel"]
    assert gguf_rope_freqs(tmp_path / "again.gguf") is not None


def test_unsupported_architectures_are_one_line_errors() -> None:
    from transformers import MistralConfig

    cases = [
        (MistralConfig(), "'mistral'"),
        ({**tiny_llm_config("llama").to_dict(), "rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "linear"),
        ({**tiny_llm_config("qwen2").to_dict(), "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({**tiny_llm_config("qwen2").to_dict(), "use_sliding_window": True}, "sliding-window"),
        ({**tiny_llm_config("llama").to_dict(), "architectures": ["LlamaForSequenceClassification"]}, "Sequence"),
    ]
    for cfg, word in cases:
        with pytest.raises(ExportError) as e:
            LlamaHParams.from_config(cfg)
        msg = str(e.value)
        assert word in msg and "\n" not in msg, msg
    with pytest.raises(ExportError, match="LlamaForCausalLM .* and Qwen2ForCausalLM"):
        LlamaHParams.from_config(MistralConfig())


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


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_lora_adapter_over_base_equals_merged(tmp_path: Path, smol_tok, arch: str) -> None:
    """rsLoRA: PEFT's scale alpha/sqrt(r) differs from llama.cpp's alpha/r and is folded into lora_b (plain
    LoRA is covered by the bundle tests). The adapter carries the base's architecture (llama.cpp refuses a
    mismatch) and permutes lora_b of q/k for llama only."""
    base = make_tiny_llm(arch, seed=3)
    smol_tok = tokenizer_for(arch, smol_tok)
    base_path = write_llama_gguf(tmp_path / "base.gguf", base.state_dict(), base.config, smol_tok, dtype="f32")
    pm = _peft_lora(base, use_rslora=True)
    pm.save_pretrained(tmp_path / "lora")
    lora_path = write_lora_gguf(tmp_path / "lora.gguf", tmp_path / "lora", base.config)
    meta = _gguf_index(lora_path)[0]
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora" and meta["adapter.lora.alpha"] == 8.0
    assert meta["general.architecture"] == ("qwen2" if arch.startswith("qwen2") else "llama")
    lt = torch_logits(pm, IDS)  # PEFT forward (unmerged)
    merged = pm.merge_and_unload()
    merged_path = write_llama_gguf(tmp_path / "merged.gguf", merged.state_dict(), merged.config, smol_tok, dtype="f32")
    with_lora = llama_logits(base_path, IDS, lora_path=str(lora_path))
    plain = llama_logits(base_path, IDS)
    lm = llama_logits(merged_path, IDS)
    scale = np.abs(lt).max()
    assert np.abs(plain - lt).max() > 0.05 * scale  # the adapter matters
    # llama.cpp keeps K and V in an f16 cache: with the adapter's large random deltas that alone is ~0.3%
    assert np.abs(with_lora - lt).max() < 1e-2 * scale
    assert np.abs(with_lora - lm).max() < 1e-2 * scale


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
