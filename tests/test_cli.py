"""`llasm-assistant` one-shot command line: answers, JSON records, bad input, hands-free delegation."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from assistant.cli import app

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
    fake = types.ModuleType("assistant.handsfree")
    fake.main = lambda options: seen.update(options) or 0
    monkeypatch.setitem(sys.modules, "assistant.handsfree", fake)
    import assistant

    monkeypatch.setattr(assistant, "handsfree", fake, raising=False)
    r = runner.invoke(app, ["--mic", "--no-tui", "--speak", "--input-device", "2", "--json", "--max-tokens", "9"])
    assert r.exit_code == 0, r.stderr
    assert seen["mic"] and seen["no_tui"] and seen["speak"] and seen["json"]
    assert seen["input_device"] == "2" and seen["max_tokens"] == 9 and not seen["ptt"]
    seen.clear()
    assert runner.invoke(app, []).exit_code == 0 and seen["mic"] is False  # no inputs: the TUI


@pytest.mark.real
def test_files_json_and_bad_inputs_subprocess(tmp_path, bundle_factory):
    bundle = bundle_factory("bundle")
    good = tmp_path / "good.wav"
    t = np.arange(32000) / 16000
    sf.write(good, (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cmd = [sys.executable, "-m", "assistant.cli", "--bundle", str(bundle), "--threads", "1", "--max-tokens", "5",
           "--json", "--file", str(good), "--file", str(bad), "--file", str(empty), "--text", "Name a colour."]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 2 and "bad.wav" in err[0] and "empty.wav" in err[1]
    records = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [rec["input"] for rec in records] == [str(good), "Name a colour."]
    keys = {"input", "answer", "encoder_ms", "adaptor_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s",
            "audio_s", "heard"}
    for rec in records:
        assert keys <= set(rec) and rec["answer"]
    assert records[0]["audio_s"] == pytest.approx(2.0) and records[0]["encoder_ms"] > 0
    assert records[1]["audio_s"] == 0

    # streaming text mode: one line per input on stdout
    cmd = [sys.executable, "-m", "assistant.cli", "--bundle", str(bundle), "--threads", "1", "--max-tokens", "5",
           "--text", "Name a colour.", "--text", "Name a fruit."]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0 and r.stderr == ""
    assert len(r.stdout.strip().splitlines()) == 2
