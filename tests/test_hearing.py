"""Whisper's own decoder as the hearing (assistant/hearing.py): the stopping rule, silence, windows, streaming, and
the real small model on real recordings that Debian packages ship (pocketsphinx-testdata, alsa-utils)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from llasm.assistant.audio import load_audio
from llasm.assistant.evaluate import normalize, wer
from llasm.assistant.hearing import (
    Heard,
    HearingOptions,
    StreamingHearing,
    WhisperHearing,
    _unloop,
    speech_end,
)

SR = 16000
PS = Path("/usr/share/pocketsphinx/test/data")
ALSA = Path("/usr/share/sounds/alsa")
needs_ps = pytest.mark.skipif(not PS.is_dir(), reason="Debian pocketsphinx-testdata is not installed")


def test_unloop_keeps_a_repeated_block_once() -> None:
    assert _unloop([5, 5, 5, 5, 5, 5]) == [5]
    assert _unloop([1, 2, 3, 9, 8, 9, 8, 9, 8]) == [1, 2, 3, 9, 8]
    assert _unloop([1, 2, 3, 4, 1, 2, 3, 4]) == [1, 2, 3, 4]  # blocks of 4+ tokens: twice is a loop
    assert _unloop([5, 5]) == [5, 5]  # "five five" is said, not a loop
    assert _unloop([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]


def _cutter() -> WhisperHearing:
    h = WhisperHearing.__new__(WhisperHearing)
    h.eot, h.ts0 = 100, 102  # token ids below 100 are words, 101 is <|notimestamps|>, 102.. timestamps
    return h


def test_cut_stops_at_the_end_of_speech_and_at_a_repeated_segment() -> None:
    h = _cutter()
    ts = lambda s: h.ts0 + round(s / 0.02)  # noqa: E731
    # <0.00> a b <1.00> <1.00> c <2.00> <2.00> c d ...: the segment closing at 2.0 s >= 2.2 - 0.4 ends it
    assert h.cut([ts(0), 1, 2, ts(1), ts(1), 3, ts(2.0), ts(2.0), 3, 4, ts(3)], end_s=2.2) == [1, 2, 3]
    # a segment that says an earlier one again ends the transcript
    assert h.cut([ts(0), 1, 2, ts(0.5), ts(0.5), 1, 2, ts(1.0)], end_s=5.0) == [1, 2]
    # the end of text ends it; words that loop inside a segment are kept once
    assert h.cut([ts(0), 7, 7, 7, 7, 7, 100, 8], end_s=5.0) == [7]


def test_speech_end_ignores_trailing_silence() -> None:
    rng = np.random.default_rng(0)
    audio = np.concatenate([0.3 * rng.standard_normal(int(1.5 * SR)), np.zeros(SR)]).astype(np.float32)
    assert speech_end(audio) == pytest.approx(1.5, abs=0.03)


def test_hearing_options_are_one_object_with_checked_values() -> None:
    o = HearingOptions.from_dict({"mode": "whisper", "language": "zh", "n_best": 3})
    assert (o.mode, o.language, o.n_best, o.pad_s) == ("whisper", "zh", 3, 2.0)
    assert HearingOptions().mode == "adaptor"  # a bundle without the key hears as it was exported
    assert o.with_overrides(mode="adaptor", language=None).mode == "adaptor"
    assert o.with_overrides(language=None).language == "zh"  # not given: the bundle's stays
    for bad in ({"mode": "ears"}, {"pad_s": 9}, {"whisper_beam": 0}, {"language": 3}, {"n_best": "3"}):
        with pytest.raises(ValueError):
            HearingOptions.from_dict(bad)
    with pytest.raises(ValueError, match="mode"):
        o.with_overrides(mode="ears")


def test_hands_free_hearing_defaults_live_in_the_same_object() -> None:
    """Hands-free raises n_best and fusion to the options' own hands-free values unless a flag set them, and a
    bundle's hearing section can change those values like any other key."""
    o = HearingOptions.from_dict({"mode": "adaptor", "n_best": 3})
    hf = o.for_handsfree({})
    assert (hf.n_best, hf.fusion) == (o.handsfree_n_best, o.handsfree_fusion) == (4, 0.5) and hf.beam >= hf.n_best
    assert o.for_handsfree({"n_best": 3, "fusion": 0.0}) == o  # flags given: kept as they are
    assert HearingOptions.from_dict({"n_best": 6, "fusion": 0.2}).for_handsfree({}).n_best == 6  # at least, never less
    assert HearingOptions.from_dict({"fusion": 0.2}).for_handsfree({}).fusion == 0.2  # the bundle's own weight
    assert HearingOptions.from_dict({"handsfree_n_best": 2}).for_handsfree({}).n_best == 2
    with pytest.raises(ValueError, match="handsfree"):
        HearingOptions.from_dict({"handsfree_fusion": -1})


class _CountingHearing:
    """Stands in for WhisperHearing: hears '<n>' for each piece of n tenths of a second, and counts samples."""

    language = "en"

    def __init__(self) -> None:
        self.samples = 0

    def transcribe(self, audio: np.ndarray) -> Heard:
        self.samples += len(audio)
        return Heard(f"<{round(len(audio) / SR * 10)}>", "en")


def test_streaming_hearing_decodes_only_what_follows_the_last_pause() -> None:
    rng = np.random.default_rng(1)
    speech = lambda s: (0.3 * rng.standard_normal(int(s * SR))).astype(np.float32)  # noqa: E731
    pause = np.zeros(int(0.4 * SR), np.float32)
    utterance = np.concatenate([speech(2.5), pause, speech(2.5), pause, speech(1.5)])
    fake = _CountingHearing()
    s = StreamingHearing(fake)  # type: ignore[arg-type]
    for end in np.arange(1.0, len(utterance) / SR, 0.5):  # the audio so far, every 0.5 s
        s.hear(utterance[: int(end * SR)])
    before = fake.samples
    final = s.hear(utterance, commit=False)
    last_piece = fake.samples - before
    assert final.text.count("<") == 3  # two pieces cut at the pauses, then the rest
    assert last_piece < 2.5 * SR  # the end decodes the last piece only, not 7.3 s
    assert final.timings["committed_s"] > 5.0
    fresh = s.hear(utterance[: SR])  # another utterance: nothing committed is reused
    assert fresh.text == "<10>"


# ---- the real small model on real recordings --------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper() -> WhisperHearing:
    import ctranslate2
    from llasm.assistant.basemodels import resolve

    path = resolve("default:whisper-base")
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=2)
    return WhisperHearing(model, path)


def _librivox() -> list[tuple[Path, str]]:
    rows = []
    for line in (PS / "librivox" / "transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        rows.append((PS / "librivox" / f"{name.strip(' )')}.wav", text.replace("<s>", "").replace("</s>", "").strip()))
    return rows


@pytest.mark.real
@needs_ps
def test_whisper_hears_real_read_speech_and_stops(whisper: WhisperHearing) -> None:
    rows = _librivox()
    hyps = [whisper.transcribe(load_audio(p)).text for p, _ in rows]
    assert wer([t for _, t in rows], hyps) <= 0.15, hyps
    assert all(len(h.split()) <= len(t.split()) + 3 for h, (_, t) in zip(hyps, rows, strict=True))  # no repeats
    assert "clubs" in whisper.transcribe(load_audio(PS / "cards" / "001.wav")).text.lower()  # "ten of clubs"


@pytest.mark.real
@needs_ps
def test_silence_and_noise_are_heard_as_nothing(whisper: WhisperHearing) -> None:
    rng = np.random.default_rng(0)
    assert whisper.transcribe(np.zeros(3 * SR, np.float32)).text == ""
    assert whisper.transcribe((0.3 * rng.standard_normal(3 * SR)).astype(np.float32)).text == ""
    if (ALSA / "Noise.wav").is_file():
        assert whisper.transcribe(load_audio(ALSA / "Noise.wav")).text == ""


@pytest.mark.real
@needs_ps
def test_a_long_recording_is_heard_whole_in_order(whisper: WhisperHearing) -> None:
    rows = _librivox()
    gap = np.zeros(int(0.6 * SR), np.float32)
    audio = np.concatenate([x for p, _ in rows * 2 for x in (load_audio(p), gap)])  # 10 readings, about 55 s
    heard = whisper.transcribe(audio)
    ref = " ".join(t for _, t in rows * 2)
    assert len(audio) / SR > 50 and wer([ref], [heard.text]) <= 0.2, heard.text
    words = normalize(heard.text)
    assert words.index("dashwood") < words.index("disposed")  # in order


@pytest.mark.real
def test_mandarin_comes_out_in_characters(whisper: WhisperHearing, tmp_path: Path) -> None:
    wav = tmp_path / "zh.wav"
    # espeak-ng's Mandarin is poor, so what is heard is not the sentence; the script is what is tested
    subprocess.run(["espeak-ng", "-v", "cmn", "-s", "100", "-w", str(wav), "--", "今天天气很好。"], check=True)
    whisper.language = whisper.check_language("zh")
    try:
        text = whisper.transcribe(load_audio(wav)).text
    finally:
        whisper.language = "en"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text), text
    whisper.language = whisper.check_language("auto")
    try:
        auto = whisper.transcribe(load_audio(wav))
    finally:
        whisper.language = "en"
    assert auto.language in whisper.languages and auto.text, auto
    with pytest.raises(Exception, match="unknown language"):
        whisper.check_language("klingon")


def test_unrepeat_drops_a_sentence_said_over() -> None:
    from llasm.assistant.hearing import unrepeat

    said = "how many days are there in a week, how many days are there in a week, how many days"
    assert unrepeat(said) == "how many days are there in a week"
    assert unrepeat("Who wrote Romeo and Juliet, who wrote Romeo and Juliet.") == "Who wrote Romeo and Juliet"
    for kept in ("5 5", "I think that that is fine.", "Press 1 to mute, 2 to lock, 3 to leave."):
        assert unrepeat(kept) == kept
