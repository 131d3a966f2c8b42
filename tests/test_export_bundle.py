"""Checkpoint -> bundle -> runtime loaders, on tiny random checkpoints (and the real base models)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp")

from conftest import clip  # noqa: E402
from llasm.assistant.bundle import Bundle  # noqa: E402
from llasm.assistant.llm import gguf_identity  # noqa: E402
from llasm.export.bundle import export_bundle  # noqa: E402
from llasm.export.cli import app  # noqa: E402
from llasm.export.encoder import export_ct2, export_onnx, load_hf_encoder, varlen_encoder  # noqa: E402
from llasm.export.errors import ExportError  # noqa: E402
from llasm.export.testing import make_tiny_checkpoint, make_tiny_whisper  # noqa: E402
from llasm.export.validate import validate_bundle  # noqa: E402
from llasm.export.verify import Thresholds, verify_bundle  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

TIGHT = Thresholds(encoder_rel=1e-3, adaptor_rel=1e-3, first_token_agreement=1.0, top5_overlap=0.8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="module")
def ck_lora(cache: Path) -> Path:
    return make_tiny_checkpoint(cache / "ck-lora", adaptor="ultravox", llm_weights="lora", cache_root=cache)


@pytest.fixture(scope="module")
def ck_ctc(cache: Path) -> Path:
    return make_tiny_checkpoint(cache / "ck-ctc", adaptor="ctc", llm_weights="full", seed=1, cache_root=cache)


def test_encoder_exports_accept_any_length(tmp_path: Path) -> None:
    import ctranslate2
    import onnxruntime as ort

    wdir = make_tiny_whisper(tmp_path / "w")
    ref_enc = varlen_encoder(load_hf_encoder(wdir))
    ct2 = ctranslate2.models.Whisper(str(export_ct2(wdir, tmp_path / "ct2", "float32")), compute_type="float32")
    sessions = {dt: ort.InferenceSession(str(export_onnx(wdir, tmp_path / f"{dt}.onnx", dt)),
                                         providers=["CPUExecutionProvider"]) for dt in ("float32", "int8")}
    rng = np.random.default_rng(0)
    for t in (3, 401, 3000):
        mel = rng.standard_normal((1, 80, t)).astype(np.float32)
        with torch.no_grad():
            ref = ref_enc(torch.from_numpy(mel)).numpy()
        assert ref.shape == (1, (t + 1) // 2, 64)
        scale = np.abs(ref).max()
        got_ct2 = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
        assert np.abs(got_ct2 - ref).max() < 1e-4 * scale
        got32 = sessions["float32"].run(None, {"input_features": mel})[0]
        assert np.abs(got32 - ref).max() < 1e-4 * scale
        got8 = sessions["int8"].run(None, {"input_features": mel})[0]
        assert np.abs(got8 - ref).max() < 0.1 * scale
    # matmul weights shrink 4x; the 1500-row positional table stays float32
    assert (tmp_path / "int8.onnx").stat().st_size < 0.8 * (tmp_path / "float32.onnx").stat().st_size


def test_lora_adapter_bundle_matches_torch(tmp_path: Path, ck_lora: Path) -> None:
    out = tmp_path / "bundle"
    rep = export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", lora_adapter=True)
    m = json.loads((out / "bundle.json").read_text())
    identity = {k: m["llm"].pop(k) for k in ("name", "n_embd", "n_vocab", "vocab_sha256")}
    assert m["llm"] == {"path": "llm.gguf", "quant": "f32", "lora": "lora.gguf", "n_ctx": 2048, "lora_turns": "all"}
    # the LLM the adaptor was trained for, as the runtime's --llm check reads it (assistant/chatllm.py)
    assert identity == gguf_identity(out / "llm.gguf") and identity["n_embd"] == 64 and identity["n_vocab"] == 49152
    assert m["adaptor"]["type"] == "ultravox" and m["adaptor"]["path"] == "adaptor.safetensors"
    assert set(m["checksums"]) == {"encoder.onnx", "adaptor.safetensors", "llm.gguf", "lora.gguf"}
    assert rep.sizes["lora.gguf"] < rep.sizes["llm.gguf"] / 20
    b = Bundle.load(out)
    assert b.llm.lora is not None and b.prompt.stop == ("<|im_end|>",)
    report = verify_bundle(out, thresholds=TIGHT)
    assert report.passed, report.failures()
    assert len(report.clips) == 2 and all(c.first_token_agrees for c in report.clips)
    # bench's llama.cpp reference runs the bundle's model as the engine does: with its LoRA
    from llasm.assistant.bench import LlamaCppReference

    last = []
    for lora in (None, b.llm.lora):
        ref = LlamaCppReference(b.llm.path, n_threads=1, lora=lora)
        try:
            ref.llm.eval(ref.prompt)
            logits = ref._lib.llama_get_logits_ith(ref.llm.ctx, -1)
            last.append(np.ctypeslib.as_array(logits, shape=(ref.llm.n_vocab(),)).copy())
            assert ref.decode_speed(4) > 0
        finally:
            ref.close()
    assert not np.allclose(last[0], last[1], atol=1e-4)


def test_lora_turns_transcribe_answers_with_the_plain_llm(tmp_path: Path, ck_lora: Path) -> None:
    """--lora-turns transcribe: the runtime runs the LoRA for --transcribe turns only. Answers, spoken or typed,
    equal those of the same bundle without its LoRA; transcriptions equal those of the bundle that runs it for
    every turn (the switch prefills the conversation again under the LoRA). The default model's setting."""
    from llasm.assistant.engine import Engine, GenerationOptions

    out = tmp_path / "bundle"
    export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", lora_adapter=True,
                  lora_turns="transcribe")
    m = json.loads((out / "bundle.json").read_text())
    assert m["llm"]["lora_turns"] == "transcribe"
    variants = {"transcribe": out}
    for name, llm in (("all", dict(m["llm"], lora_turns="all")), ("plain", {"path": "llm.gguf", "quant": "f32"})):
        variants[name] = tmp_path / name
        shutil.copytree(out, variants[name])
        (variants[name] / "bundle.json").write_text(json.dumps(dict(m, llm=llm)))
    audio = clip(1.5)  # syllable-like: heard by the random adaptor (noise is not speech to the gate)
    opts = GenerationOptions(max_tokens=8)
    got = {}
    for name, root in variants.items():
        eng = Engine.load(root, n_threads=1, warmup=False)
        try:
            said = eng.ask(audio=audio, transcribe=True, options=opts).answer
            eng.new_chat()
            got[name] = (eng.ask(text="What color is grass?", options=opts).answer,
                         eng.ask(audio=audio, options=opts).answer, said)  # a two-turn conversation
            assert eng.answers_with_lora == (name == "all")
        finally:
            eng.close()
    assert got["transcribe"][:2] == got["plain"][:2] and got["transcribe"][2] == got["all"][2]
    assert got["all"][:2] != got["plain"][:2] and got["all"][2] != got["plain"][2]  # the LoRA changes both
    with pytest.raises(ExportError, match="needs --lora-adapter"):
        export_bundle(ck_lora, tmp_path / "b2", encoder="onnx", llm_quant="f32", lora_turns="transcribe")
    with pytest.raises(ExportError, match="unknown --lora-turns"):
        export_bundle(ck_lora, tmp_path / "b3", encoder="onnx", llm_quant="f32", lora_adapter=True, lora_turns="x")


def test_expect_transcribe_prefills_the_prompt_under_the_lora_ahead(tmp_path: Path, ck_lora: Path) -> None:
    """A one-shot --transcribe (the CLI loads the engine with expect_transcribe) finds the system prompt already
    prefilled under the LoRA: its turn prefills its own positions only, with the same transcript. Without it the
    turn switches the LoRA on and prefills the whole prompt again."""
    from llasm.assistant.engine import Engine, GenerationOptions

    out = tmp_path / "bundle"
    export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", lora_adapter=True,
                  lora_turns="transcribe")
    audio = clip(1.5, seed=1)
    opts = GenerationOptions(max_tokens=8)
    done, answers = {}, {}
    for expect in (False, True):
        eng = Engine.load(out, n_threads=1, expect_transcribe=expect)
        try:
            assert eng.lm.lora_on == expect  # idle time prepared the turn it expects
            done[expect] = eng.ask(audio=audio, transcribe=True, options=opts)
            eng.new_chat()
            assert eng.lm.lora_on == expect
            answers[expect] = eng.ask(text="What color is grass?", options=opts).answer  # from the plain LLM
            assert eng.lm.lora_on == expect  # ... and idle time prepares a transcription again
        finally:
            eng.close()
    ahead, switched = done[True].timings, done[False].timings
    assert done[True].answer == done[False].answer and answers[True] == answers[False]
    # ahead: the turn's own positions, less the user turn's opening primed in idle time; switched: the system
    # prompt again, then the whole turn
    assert ahead["prefill_positions"] < ahead["prompt_positions"] < switched["prefill_positions"]


def test_ctc_full_bundle(tmp_path: Path, ck_ctc: Path) -> None:
    out = tmp_path / "bundle"
    export_bundle(ck_ctc, out, encoder="ct2", encoder_dtype="float32", llm_quant="f32")
    tensors = load_file(str(out / "adaptor.safetensors"))
    assert "blank.weight" in tensors and not any(v.shape[0] == 49152 for v in tensors.values())  # no token table
    assert {p.name for p in (out / "encoder").iterdir()} >= {"model.bin", "config.json"}
    validate_bundle(out)
    report = verify_bundle(out, thresholds=TIGHT)  # the runtime takes the ctc table from the GGUF
    assert report.passed, report.failures()
    assert all(c.heard_match for c in report.clips)
    # the same checkpoint quantized: the CLI reports the differences and fails past strict thresholds
    export_bundle(ck_ctc, tmp_path / "q", encoder="ct2", encoder_dtype="int8", llm_quant="q8_0",
                  system_prompt="Answer briefly.")
    assert json.loads((tmp_path / "q" / "bundle.json").read_text())["prompt"]["default_system"] == "Answer briefly."
    # run-time choices: tokens mixed per ctc segment and what --transcribe asks
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "t1"), "--ctc-topk", "1",
                                 "--transcribe-instruction", "Repeat the sentence above word for word."])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "t1" / "bundle.json").read_text())
    assert m["adaptor"]["topk"] == 1 and m["prompt"]["transcribe"] == "Repeat the sentence above word for word."
    assert json.loads((out / "bundle.json").read_text())["prompt"]["transcribe"] == "Transcribe the audio."
    # a shortlist: the head scores only the tokens of the training transcripts
    man = tmp_path / "train.jsonl"
    man.write_text(json.dumps({"audio": "a.wav", "text": "Turn off the lights."}) + "\n" + json.dumps(
        {"conversations": [{"from": "human", "value": "What is the capital of France?", "audio": "q.wav"},
                           {"from": "gpt", "value": "Paris is the capital."}]}) + "\n")
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "t2"), "--ctc-vocab", str(man)])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "t2" / "bundle.json").read_text())
    ids = load_file(str(tmp_path / "t2" / "adaptor.safetensors"))["vocab.ids"]
    assert m["adaptor"]["shortlist"] == len(ids) and 8 <= len(ids) <= 20 and (np.diff(ids) > 0).all()
    from llasm.assistant.engine import Engine

    eng = Engine.load(tmp_path / "t2", n_threads=1, warmup=False)
    try:
        out = eng.adaptor.run(np.random.default_rng(0).standard_normal((60, eng.adaptor.config.d_model),
                                                                       dtype=np.float32))
        assert set(out.heard) <= set(ids.astype(int).tolist())
    finally:
        eng.close()
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "t3"), "--ctc-vocab", str(tmp_path / "no.jsonl")])
    assert r.exit_code == 1 and "no.jsonl" in r.output.splitlines()[-1]
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "t0"), "--ctc-topk", "0"])
    assert r.exit_code == 1 and "--ctc-topk" in r.output.splitlines()[-1] and not (tmp_path / "t0").exists()
    # the LLM's rescoring by default: top-1 ctc only, one line otherwise, nothing written
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "h3"), "--ctc-topk", "1",
                                 "--hearing-n-best", "3"])
    assert r.exit_code == 0, r.output
    # a CTranslate2 Whisper encoder with its decoder: the bundle hears with Whisper's decoder unless told otherwise
    assert json.loads((tmp_path / "h3" / "bundle.json").read_text())["hearing"] == {"mode": "whisper", "n_best": 3}
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "h4"), "--hearing-mode", "adaptor"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "h4" / "bundle.json").read_text())["hearing"] == {"mode": "adaptor"}
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "h5"), "--hearing-mode", "ears"])
    assert r.exit_code != 0 and "--hearing-mode must be one of" in r.output and not (tmp_path / "h5").exists()
    eng = Engine.load(tmp_path / "h3", n_threads=1, warmup=False)
    try:
        assert eng.hearing.n_best == 3
    finally:
        eng.close()
    for flags in (["--hearing-n-best", "3"], ["--ctc-topk", "1", "--hearing-n-best", "0"]):  # topk 4 mixes rows
        r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "h0"), *flags])
        assert r.exit_code == 1 and "--hearing-n-best needs" in r.output.splitlines()[-1], r.output
        assert not (tmp_path / "h0").exists()
    # the hearing n-gram: counted from the --ctc-vocab transcripts over the head's labels, checksummed, loaded
    r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "n3"), "--ctc-topk", "1", "--ctc-vocab",
                                 str(man), "--hearing-n-best", "3", "--hearing-ngram", "3",
                                 "--hearing-ngram-fusion", "0.5"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "n3" / "bundle.json").read_text())
    assert m["hearing"] == {"mode": "whisper", "n_best": 3, "ngram": "hearing_lm.npz", "ngram_fusion": 0.5}
    assert "hearing_lm.npz" in m["checksums"]
    eng = Engine.load(tmp_path / "n3", n_threads=1, warmup=False)
    try:
        assert eng.ngram is not None and eng.hearing.ngram_fusion == 0.5 and eng.ngram.order == 3
        ids = eng.adaptor.ids.tolist()
        tok = eng.lm.tokenize("What is the capital of France?", special=False)
        assert set(tok) <= set(ids)
        said = [ids.index(t) for t in tok]  # a counted transcript: likelier than reversed, or than uniform labels
        assert eng.ngram.score(said) > eng.ngram.score(said[::-1])
        # one of the two transcripts starts "What": likelier first than uniform, or than "?"
        assert eng.ngram.prob([], said[0]) > max(1 / len(ids), eng.ngram.prob([], said[-1]))
        eng.set_ngram_fusion(0)
        assert eng.hearing.ngram_fusion == 0
    finally:
        eng.close()
    for flags in (["--ctc-topk", "1", "--hearing-ngram", "3"],  # nothing to count
                  ["--ctc-vocab", str(man), "--hearing-ngram", "3"],  # topk 4
                  ["--ctc-topk", "1", "--ctc-vocab", str(man), "--hearing-ngram", "5"],
                  ["--ctc-topk", "1", "--ctc-vocab", str(man), "--hearing-ngram-fusion", "0.5"]):
        r = CliRunner().invoke(app, ["bundle", str(ck_ctc), str(tmp_path / "n0"), *flags])
        assert r.exit_code == 1 and "--hearing-ngram needs" in r.output.splitlines()[-1], r.output
        assert not (tmp_path / "n0").exists()
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "q"), "--json", "--encoder-rel", "0.001"])
    assert r.exit_code == 1
    assert "encoder relative RMS difference" in r.output.splitlines()[-1]
    summary = json.loads(r.output[r.output.index("{\n"): r.output.rindex("}") + 1])["summary"]
    assert 0.001 < summary["encoder_rel_max"] < 0.5


def test_failed_export_leaves_nothing(tmp_path: Path, cache: Path) -> None:
    ck = make_tiny_checkpoint(tmp_path / "ck", adaptor="linear", cache_root=cache)
    (Path(json.loads((ck / "llasm.json").read_text())["encoder"]["path"]) / "tokenizer.json").unlink()
    out = tmp_path / "out" / "b"
    with pytest.raises(ExportError, match="tokenizer"):
        export_bundle(ck, out, encoder="ct2")
    assert list((tmp_path / "out").iterdir()) == []
    out.mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(ck, out, encoder="onnx")


def test_corrupt_files_are_named(tmp_path: Path, ck_lora: Path) -> None:
    src = tmp_path / "b"
    export_bundle(ck_lora, src, encoder="ct2", encoder_dtype="float32", llm_quant="q8_0")
    for rel in ("llm.gguf", "encoder/model.bin", "adaptor.safetensors"):
        bad = tmp_path / f"bad-{rel.replace('/', '-')}"
        shutil.copytree(src, bad)
        data = (bad / rel).read_bytes()
        (bad / rel).write_bytes(data[: len(data) - 1000])
        with pytest.raises(ExportError, match="corrupt") as e:  # the checksum catches it first
            validate_bundle(bad)
        assert str(bad / rel) in str(e.value) and "\n" not in str(e.value)
        m = json.loads((bad / "bundle.json").read_text())
        m["checksums"] = {}  # without checksums, the structural checks name the file
        (bad / "bundle.json").write_text(json.dumps(m))
        with pytest.raises(ExportError, match="truncated") as e:
            validate_bundle(bad)
        assert rel.split("/")[-1] in str(e.value)


def test_force_replaces_a_bundle_with_normal_permissions_and_cleans_killed_exports(tmp_path: Path,
                                                                                   ck_lora: Path) -> None:
    out = tmp_path / "b"
    old_umask = os.umask(0o022)
    try:
        export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32")
        for p in [out, *out.rglob("*")]:
            assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644), p
        killed = tmp_path / ".b.tmp-999999999-abcdef"  # a killed export's leftover (no such process)
        killed.mkdir()
        (killed / "llm.gguf").write_bytes(b"\0" * 64)
        export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", force=True)
    finally:
        os.umask(old_umask)
    assert not killed.exists() and Bundle.load(out).llm.path == out / "llm.gguf"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        export_bundle(ck_lora, out, encoder="onnx", encoder_dtype="float32", llm_quant="f32", force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "llm.gguf").is_file()
    with pytest.raises(ExportError, match="checkpoint being exported"):
        export_bundle(ck_lora, ck_lora.parent, force=True)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["bundle", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert r.exit_code == 1
    assert "llasm.json is missing" in r.output and r.output.count("\n") == 1
    r = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert r.exit_code == 1 and "bundle.json" in r.output


@pytest.mark.real
def test_real_stage1_bundle_reuses_packaged_models(tmp_path: Path) -> None:
    """whisper-base + SmolLM2 with a stage-1 (base LLM) ultravox adaptor: the bundle references the packaged
    models, and the packaged CT2 int8 encoder + Q4_1 GGUF agree with the torch checkpoint."""
    from llasm.assistant.adaptor import AdaptorConfig, random_tensors, save_adaptor
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.bundle import prompt_from_gguf
    from llasm.training.convert import whisper_hf

    wdir = whisper_hf("default:whisper-base")
    gguf = resolve("default:smollm2")
    ck = tmp_path / "ck"
    ck.mkdir()
    acfg = AdaptorConfig.from_dict({"type": "ultravox", "stack": 8, "d_model": 512, "n_embd": 576, "hidden": 1024})
    tensors = random_tensors(acfg, seed=0, scale=0.02)
    save_adaptor(ck / "adaptor.safetensors", tensors)
    (ck / "llasm.json").write_text(json.dumps({
        "format": "llasm-checkpoint", "version": 1, "encoder": {"path": str(wdir), "n_mels": 80, "d_model": 512},
        "llm": {"path": str(gguf.parent), "gguf": str(gguf), "n_embd": 576, "vocab_size": 49152},
        "adaptor": acfg.to_dict(), "llm_weights": "base", "prompt": prompt_from_gguf(gguf).to_dict(),
        "stage": 1, "step": 0}))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(ck / "tokenizer"))
    out = tmp_path / "bundle"
    rep = export_bundle(ck, out)
    assert rep.manifest["encoder"]["path"] == "default:whisper-base"
    assert rep.manifest["llm"]["path"] == "default:smollm2"
    assert set(rep.sizes) == {"adaptor.safetensors"}
    report = verify_bundle(out)
    assert report.passed, report.failures()
    q8 = export_bundle(ck, tmp_path / "bundle-q8", llm_quant="q8_0")  # the packaged LLM, requantized at install
    assert (q8.manifest["llm"]["path"], q8.manifest["llm"]["quant"]) == ("default:smollm2-q8_0", "q8_0")
    # a reused LLM is named too: SmolLM2's vocabulary, as the shipped default bundle states it
    shipped = json.loads((Path(__file__).resolve().parents[1] / "assistant/default_model/bundle.json").read_text())
    assert {k: q8.manifest["llm"][k] for k in ("name", "n_embd", "vocab_sha256")} == \
        {k: shipped["llm"][k] for k in ("name", "n_embd", "vocab_sha256")}
    assert set(q8.sizes) == {"adaptor.safetensors"}
    report = verify_bundle(tmp_path / "bundle-q8")
    assert report.passed, report.failures()
