"""Training on tiny random models: every adaptor, both stages, both losses, LoRA and full, resume, DDP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import child_env
from llasm.training.data import DataError, collate, read_manifest, spoken_turns_as_asr
from llasm.training.model import LLaSM, ModelSpec
from llasm.training.train import TrainConfig, TrainError, _sha256, hearing_sha256, latest_checkpoint, train
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tiny: Path, out: Path, **kw) -> TrainConfig:
    base = dict(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), data=str(tiny / "data" / "train.jsonl"),
                out=str(out), max_steps=4, batch_size=4, warmup_steps=1, lr=3e-3, save_every=100, log_every=1,
                eval_every=100, eval_generate=2)
    base.update(kw)
    return TrainConfig.from_recipe(None, **base)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_stage1_loss_is_on_the_transcript_only(tiny: Path) -> None:
    m = LLaSM.build(ModelSpec(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), adaptor={"type": "linear"}))
    ex = read_manifest(tiny / "data" / "train.jsonl").examples[:2]
    b = collate(ex, m, stage=1, objective="llm", seed=0, epoch=0, indices=[0, 1])
    s = b["samples"][0]
    trained = [i for i, t in zip(s.ids, s.train, strict=True) if t]
    assert m.tokenizer.decode(trained) == ex[0].text + "<|im_end|>\n"
    assert s.ids.count(-1) == 1
    # instruction before/after the audio and its wording vary with the example seed
    layouts = {tuple(collate(ex[:1], m, stage=1, objective="llm", seed=0, epoch=e, indices=[0])["samples"][0].ids)
               for e in range(12)}
    assert len(layouts) > 2


@pytest.mark.parametrize("adaptor", ["linear", "ultravox"])
def test_stage1_llm_objective_writes_a_checkpoint(tiny: Path, tmp_path: Path, adaptor: str) -> None:
    out = tmp_path / adaptor
    final = train(_cfg(tiny, out, adaptor=adaptor, eval_data=str(tiny / "data" / "eval.jsonl"), eval_every=4))
    desc = json.loads((final / "llasm.json").read_text())
    assert desc["format"] == "llasm-checkpoint" and desc["llm_weights"] == "base" and desc["step"] == 4
    assert desc["adaptor"]["type"] == adaptor and "prompt" in desc
    assert (final / "tokenizer" / "tokenizer_config.json").exists() and not (final / "llm").exists()
    rows = _rows(out)
    assert any("wer" in r and "eval_loss" in r for r in rows)
    assert (out / "loss.png").stat().st_size > 1000


def test_ctc_stage0_learns_and_transcribes(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctc"
    final = train(_cfg(tiny, out, adaptor="ctc", objective="ctc", max_steps=30, lr=1e-2, log_every=5, stack=1,
                       eval_data=str(tiny / "data" / "eval.jsonl"), eval_every=30))
    rows = [r for r in _rows(out) if "loss" in r]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"]
    t = load_file(str(final / "adaptor.safetensors"))
    assert set(t) == {"ln_pre.weight", "linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias",
                      "blank.weight", "blank.bias"}  # the token table is never stored


def test_ctc_shortlist_trains_the_softmax_over_the_transcripts_tokens(tiny: Path, tmp_path: Path) -> None:
    """`--ctc-shortlist`: the training softmax runs over the training transcripts' tokens (+ blank), the rows
    the full head would give for them; the head learns, and evaluation still scores the full vocabulary."""
    from llasm.training.model import load_checkpoint

    out = tmp_path / "short"
    final = train(_cfg(tiny, out, adaptor="ctc", objective="ctc", max_steps=30, lr=1e-2, log_every=5, stack=1,
                       ctc_shortlist=True, eval_data=str(tiny / "data" / "eval.jsonl"), eval_every=30))
    rows = [r for r in _rows(out) if "loss" in r]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"]
    assert [r for r in _rows(out) if "eval_loss" in r][-1]["eval_loss"] > 0
    model = load_checkpoint(final)  # the checkpoint keeps the vocabulary (ctc_vocab.json) beside the weights
    exs = read_manifest(tiny / "data" / "train.jsonl").examples
    ids = sorted({t for e in exs for t in model.prompt.encode(e.text)})
    vocab = torch.tensor(ids)
    assert 0 < len(ids) < model.adaptor.config.vocab_size
    assert json.loads((final / "ctc_vocab.json").read_text()) == ids and torch.equal(model.adaptor.vocab_ids, vocab)
    b = collate(exs[:3], model, stage=1, objective="ctc", seed=0, epoch=0, indices=[0, 1, 2], train=False)
    states, lens = model.encode(b["features"], b["mel_lengths"])
    with torch.no_grad():
        full, n = model.adaptor.ctc_logits(states, lens)
        short, n2 = model.adaptor.ctc_logits(states, lens, vocab)
        _, heard = model.adaptor(states, lens)  # hearing goes through the shortlist, as a bundle's does
    assert torch.equal(n, n2) and short.shape[-1] == len(ids) + 1
    torch.testing.assert_close(short, full[..., [*ids, model.adaptor.config.vocab_size]])
    assert heard and all(t in set(ids) for h in heard for t in h)
    model.train()
    loss, ntok = model.ctc_loss(states, lens, b["targets"])
    assert ntok == sum(map(len, b["targets"])) and torch.isfinite(loss)
    model.adaptor.vocab_ids = vocab[vocab != b["targets"][0][0]]  # in training, a token outside it is refused
    with pytest.raises(Exception, match="outside the ctc vocabulary"):
        model.ctc_loss(states, lens, b["targets"])
    model.eval()  # evaluation scores the whole vocabulary: held-out transcripts have tokens training lacks
    assert torch.isfinite(model.ctc_loss(states, lens, b["targets"])[0])
    with pytest.raises(TrainError, match="ctc-shortlist"):
        _cfg(tiny, tmp_path / "bad", ctc_shortlist=True)
    # a heard cache is tied to the vocabulary too: an edited ctc_vocab.json beside the same weights hears otherwise
    digest = hearing_sha256(final)
    assert digest != _sha256(final / "adaptor.safetensors")
    (final / "ctc_vocab.json").write_text(json.dumps(ids[1:]))
    assert hearing_sha256(final) != digest


def test_stage1_reads_spoken_questions_as_asr_pairs(tiny: Path, tmp_path: Path) -> None:
    conv = read_manifest(tiny / "data" / "conv.jsonl")
    asr = read_manifest(tiny / "data" / "train.jsonl")
    pairs = spoken_turns_as_asr(read_manifest(f"{tiny / 'data' / 'train.jsonl'},{tiny / 'data' / 'conv.jsonl'}"))
    assert pairs.examples[: len(asr.examples)] == asr.examples  # ASR pairs pass through
    spoken = pairs.examples[len(asr.examples):]
    assert len(spoken) == len(conv.examples)  # one spoken turn each; typed turns and replies are not used
    for ex, c in zip(spoken, conv.examples, strict=True):
        assert ex.is_asr and ex.clips == c.clips[:1] and ex.text == c.turns[0]["value"] and ex.language == "en"
        assert 0 < ex.seconds <= c.seconds
    with pytest.raises(DataError, match="no spoken turns"):
        spoken_turns_as_asr(type(conv)([type(ex)("t", [], [{"from": "human", "value": "typed"}]) for ex in spoken]))
    # a ctc stage 1 on ASR clips + spoken questions trains on both (the question's words are its targets)
    out = tmp_path / "q"
    train(_cfg(tiny, out, adaptor="ctc", objective="ctc", stack=1, max_steps=2,
               data=f"{tiny / 'data' / 'train.jsonl'},{tiny / 'data' / 'conv.jsonl'}"))
    assert [r["step"] for r in _rows(out) if "loss" in r] == [1, 2]


def test_time_budget_stops_evaluates_and_saves(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    final = train(_cfg(tiny, out, adaptor="ctc", objective="ctc", max_steps=10_000, stack=1, log_every=1000,
                       max_minutes=0.05, eval_data=str(tiny / "data" / "eval.jsonl"), eval_every=10_000))
    rows = _rows(out)
    stopped = rows[-1]["step"]
    assert 1 <= stopped < 10_000 and "eval_loss" in rows[-1]  # evaluated at the stop
    assert rows[-1]["train_s"] >= 3.0
    assert json.loads((final / "llasm.json").read_text())["step"] == stopped


def test_runs_in_one_process_may_use_different_precisions(tiny: Path, tmp_path: Path) -> None:
    """Accelerate refuses a second Accelerator with another precision in one process (found on an H100, where
    `auto` is bf16 and a test then asked for float32); each train() call starts from its own precision."""
    for i, precision in enumerate(("bf16", "no", "bf16")):
        out = tmp_path / f"p{i}"
        train(_cfg(tiny, out, adaptor="ctc", objective="ctc", stack=1, max_steps=1, mixed_precision=precision))
        assert [r["step"] for r in _rows(out) if "loss" in r] == [1]


@pytest.mark.parametrize("weights,loss", [("lora", "ce"), ("full", "kl"), ("lora", "kl"), ("full", "ce")])
def test_stage2_from_stage1(tiny: Path, tmp_path: Path, weights: str, loss: str) -> None:
    s1 = train(_cfg(tiny, tmp_path / "s1", adaptor="ultravox", max_steps=1, stack=2))
    out = tmp_path / "s2"
    final = train(_cfg(tiny, out, stage=2, init=str(s1), llm_weights=weights, loss=loss, max_steps=6, lr=1e-2,
                       data=str(tiny / "data" / "conv.jsonl")))
    desc = json.loads((final / "llasm.json").read_text())
    assert desc["stage"] == 2 and desc["llm_weights"] == weights
    assert (final / ("lora" if weights == "lora" else "llm")).is_dir()
    rows = [r for r in _rows(out) if "loss" in r]
    if loss == "ce":
        assert rows[-1]["loss"] < rows[0]["loss"]
    else:  # the student starts as the teacher: KL starts near zero and stays finite
        assert all(r["loss"] >= -1e-4 and r["loss"] < 50 for r in rows)
    # the adaptor moved away from stage 1
    a1, a2 = load_file(str(s1 / "adaptor.safetensors")), load_file(str(final / "adaptor.safetensors"))
    assert any(not torch.equal(a1[k], a2[k]) for k in a1)


def test_stage2_on_a_mix_trains_lora_over_a_frozen_top1_ctc_adaptor(tiny: Path, tmp_path: Path) -> None:
    """The default model's stage 2: transcription requests and spoken questions in the bundle's prompt, the ctc
    adaptor read as top-1 token rows (no gradient reaches it), a small LoRA, evaluated on a conversation mix."""
    from llasm.training.datagen.mix import build_mix

    s1 = train(_cfg(tiny, tmp_path / "s1", adaptor="ctc", objective="ctc", stack=1, max_steps=2))
    assert json.loads((s1 / "llasm.json").read_text())["adaptor"]["topk"] != 1
    mix = tmp_path / "mix" / "train.jsonl"
    n = build_mix(mix, asr=str(tiny / "data" / "train.jsonl"), conversations=str(tiny / "data" / "conv.jsonl"),
                  asr_count=None, system_prompt="Be brief.", transcribe_instruction="Say it again.")
    assert n["transcribe"] > 0 and n["questions"] > 0
    out = tmp_path / "s2"
    final = train(_cfg(tiny, out, stage=2, init=str(s1), topk=1, llm_weights="lora", lora_r=2,
                       lora_targets="q_proj,v_proj", loss="kl", max_steps=4, data=str(mix), eval_data=str(mix),
                       eval_every=4, eval_max=8))
    desc = json.loads((final / "llasm.json").read_text())
    assert desc["stage"] == 2 and desc["adaptor"]["topk"] == 1
    a1, a2 = load_file(str(s1 / "adaptor.safetensors")), load_file(str(final / "adaptor.safetensors"))
    assert all(torch.equal(a1[k], a2[k]) for k in a1)  # frozen: top-1 rows carry no gradient
    lcfg = json.loads((final / "lora" / "adapter_config.json").read_text())
    assert lcfg["r"] == 2 and set(lcfg["target_modules"]) == {"q_proj", "v_proj"}
    lora = load_file(str(final / "lora" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())  # B starts at zero
    ev = [r for r in _rows(out) if "eval_loss" in r]
    assert ev and ev[-1]["eval_loss"] > 0 and "wer" in ev[-1]


def test_mix_conversations_render_like_a_transcribe_turn_at_run_time(tiny: Path, tmp_path: Path) -> None:
    """Training sees exactly the tokens `--transcribe` sends: system prompt, audio, then the instruction."""
    import dataclasses

    from llasm.assistant.prompt import AUDIO, Message
    from llasm.training.data import conversation_turns
    from llasm.training.datagen.mix import build_mix

    mix = tmp_path / "mix.jsonl"
    build_mix(mix, asr=str(tiny / "data" / "train.jsonl"), conversations=None, asr_count=3,
              system_prompt="Be brief.", transcribe_instruction="Say it again.")
    m = LLaSM.build(ModelSpec(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), adaptor={"type": "linear"}))
    ex = read_manifest(mix).examples[0]
    turns = conversation_turns(ex)
    assert [t.role for t in turns] == ["system", "user", "assistant"] and turns[2].text == turns[1].transcript
    got = m.prompt.build(turns[:2], add_generation=True)
    tpl = dataclasses.replace(m.prompt.template, default_system="Be brief.", transcribe="Say it again.")
    want: list[int] = []
    for seg in tpl.render([Message("user", tpl.transcribe, audio=True, audio_first=True)], add_generation=True):
        want += [-1] if seg is AUDIO else m.prompt.encode(seg)  # type: ignore[arg-type]
    assert got.ids == want
    # the KL teacher reads the transcript where the audio was
    teacher = m.prompt.tok.decode([i for i in m.prompt.build(turns[:2], text_only=True).ids])
    assert ex.turns[1]["value"] + "\nSay it again." in teacher


def test_lm_loss_scores_only_the_trained_positions(tiny: Path) -> None:
    """The LM head runs on trained positions only; the loss equals the one over full logits."""
    import torch.nn.functional as F

    m = LLaSM.build(ModelSpec(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), adaptor={"type": "linear"}))
    exs = read_manifest(tiny / "data" / "conv.jsonl").examples[:3]
    b = collate(exs, m, stage=2, objective="llm", seed=0, epoch=0, indices=[0, 1, 2])
    states, lens = m.encode(b["features"], b["mel_lengths"])
    audio, _ = m.adaptor(states, lens)
    with torch.no_grad():
        loss, n = m.lm_loss(b["samples"], audio)
        emb, mask, labels = m.embed(b["samples"], audio)
        logits = m.llm(inputs_embeds=emb, attention_mask=mask).logits[:, :-1]
        tgt = labels[:, 1:]
        full = F.cross_entropy(logits[tgt != -100], tgt[tgt != -100])
    assert n == int((tgt != -100).sum()) > 0
    assert torch.allclose(loss, full, atol=1e-5)


def test_a_conversation_can_train_with_cross_entropy_in_a_kl_run(tiny: Path) -> None:
    """`"loss": "ce"` rows score their own replies; the others KL to the text-reading teacher; one mean."""
    import dataclasses

    m = LLaSM.build(ModelSpec(encoder=str(tiny / "whisper"), llm=str(tiny / "llm"), adaptor={"type": "linear"}))
    exs = read_manifest(tiny / "data" / "conv.jsonl").examples[:3]
    exs[0] = dataclasses.replace(exs[0], loss="ce")

    def run(chunk, kl):  # noqa: ANN001, ANN202
        b = collate(chunk, m, stage=2, objective="llm", seed=0, epoch=0, indices=list(range(len(chunk))), kl=kl)
        states, lens = m.encode(b["features"], b["mel_lengths"])
        with torch.no_grad():
            return m.lm_loss(b["samples"], m.adaptor(states, lens)[0], b["teacher"])

    mixed, n = run(exs, True)
    ce, n_ce = run(exs[:1], False)
    kl, n_kl = run(exs[1:], True)
    assert n == n_ce + n_kl and float(kl) > 0
    assert torch.allclose(mixed, (ce * n_ce + kl * n_kl) / n, atol=1e-5)


def test_bad_settings_fail_clearly(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="unknown setting"):
        TrainConfig.from_recipe(None, nonsense=1)
    with pytest.raises(TrainError, match="ctc objective"):
        TrainConfig.from_recipe(None, objective="ctc", adaptor="linear")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio": "nope.wav", "text": "x"}) + "\n")
    with pytest.raises(DataError, match="no usable examples"):
        read_manifest(bad)
    mixed = tmp_path / "mixed.jsonl"
    good = (tiny / "data" / "train.jsonl").read_text().splitlines()[0]
    d = json.loads(good)
    d["audio"] = str(tiny / "data" / d["audio"])
    mixed.write_text(json.dumps(d) + "\n" + bad.read_text())
    m = read_manifest(mixed)
    assert len(m.examples) == 1 and m.skipped == 1


def test_several_manifests_read_as_one(tiny: Path) -> None:
    train, evals = tiny / "data" / "train.jsonl", tiny / "data" / "eval.jsonl"
    a, b = read_manifest(train).examples, read_manifest(evals).examples
    both = read_manifest(f"{train},{evals}").examples
    assert [e.clips for e in both] == [e.clips for e in a + b]
    assert len(read_manifest(f"{train},{evals}", limit=len(a) + 1).examples) == len(a) + 1
    with pytest.raises(DataError, match="not found"):
        read_manifest(f"{train},{tiny / 'nope.jsonl'}")
    with pytest.raises(DataError, match="empty dataset name"):
        read_manifest(f"{train},,{evals}")


def test_cache_states_extends_an_existing_cache(tiny: Path, tmp_path: Path) -> None:
    from llasm.training.data import StateCache
    from llasm.training.train import cache_states

    train, evals = tiny / "data" / "train.jsonl", tiny / "data" / "eval.jsonl"
    enc = str(tiny / "whisper")
    one = cache_states(f"{train},{evals}", enc, tmp_path / "one", engine="torch", shard_size=3)
    part = cache_states(str(train), enc, tmp_path / "part", engine="torch", shard_size=3)
    n_train = len(json.loads((part / "index.json").read_text())["clips"])
    mtimes = {p.name: p.stat().st_mtime_ns for p in part.glob("shard-*")}
    cache_states(f"{train},{evals}", enc, part, engine="torch", shard_size=3)  # adds only the eval clips
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in part.glob("shard-*") if p.name in mtimes)
    full, ref = StateCache(part), StateCache(one)
    assert set(full.index["clips"]) == set(ref.index["clips"]) and len(full.index["clips"]) > n_train
    for clip in ref.index["clips"]:
        assert torch.allclose(full.get(Path(clip)), ref.get(Path(clip)), atol=1e-3)
    with pytest.raises(TrainError, match="holds states of"):
        cache_states(str(evals), "default:whisper-base", part, engine="ct2")


def _cli(tiny: Path, out: Path, steps: int, *launcher: str) -> list[str]:
    return [*launcher, "stage1", "--recipe", str(ROOT / "training/recipes/cpu.toml"),
            "--encoder", str(tiny / "whisper"), "--llm", str(tiny / "llm"), "--data", str(tiny / "data/train.jsonl"),
            "--out", str(out), "--adaptor", "ctc", "--objective", "ctc", "--stack", "1", "--hidden", "32",
            "--max-steps", str(steps), "--batch-size", "4", "--save-every", "2", "--log-every", "1",
            "--lr", "1e-2", "--warmup-steps", "1", "--mixed-precision", "no", "--keep-last", "5"]


def test_kill9_resume_is_exact_and_corrupt_checkpoint_falls_back(tiny: Path, tmp_path: Path) -> None:
    py = [sys.executable, "-m", "llasm.training.cli"]
    env = child_env()
    ref = tmp_path / "ref"
    subprocess.run(_cli(tiny, ref, 12, *py), check=True, env=env, capture_output=True, cwd=ROOT)
    run = tmp_path / "run"
    p = subprocess.Popen(_cli(tiny, run, 12, *py), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill early (after step 4 of 12): tiny steps are milliseconds, so a late kill can find the run finished
    while not (run / "checkpoints" / "step-0000004").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert ckpts and not (run / "final").exists()
    # corrupt the newest checkpoint: resume must fall back to the one before
    (ckpts[-1] / "adaptor.safetensors").write_bytes(b"garbage")
    found = latest_checkpoint(run, log=lambda m: None)
    assert found is not None and found[0] == (ckpts[-2] if len(ckpts) > 1 else None)
    subprocess.run(_cli(tiny, run, 12, *py), check=True, env=env, capture_output=True, cwd=ROOT)
    a, b = load_file(str(ref / "final/adaptor.safetensors")), load_file(str(run / "final/adaptor.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    ref_loss = {r["step"]: r["loss"] for r in _rows(ref) if "loss" in r}
    run_rows = [r for r in _rows(run) if "loss" in r]
    assert [r["step"] for r in run_rows] == list(range(1, 13))  # each step once, though some ran twice
    for r in run_rows[-2:]:  # the last steps after the resume
        assert r["loss"] == ref_loss[r["step"]]


def test_two_process_gloo_run_learns(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llasm.training.cli"]
    env = child_env(OMP_NUM_THREADS="1")
    # torchrun-style launcher; on a machine without CUDA the trainer picks gloo (accelerate MULTI_CPU)
    r = subprocess.run(_cli(tiny, out, 16, *launcher), env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    losses = [x["loss"] for x in _rows(out) if "loss" in x]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    state = json.loads((out / "final" / "trainer" / "state.json").read_text())
    assert state["world_size"] == 2
    assert (out / "final" / "trainer" / "rng-1.safetensors").exists()


def test_stage2_from_a_heard_cache_needs_no_audio_states_or_encoder(tiny: Path, tmp_path: Path) -> None:
    """A frozen top-1 ctc adaptor's hearing, cached once, stands in for the audio: stage 2 then runs with the
    clips, their encoder states and the encoder gone, and trains exactly as it does from the states."""
    import shutil

    from llasm.training.data import HeardCache
    from llasm.training.datagen.mix import build_mix
    from llasm.training.train import cache_heard, cache_states

    s1 = train(_cfg(tiny, tmp_path / "s1", adaptor="ctc", objective="ctc", stack=1, max_steps=2, mixed_precision="no"))
    data = tmp_path / "data"
    shutil.copytree(tiny / "data", data)
    mix = tmp_path / "mix" / "train.jsonl"
    build_mix(mix, asr=str(data / "train.jsonl"), conversations=str(data / "conv.jsonl"), asr_count=None,
              system_prompt="Be brief.", transcribe_instruction="Say it again.")
    states = cache_states(str(mix), str(tiny / "whisper"), tmp_path / "states", engine="torch")
    heard_file = cache_heard(s1, str(mix), tmp_path / "heard.json", state_cache=states)
    heard = HeardCache(heard_file)
    assert heard.adaptor_sha256 == _sha256(s1 / "adaptor.safetensors")  # no shortlist: the weights' own digest
    n_clips = len({c for e in read_manifest(mix).examples for c in e.clips})
    assert len(heard) == n_clips and all(len(v["ids"]) > 0 for v in heard.clips.values())

    # what the LLM is fed: the same rows, from the states through the adaptor or from the cache
    from llasm.training.data import StateCache
    from llasm.training.model import load_checkpoint

    model = load_checkpoint(s1, adaptor_overrides={"topk": 1})
    exs = read_manifest(mix).examples[:4]
    both = [collate(exs, model, stage=2, objective="llm", seed=0, epoch=0, indices=list(range(len(exs))),
                    train=False, **src) for src in ({"cache": StateCache(states)}, {"heard": heard})]
    (emb_s, ids_s), (emb_h, ids_h) = (model.batch_audio(b) for b in both)
    assert ids_s == ids_h and all(torch.equal(x, y) for x, y in zip(emb_s, emb_h, strict=True))

    kw = dict(stage=2, topk=1, llm_weights="lora", lora_r=2, lora_targets="q_proj,v_proj", loss="kl",
              max_steps=3, data=str(mix), eval_data=str(mix), eval_every=3, eval_max=8, mixed_precision="no")
    ref = train(_cfg(tiny, tmp_path / "ref", init=str(s1), state_cache=str(states), **kw))

    # the same checkpoint with its encoder gone, and no clips or states on disk
    s1_moved = tmp_path / "s1_moved"
    shutil.copytree(s1, s1_moved)
    desc = json.loads((s1_moved / "llasm.json").read_text())
    desc["encoder"]["path"] = str(tmp_path / "no-such-encoder")
    (s1_moved / "llasm.json").write_text(json.dumps(desc))
    for wav in data.rglob("*.wav"):
        wav.unlink()
    shutil.rmtree(states)
    out = tmp_path / "heard-run"
    final = train(_cfg(tiny, out, init=str(s1_moved), heard_cache=str(heard_file), **kw))
    a, b = load_file(str(ref / "lora" / "adapter_model.safetensors")), load_file(str(final / "lora" / "adapter_model.safetensors"))
    assert set(a) == set(b) and any(v.abs().sum() > 0 for k, v in b.items() if "lora_B" in k)
    rows_ref, rows = _rows(tmp_path / "ref"), _rows(out)
    loss_ref, loss = ([r["loss"] for r in x if "loss" in r] for x in (rows_ref, rows))
    ev_ref, ev = ([r["eval_loss"] for r in x if "eval_loss" in r] for x in (rows_ref, rows))
    assert len(loss) == len(loss_ref) == 3 and len(ev) == len(ev_ref) == 1
    if torch.cuda.is_available():  # CUDA kernels (attention backward) are not bitwise repeatable; the tiny KL is ~1e-4
        assert all(abs(x - y) <= 0.01 * abs(y) + 1e-6 for x, y in zip(loss + ev, loss_ref + ev_ref, strict=True)), \
            (loss + ev, loss_ref + ev_ref)
    else:  # the same training, number for number
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
        assert [round(x, 5) for x in loss + ev] == [round(x, 5) for x in loss_ref + ev_ref]
    assert json.loads((final / "llasm.json").read_text())["encoder"]["n_mels"] == desc["encoder"]["n_mels"]

    # a cache heard by another adaptor, a stage-1 run and a clip the cache lacks fail in one line
    other = train(_cfg(tiny, tmp_path / "s1b", adaptor="ctc", objective="ctc", stack=1, max_steps=2, seed=5))
    with pytest.raises(TrainError, match="heard by another adaptor"):
        train(_cfg(tiny, tmp_path / "bad", init=str(other), heard_cache=str(heard_file), **kw))
    with pytest.raises(TrainError, match="heard cache feeds stage 2"):
        _cfg(tiny, tmp_path / "bad1", stage=1, heard_cache=str(heard_file))
    with pytest.raises(DataError, match="not in the heard cache"):
        heard.get(tmp_path / "elsewhere.wav")


def test_cache_heard_command(tiny: Path, tmp_path: Path) -> None:
    """`llasm-train cache-heard` writes what the adaptor hears (here from the audio, through the encoder) and
    refuses an adaptor whose hearing is not a token list, in one line."""
    from llasm.training.cli import app
    from llasm.training.data import HeardCache
    from typer.testing import CliRunner

    s1 = train(_cfg(tiny, tmp_path / "s1", adaptor="ctc", objective="ctc", stack=1, max_steps=2))
    data = str(tiny / "data" / "train.jsonl")
    out = tmp_path / "heard.json"
    r = CliRunner().invoke(app, ["cache-heard", "--init", str(s1), "--data", data, "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    heard = HeardCache(out)
    clips = {c for e in read_manifest(data).examples for c in e.clips}
    assert len(heard) == len(clips) and all(c in heard for c in clips)
    assert all(v["seconds"] > 0 for v in heard.clips.values())
    r = CliRunner().invoke(app, ["cache-heard", "--init", str(s1), "--data", data, "--out", str(out)])
    assert r.exit_code == 0 and "already holds" in r.stdout  # a rerun has nothing to do
    linear = tmp_path / "linear"
    linear.mkdir()
    desc = json.loads((s1 / "llasm.json").read_text())
    (linear / "llasm.json").write_text(json.dumps({**desc, "adaptor": {**desc["adaptor"], "type": "linear"}}))
    r = CliRunner().invoke(app, ["cache-heard", "--init", str(linear), "--data", data, "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "only a ctc adaptor" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "x.json").exists()
