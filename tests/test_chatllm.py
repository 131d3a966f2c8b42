"""--llm PATH.gguf: any chat GGUF answers, its prompt from its own chat template; the adaptor hearing modes refuse
an LLM the bundle's adaptor was not trained for, in one line; the JSON records name the LLM that answered.

The GGUFs are tiny random models (export/testing.py) with SmolLM2's vocabulary and a Llama-3 or a Qwen2.5 chat
template, written by the exporter; nothing is downloaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_bundle, child_env

pytest.importorskip("torch")

from llasm.assistant.basemodels import resolve  # noqa: E402
from llasm.assistant.bundle import BundleError  # noqa: E402
from llasm.assistant.chatllm import FIX, adaptor_mismatch, chat_prompt  # noqa: E402
from llasm.assistant.llm import LlamaLM, LLMError, gguf_identity  # noqa: E402
from llasm.assistant.prompt import PromptTemplate  # noqa: E402

CARDS = Path("/usr/share/pocketsphinx/test/data/cards/001.wav")  # "ten of clubs"

# Llama-3's template as Meta ships it with Llama-3-8B-Instruct
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Qwen2.5-Instruct's template without its tool-calling branches: ChatML with a default system prompt
QWEN25_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random GGUFs: "llama3" (Llama-3 rope and template), "qwen2" (Qwen2.5 template), "plain" (none)."""
    from llasm.export.gguf_llm import TokenizerMetadata, tokenizer_from_gguf, write_llama_gguf
    from llasm.export.testing import make_tiny_llm

    d = tmp_path_factory.mktemp("ggufs")
    smol = tokenizer_from_gguf(resolve("default:smollm2"))
    out = {}
    for key, arch, template in (("llama3", "llama3-rope", LLAMA3_TEMPLATE), ("qwen2", "qwen2", QWEN25_TEMPLATE),
                                ("plain", "llama", None)):
        fields = [(k, ("qwen2" if k == "tokenizer.ggml.pre" and arch == "qwen2" else v), t, st)
                  for k, v, t, st in smol.fields if k != "tokenizer.chat_template"]
        tok = TokenizerMetadata(fields=fields, n_vocab=smol.n_vocab, source=smol.source)
        m = make_tiny_llm(arch)
        out[key] = write_llama_gguf(d / f"{key}.gguf", m.state_dict(), m.config, tok, dtype="f16",
                                    name=f"tiny {key}", chat_template=template)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The hand-built test bundle (whisper-tiny.en, SmolLM2, a random linear adaptor) stating its LLM."""
    return build_bundle(tmp_path_factory.mktemp("b") / "bundle", "linear",
                        llm_identity=gguf_identity(resolve("default:smollm2")))


def _lm(path: Path) -> LlamaLM:
    return LlamaLM(path, n_ctx=256, n_threads=1)


def test_smollm2_template_gives_the_chatml_prompt() -> None:
    lm = _lm(resolve("default:smollm2"))
    try:
        p = chat_prompt(lm, PromptTemplate(default_system="Be brief.", transcribe="Repeat it."))
    finally:
        lm.close()
    assert p.user == "<|im_start|>user\n{content}<|im_end|>\n" and p.generation == "<|im_start|>assistant\n"
    assert "<|im_end|>" in p.stop and p.prefix == ""
    assert p.default_system.startswith("You are a helpful AI assistant named SmolLM")  # the template's own
    assert p.transcribe == "Repeat it."  # llasm's, from the bundle


def test_llama3_and_qwen2_templates(ggufs) -> None:  # noqa: ANN001
    lm = _lm(ggufs["llama3"])
    try:
        p = chat_prompt(lm, PromptTemplate(default_system="Be brief."))
        bos = lm.token_text(int(lm._c.llama_vocab_bos(lm._vocab)))
    finally:
        lm.close()
    assert p.user == "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
    assert p.generation == "<|start_header_id|>assistant<|end_header_id|>\n\n" and "<|eot_id|>" in p.stop
    assert p.prefix == bos and p.default_system == "Be brief."  # the template has no system prompt of its own
    lm = _lm(ggufs["qwen2"])
    try:
        q = chat_prompt(lm, PromptTemplate(default_system="Be brief."))
    finally:
        lm.close()
    assert q.system == "<|im_start|>system\n{content}<|im_end|>\n" and "<|im_end|>" in q.stop
    assert q.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def test_a_gguf_without_a_chat_template_is_refused(ggufs) -> None:  # noqa: ANN001
    lm = _lm(ggufs["plain"])
    try:
        with pytest.raises(LLMError, match=r"is not a chat model \(no tokenizer.chat_template\)"):
            chat_prompt(lm, PromptTemplate())
    finally:
        lm.close()


def test_adaptor_fits_only_the_llm_it_was_trained_for(ggufs) -> None:  # noqa: ANN001
    stated = gguf_identity(resolve("default:smollm2-q8_0"))
    smol = _lm(resolve("default:smollm2"))  # another quantization of the same model: same vocabulary and width
    tiny = _lm(ggufs["qwen2"])  # SmolLM2's vocabulary, width 64
    try:
        assert adaptor_mismatch(stated, smol, adaptor_type="ctc") is None
        assert adaptor_mismatch(stated, smol, adaptor_type="linear") is None  # same name too
        why = adaptor_mismatch(stated, tiny, adaptor_type="ctc")
        assert why is not None and "n_embd 64, not 576" in why and why.endswith(FIX)
        other_vocab = dict(stated, vocab_sha256="0" * 64)
        why = adaptor_mismatch(other_vocab, smol, adaptor_type="ctc")
        assert why is not None and "another vocabulary" in why and why.endswith(FIX)
        why = adaptor_mismatch(dict(stated, name="another model"), smol, adaptor_type="linear")
        assert why is not None and "embedding space" in why  # continuous embeddings fit one model only
        assert FIX in adaptor_mismatch({}, smol, adaptor_type="ctc")  # an old bundle that names no LLM
    finally:
        smol.close()
        tiny.close()


def test_engine_answers_with_another_llm_through_the_transcript(bundle, ggufs) -> None:  # noqa: ANN001
    from llasm.assistant.engine import Engine, GenerationOptions

    with pytest.raises(BundleError, match=f"hearing mode adaptor: .*n_embd 64, not 576.*{FIX}"):
        Engine.load(bundle, n_threads=1, warmup=False, llm=ggufs["llama3"], hearing={"mode": "adaptor"})
    eng = Engine.load(bundle, n_threads=1, warmup=False, llm=ggufs["llama3"], device="cpu", hearing={"mode": "whisper"})
    try:
        assert eng.llm_name == "tiny llama3" and eng.lm.path == ggufs["llama3"] and not eng.lm.has_lora
        assert eng.devices.llm == "cpu" and eng.adaptor is None
        assert eng.template.user.startswith("<|start_header_id|>user")
        with pytest.raises(BundleError, match=FIX):
            eng.set_mode("embeddings")
        d = eng.ask(text="What is the capital of France?", options=GenerationOptions(max_tokens=4))
        assert d.timings["n_tokens"] >= 1
    finally:
        eng.close()


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llasm.assistant.cli", *args], capture_output=True, text=True,
                          env=child_env(LLASM_CONFIG=str(tmp_path / "none.toml")), timeout=600)


@pytest.mark.skipif(not CARDS.is_file(), reason="pocketsphinx's test clips are not installed")
def test_cli_llm_file_end_to_end_on_cpu(bundle, ggufs, tmp_path) -> None:  # noqa: ANN001
    """The worked example of docs/runtime.md: `--llm my.gguf --file q.wav`, on the CPU, JSON out."""
    proc = _cli("--bundle", str(bundle), "--llm", str(ggufs["qwen2"]), "--file", str(CARDS), "--hearing", "whisper",
                "--device", "cpu", "--max-tokens", "4", "--json", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["llm"] == "tiny qwen2" and rec["n_tokens"] >= 1
    # the test bundle's whisper-tiny.en hears "10 of Cloves." (the default bundle's whisper-base: "Ten of clubs.")
    heard = rec["heard"].lower()
    assert ("10 of" in heard or "ten of" in heard), heard


def test_cli_refusals_are_one_line(bundle, ggufs, tmp_path) -> None:  # noqa: ANN001
    for args, expect in ((("--llm", str(ggufs["plain"])), "is not a chat model (no tokenizer.chat_template)"),
                         (("--llm", str(ggufs["qwen2"]), "--hearing", "adaptor"), FIX),
                         (("--llm", str(tmp_path / "missing.gguf")), "no such file")):
        proc = _cli("--bundle", str(bundle), "--text", "Hi", "--device", "cpu", *args, tmp_path=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
