"""`llasm-assistant` one-shot command line: answers, JSON records, bad input, hands-free delegation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import clip
from llasm.assistant import cli
from llasm.assistant.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def test_transcribe_needs_audio():
    r = runner.invoke(app, ["--text", "hello", "--transcribe"])
    assert r.exit_code == 1
    assert "--transcribe applies to audio" in r.stderr


def test_missing_bundle_is_one_line(tmp_path):
    r = runner.invoke(app, ["--text", "hello", "--bundle", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_all_bad_files_fail_before_loading(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    r = runner.invoke(app, ["--file", str(bad), "--file", str(tmp_path / "missing.wav"),
                            "--bundle", str(tmp_path / "nope")])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "bad.wav" in lines[0] and "missing.wav" in lines[1]


def test_handsfree_flags_delegate(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "handsfree_main", lambda options: seen.update(options) or 0)
    r = runner.invoke(app, ["--mic", "--no-tui", "--speak", "--input-device", "2", "--json", "--max-tokens", "9"])
    assert r.exit_code == 0, r.stderr
    assert seen["mic"] and seen["no_tui"] and seen["speak"] and seen["json"]
    assert seen["input_device"] == "2" and seen["max_tokens"] == 9 and not seen["ptt"]
    seen.clear()
    assert runner.invoke(app, []).exit_code == 0 and seen["mic"] is False  # no inputs: the TUI


TOML = 'temperature = 0.7\nmax_tokens = 40\ntop_p = 0.9\ntop_k = 5\nseed = 3\nthreads = 2\nstop = ["END"]\n'
# each generation flag at the engine's built-in default (GenerationOptions()), and threads at auto
AT_DEFAULTS = ["--temperature", "0", "--max-tokens", "256", "--top-p", "1", "--top-k", "0", "--seed", "0",
               "--threads", "0"]


@pytest.fixture
def one_shot(monkeypatch, tmp_path):
    """Invoke `llasm-assistant --text hi [ARGS]` with settings file TOML (None: no file); what run_inputs gets."""
    from llasm import assistant

    def invoke(toml: str | None, *args: str) -> dict:
        cfg = tmp_path / "settings.toml"
        cfg.unlink(missing_ok=True)
        if toml is not None:
            cfg.write_text(toml)
        monkeypatch.setenv("LLASM_CONFIG", str(cfg))
        seen: dict = {}
        monkeypatch.setattr(assistant.cli, "run_inputs", lambda files, texts, **kw: seen.update(kw) or 0)
        r = runner.invoke(app, ["--text", "hi", *args])
        assert r.exit_code == 0, r.stderr
        return seen

    return invoke


def test_one_shot_flag_beats_settings_file_even_at_the_default(one_shot):
    from llasm.assistant.engine import GenerationOptions

    builtin = GenerationOptions()
    # no file, no flag: the built-in defaults
    seen = one_shot(None)
    assert seen["options"] == builtin and seen["threads"] is None and seen["system"] is None
    # the file, no flag: the file's values
    seen = one_shot(TOML + 'system = "Be brief."\n')
    assert seen["options"] == GenerationOptions(max_tokens=40, temperature=0.7, top_p=0.9, top_k=5, seed=3,
                                                stop=("END",))
    assert seen["threads"] == 2 and seen["system"] == "Be brief."
    # the file and every flag given at its built-in default: the flags win
    seen = one_shot(TOML, *AT_DEFAULTS)
    assert seen["options"] == GenerationOptions(stop=("END",)) and seen["threads"] is None
    # one flag given: only that one overrides
    seen = one_shot(TOML, "--temperature", "0", "--stop", "STOP")
    assert seen["options"] == GenerationOptions(max_tokens=40, temperature=0.0, top_p=0.9, top_k=5, seed=3,
                                                stop=("STOP",))


def test_one_shot_bad_settings_file_is_one_line(monkeypatch, tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text("temperature = 'hot'\n")
    monkeypatch.setenv("LLASM_CONFIG", str(cfg))
    r = runner.invoke(app, ["--text", "hi"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "temperature must be float" in r.stderr


def test_handsfree_flag_beats_settings_file_even_at_the_default(monkeypatch, tmp_path):
    from llasm.assistant.settings import Settings, load_settings, merge_options

    seen: dict = {}
    monkeypatch.setattr(cli, "handsfree_main", lambda options: seen.update(options) or 0)
    cfg = tmp_path / "settings.toml"
    cfg.write_text(TOML)

    def merged(*args: str) -> Settings:
        seen.clear()
        assert runner.invoke(app, ["--no-tui", "--mic", *args]).exit_code == 0
        return merge_options(load_settings(cfg), dict(seen))

    kept = merged()
    assert (kept.temperature, kept.max_tokens, kept.top_p, kept.top_k, kept.seed, kept.threads) == (0.7, 40, 0.9, 5, 3, 2)
    back = merged(*AT_DEFAULTS)
    assert (back.temperature, back.max_tokens, back.top_p, back.top_k, back.seed, back.threads) == (0.0, 256, 1.0, 0, 0, 0)
    assert merge_options(Settings(), dict(seen)).generation_options()["temperature"] == 0.0
    seen.clear()
    assert runner.invoke(app, ["--no-tui", "--mic"]).exit_code == 0
    assert merge_options(Settings(), dict(seen)).generation_options() == {}  # no file, no flag: built-in defaults


@pytest.mark.real
def test_files_json_and_bad_inputs_subprocess(tmp_path, bundle_factory):
    bundle = bundle_factory("bundle")
    good = tmp_path / "good.wav"
    sf.write(good, clip(2.0), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cmd = [sys.executable, "-m", "llasm.assistant.cli", "--bundle", str(bundle), "--threads", "1", "--max-tokens", "5",
           "--json", "--file", str(good), "--file", str(bad), "--file", str(empty), "--text", "Name a colour."]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 2 and "bad.wav" in err[0] and "empty.wav" in err[1]
    records = [json.loads(line) for line in r.stdout.strip().splitlines()]
    # every input has a record, in order; the failed ones say why in one line
    assert [rec["input"] for rec in records] == [str(good), str(bad), str(empty), "Name a colour."]
    failed = records[1:3]
    assert all(rec["stop_reason"] == "error" and rec["answer"] is None for rec in failed)
    assert "bad.wav" in failed[0]["error"] and "empty" in failed[1]["error"]
    records = [records[0], records[3]]
    keys = {"input", "answer", "encoder_ms", "adaptor_ms", "rescore_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s",
            "audio_s", "heard"}
    for rec in records:
        assert keys <= set(rec) and rec["answer"] and "error" not in rec
    assert records[0]["audio_s"] == pytest.approx(2.0) and records[0]["encoder_ms"] > 0
    assert records[1]["audio_s"] == 0

    # streaming text mode: one line per input on stdout
    cmd = [sys.executable, "-m", "llasm.assistant.cli", "--bundle", str(bundle), "--threads", "1", "--max-tokens", "5",
           "--text", "Name a colour.", "--text", "Name a fruit."]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0 and r.stderr == ""
    assert len(r.stdout.strip().splitlines()) == 2


@pytest.mark.real
def test_an_answer_that_loops_stops_and_json_says_loop(tmp_path):
    """The default model, typed, unscripted: SmolLM2 answers "What is the largest ocean on Earth?" with
    "...approximately 149,000,000,000,000,..." until the token limit; the repetition guard stops it within 64
    tokens and the record says why. The other question's answer ends at its end-of-turn, untouched."""
    import os

    env = dict(os.environ, LLASM_CONFIG=str(tmp_path / "none.toml"))
    env.pop("LLASM_BUNDLE", None)
    cmd = [sys.executable, "-m", "llasm.assistant.cli", "--threads", "2", "--json",
           "--text", "What is the largest ocean on Earth?", "--text", "What is the opposite of hot?"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=Path(__file__).parent.parent, env=env)
    assert r.returncode == 0, r.stderr
    looped, plain = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert looped["stop_reason"] == "loop" and looped["n_tokens"] < 64, looped
    assert looped["answer"].startswith("The largest ocean on Earth is the Pacific Ocean")
    assert plain["stop_reason"] == "eos" and plain["answer"] == "The opposite of hot is cold."
