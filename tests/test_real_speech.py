"""`llasm-train data real`: the real-speech dev and test sets built from what packages ship (docs/data.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from llasm.training.datagen.real import ASTERISK_SOUNDS, POCKETSPHINX, SETUP_WHEELS, build_real_sets

pytestmark = pytest.mark.skipif(not (POCKETSPHINX.is_dir() and ASTERISK_SOUNDS.is_dir()),
                                reason="needs pocketsphinx-testdata and asterisk-core-sounds-en-wav (make test installs them)")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("real")
    pyannote, f5 = (sorted(SETUP_WHEELS.glob(f"{name}-*.whl")) for name in ("pyannote_audio", "f5_tts"))
    build_real_sets(out, pyannote=pyannote[-1] if pyannote else None, f5=f5[-1] if f5 else None, progress=False)
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_sets_hold_every_listed_recording_once(sets: Path) -> None:
    dev, test, zh = _rows(sets / "dev.jsonl"), _rows(sets / "test.jsonl"), _rows(sets / "zh.jsonl")
    assert len(dev) == 114 and len(test) == 80 and len(zh) == 1  # the counts docs/data.md lists
    sources = {r["source"] for r in dev}
    assert sources == {"pocketsphinx-testdata", "pyannote.audio (wheel)", "alsa-utils", "f5-tts (wheel)",
                       "asterisk-core-sounds-en-wav"}
    assert {r["source"] for r in test} == {"asterisk-core-sounds-en-wav"}
    assert not {r["audio"] for r in dev} & {r["audio"] for r in test}  # the test set is never tuned on
    assert zh == [{"audio": "clips/f5-reference-zh.wav", "text": "对，这就是我，万人敬仰的太乙真人。",
                   "source": "f5-tts (wheel)", "seconds": 6.76, "language": "zh"}]
    assert not any("language" in r for r in dev + test)  # English, the hearing's default
    for r in dev + test + zh:
        info = sf.info(str(sets / r["audio"]))
        assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - r["seconds"]) < 0.01
        assert r["text"].strip() and "[" not in r["text"] and "silence" not in r["text"]
    by_name = {Path(r["audio"]).name: r["text"] for r in dev}
    assert by_name["ps-goforward.wav"] == "go forward ten meters"
    assert by_name["alsa-front_left.wav"] == "front left"
    assert by_name["pyannote-07.wav"] == "And I'm Sheila in Texas, originally from Chicago."
    assert by_name["f5-reference-en.wav"] == "Some call me nature, others call me mother nature."


def test_the_selection_does_not_change(sets: Path, tmp_path: Path) -> None:
    """A second build gives the same clips and texts (the Asterisk prompts are chosen by a hash of their names)."""
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "llasm.training.cli", "data", "real", "--out", str(again), "--quiet",
                           *_wheel_flag()], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("dev.jsonl", "test.jsonl", "zh.jsonl"):
        assert (again / name).read_text() == (sets / name).read_text()


def _wheel_flag() -> list[str]:
    flags = []
    for flag, name in (("--pyannote-wheel", "pyannote_audio"), ("--f5-wheel", "f5_tts")):
        wheels = sorted(SETUP_WHEELS.glob(f"{name}-*.whl"))
        flags += [flag, str(wheels[-1])] if wheels else []
    return flags


def test_a_bad_wheel_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "pyannote_audio-0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, "-m", "llasm.training.cli", "data", "real", "--out", str(tmp_path / "o"),
                           "--pyannote-wheel", str(bad), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "not a pyannote.audio wheel" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_f5_wheel_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "f5_tts-0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:  # a zip, but without the reference recordings
        z.writestr("f5_tts/__init__.py", "")
    proc = subprocess.run([sys.executable, "-m", "llasm.training.cli", "data", "real", "--out", str(tmp_path / "o"),
                           *_wheel_flag()[:2], "--f5-wheel", str(bad), "--quiet"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "not an f5-tts wheel" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
