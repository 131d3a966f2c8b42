"""Whisper's own decoder as the hearing (assistant/hearing.py): the stopping rule, silence, windows, streaming, and
the real small model on real recordings that Debian packages ship (pocketsphinx-testdata, alsa-utils)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    byte_decoder,
    sentence_case,
    speech_end,
)

SR = 16000
PS = Path("/usr/share/pocketsphinx/test/data")
ALSA = Path("/usr/share/sounds/alsa")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
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
    h.decoder = None  # CTranslate2's generate (the scripted model stands in for it)
    h.silence_tail = False  # timestamps end the transcript (the tail has tests of its own)
    return h


class _ScriptedWhisper:
    """Stands in for a CTranslate2 Whisper model: `generate` returns the scripted (token ids, mean log-probability)
    for each beam size, and records the beam sizes asked for."""

    def __init__(self, by_beam: dict[int, tuple[list[int], float]]) -> None:
        self.by_beam = by_beam
        self.beams: list[int] = []
        self.inputs: list[Any] = []  # the encoder states each call decoded

    def generate(self, enc, prompts, *, beam_size, max_length, **_):  # noqa: ANN001, ANN003, ANN202
        from types import SimpleNamespace

        self.beams.append(beam_size)
        self.inputs.append(enc)
        ids, score = self.by_beam[beam_size]
        return [SimpleNamespace(sequences_ids=[ids[: max_length // 2]], scores=[score], no_speech_prob=0.01)]


def _scripted(by_beam: dict[int, tuple[list[int], float]], *, greedy_first: bool = True) -> WhisperHearing:
    h = _cutter()
    h.model = _ScriptedWhisper(by_beam)
    h.vocab = [f"\u0120w{i}" for i in range(100)]  # GPT-2 byte-level: "\u0120" is the space before a word
    h._bytes = byte_decoder()
    h.beam_size, h.greedy_first, h.fallback_logprob = 5, greedy_first, -0.6
    return h


def test_greedy_first_and_the_beam_only_where_greedy_looks_unsure() -> None:
    h = _cutter()
    ts = lambda s: h.ts0 + round(s / 0.02)  # noqa: E731
    sure = ([ts(0), 1, 2, ts(1.8), h.eot], -0.2)
    unsure = ([ts(0), 1, 3, ts(1.8), h.eot], -0.9)  # mean log-probability under -0.6
    beam = ([ts(0), 1, 4, ts(1.8), h.eot], -0.5)
    loop = ([ts(0)] + [7, 8, 9] * 40, -0.1)  # no end before the length bound, however sure
    for by_beam, heard, beams in (
        ({1: sure, 5: beam}, "w1 w2", [1]),  # greedy is sure: one call
        ({1: unsure, 5: beam}, "w1 w4", [1, 5]),  # unsure: the beam decides
        ({1: loop, 5: beam}, "w1 w4", [1, 5]),  # greedy ran on to the bound: the beam decides
        ({1: unsure, 5: loop}, "w1 w3", [1, 5]),  # the beam looped where greedy ended: greedy is kept
    ):
        s = _scripted(by_beam)
        d = s._decode(None, [0], end_s=2.0)
        assert (d.text, s.model.beams) == (heard, beams)
        assert d.calls == len(beams)
        assert d.steps == sum(min(len(by_beam[b][0]), 2 * int(12 + 8 * 2.0) // 2) * b for b in beams)
    s = _scripted({1: sure, 5: beam}, greedy_first=False)  # the beam alone
    assert (s._decode(None, [0], end_s=2.0).text, s.model.beams) == ("w1 w4", [5])
    # without timestamps (<|notimestamps|>, 101, ends the prompt) greedy cannot show it found the end: the beam alone
    s = _scripted({1: ([1, 2, h.eot], -0.1), 5: ([1, 4, h.eot], -0.2)})
    assert (s._decode(None, [0, 101], end_s=2.0).text, s.model.beams) == ("w1 w4", [5])


def test_with_the_silent_tail_the_end_token_shows_greedy_found_the_end() -> None:
    """With the silent window behind the utterance the decoder ends the text itself: a greedy transcript that ends
    before the length bound (CTranslate2's sequences leave the end token out) is kept; one that runs on to the bound
    goes to the beam. CTranslate2's decoder reads the utterance's states, then the tail's from where they end."""
    enc = np.ones((1, 10, 4), np.float32)
    for by_beam, heard, beams in (
        ({1: ([1, 2], -0.1), 5: ([1, 4], -0.2)}, "w1 w2", [1]),
        ({1: ([7, 8, 9] * 40, -0.1), 5: ([1, 4], -0.2)}, "w1 w4", [1, 5]),  # greedy ran on: the beam decides
        ({1: ([1, 3], -0.9), 5: ([1, 4], -0.2)}, "w1 w4", [1, 5]),  # unsure: the beam decides
    ):
        s = _scripted(by_beam)
        s._tail = np.zeros((1, 1500, 4), np.float32)
        d = s._decode(enc, [0, 101], end_s=2.0, tail=True)
        assert (d.text, s.model.beams) == (heard, beams)
        states = np.array(s.model.inputs[0])
        assert states.shape == (1, 1500, 4) and states[0, :10].min() == 1 and states[0, 10:].max() == 0
    # in the short window (no timestamps) the beam decodes alone, the silent window behind it or not
    s = _scripted({1: ([1, 2], -0.1), 5: ([1, 4], -0.2)})
    s._tail = np.zeros((1, 1500, 4), np.float32)
    assert (s._decode(enc, [0, 101], end_s=1.0, tail=True, short=True).text, s.model.beams) == ("w1 w4", [5])


def test_a_short_window_is_heard_in_a_longer_silence() -> None:
    from types import SimpleNamespace

    h = _cutter()
    h.model = SimpleNamespace(n_mels=80)
    h.pad_s, h.short_s, h.short_window_s = 2.0, 2.0, 10.0
    frames = lambda s: h._features(np.zeros(int(s * SR), np.float32)).shape[2]  # noqa: E731 (100 a second)
    assert frames(1.5) == pytest.approx(1000, abs=2)  # under 2 s: 10 s in all
    assert frames(3.0) == pytest.approx(500, abs=2)  # otherwise the 2-s pad
    assert HearingOptions.from_dict({"short_s": 0}).short_s == 0  # 0: no short window
    with pytest.raises(ValueError):
        HearingOptions.from_dict({"short_s": 12, "short_window_s": 10})  # longer than its window


def test_the_short_window_decodes_without_timestamps() -> None:
    """An utterance heard in the short window is decoded with <|notimestamps|> (its long silence lets the decoder
    end the text itself); longer ones, and a partial view of a short one (plain pad), keep the timestamps."""
    from types import SimpleNamespace

    from llasm.assistant.hearing import _Decoded

    h = _cutter()
    h.model = SimpleNamespace(n_mels=80, encode=lambda feats, to_cpu: feats)
    h.pad_s, h.short_s, h.short_window_s, h.timestamps, h.short_timestamps = 2.0, 2.0, 20.0, True, False
    h.language, h.multilingual, h.index = "en", False, {"<|startoftranscript|>": 99}
    prompts: list[list[int]] = []

    def decode(enc, prompt: list[int], end_s: float, tail: bool = False, short: bool = False) -> _Decoded:  # noqa: ANN001
        prompts.append(prompt + (["tail"] if tail else []) + (["short"] if short else []))
        return _Decoded([1], "w1", -0.1, 0.0, ended=True, unsure=False)

    h._decode = decode  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    def speech(s: float) -> np.ndarray:  # noise in bursts of 0.2 s, as syllables come (steady noise is not speech)
        t = np.arange(int(s * SR)) / SR
        return (0.3 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 2.5 * t) > 0)).astype(np.float32)

    h._window(speech(1.5))
    h._window(speech(3.0))
    h._window(speech(1.5), short_window=False)
    assert prompts == [[99, 101, "short"], [99], [99]]  # 101: <|notimestamps|>
    h.short_timestamps = True  # hearing.short_timestamps: the short window keeps them too
    h._window(speech(1.5))
    assert prompts[-1] == [99, "short"]
    # with the silent tail (the default) every window reads the silent window after its own states and ends the
    # text itself (no timestamps): a longer utterance, a partial view of a short one, and the short window
    h.silence_tail, h.short_timestamps = True, False
    prompts.clear()
    h._window(speech(1.5))
    h._window(speech(3.0))
    h._window(speech(1.5), short_window=False)
    assert prompts == [[99, 101, "tail", "short"], [99, 101, "tail"], [99, 101, "tail"]]


def test_sentence_case_makes_a_sentence_and_keeps_the_words() -> None:
    assert sentence_case("which month comes after June?") == "Which month comes after June?"
    assert sentence_case("which is heavier, a kilogram of feathers or iron.") == \
        "Which is heavier, a kilogram of feathers or iron?"
    assert sentence_case("on which day is Christmas celebrated,") == "On which day is Christmas celebrated?"
    assert sentence_case("What is 2 plus 2") == "What is 2 plus 2?"  # digits stay digits
    assert sentence_case("My laptop is hot. what should I do") == "My laptop is hot. what should I do?"
    assert sentence_case("save 2") == "Save 2."
    assert sentence_case("Press 1 to mute.") == "Press 1 to mute."
    assert sentence_case("The last caller was...") == "The last caller was..."
    assert sentence_case("今天天气很好") == "今天天气很好"  # no Latin full stop after Mandarin
    assert sentence_case("") == ""


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
    assert (o.mode, o.language, o.n_best, o.pad_s, o.silence_tail) == ("whisper", "zh", 3, 0.5, True)
    assert HearingOptions().mode == "adaptor"  # a bundle without the key hears as it was exported
    assert o.with_overrides(mode="adaptor", language=None).mode == "adaptor"
    assert o.with_overrides(language=None).language == "zh"  # not given: the bundle's stays
    assert (o.whisper_greedy_first, o.whisper_fallback_logprob, o.whisper_sentence) == (True, -0.6, True)
    for bad in ({"mode": "ears"}, {"pad_s": 9}, {"whisper_beam": 0}, {"language": 3}, {"n_best": "3"},
                {"whisper_fallback_logprob": 0.5}, {"whisper_greedy_first": 1}):
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
    sentence = True

    def __init__(self) -> None:
        self.samples = 0
        self.sentence_asked: list[bool | None] = []

    def transcribe(self, audio: np.ndarray, *, sentence: bool | None = None, short_window: bool = True) -> Heard:
        self.samples += len(audio)
        self.sentence_asked.append(sentence)
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
    assert set(fake.sentence_asked) == {False}  # pieces are not sentences; the whole utterance is made one
    fresh = s.hear(utterance[: SR])  # another utterance: nothing committed is reused
    assert fresh.text == "<10>"


# ---- the real small model on real recordings --------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper() -> WhisperHearing:
    import ctranslate2
    from llasm.assistant.basemodels import resolve

    path = resolve("default:whisper-base")
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=2)
    return WhisperHearing(model, path, decoder="onnx", n_threads=2)  # the default's decoder


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
def test_greedy_first_hears_as_the_beam_does_for_less_decoder_work(whisper: WhisperHearing) -> None:
    rows = _librivox()
    audio = [load_audio(p) for p, _ in rows]
    # CTranslate2's decoder here (the ONNX one is tested against it in test_whisperdecoder.py)
    beam = WhisperHearing(whisper.model, whisper.path, pad_s=2.0, beam_size=5, greedy_first=False)
    first = WhisperHearing(whisper.model, whisper.path, pad_s=2.0, beam_size=5)  # the default: greedy, then beam 5
    by_beam, by_first = [beam.transcribe(a) for a in audio], [first.transcribe(a) for a in audio]
    refs = [t for _, t in rows]
    assert wer(refs, [h.text for h in by_first]) <= wer(refs, [h.text for h in by_beam]) + 0.02
    assert sum(h.decoder_steps for h in by_first) < 0.6 * sum(h.decoder_steps for h in by_beam)
    assert all(h.text[:1].isupper() and h.text[-1] in ".?!" for h in by_first)  # made a sentence


@pytest.mark.real
@pytest.mark.skipif(not ASTERISK.is_dir(), reason="Debian asterisk-core-sounds-en-wav is not installed")
def test_a_word_or_two_is_heard_in_the_short_window(whisper: WhisperHearing) -> None:
    """Telephone prompts under 2 s, heard in the 20-s short window without timestamps, word for word as Whisper's
    30-s window hears them (with timestamps the first is heard "Call a phone number.")."""
    for name, said in (("telephone-number", "telephone number"), ("vm-password", "password"),
                       ("agent-loggedoff", "agent logged off")):
        audio = load_audio(ASTERISK / f"{name}.wav")
        assert len(audio) < 2 * SR and whisper.in_short_window(audio)
        assert normalize(whisper.transcribe(audio).text) == said.split(), name


@pytest.mark.real
@needs_ps
def test_silence_and_noise_are_heard_as_nothing(whisper: WhisperHearing) -> None:
    rng = np.random.default_rng(0)
    assert whisper.transcribe(np.zeros(3 * SR, np.float32)).text == ""
    assert whisper.transcribe((0.3 * rng.standard_normal(3 * SR)).astype(np.float32)).text == ""
    if (ALSA / "Noise.wav").is_file():
        assert whisper.transcribe(load_audio(ALSA / "Noise.wav")).text == ""
    # under 2 s: the short window, decoded without timestamps, hears bursts of noise and clicks as nothing too
    t = np.arange(int(1.5 * SR)) / SR
    bursts = (0.3 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 2.5 * t) > 0)).astype(np.float32)
    clicks = np.where(rng.random(len(t)) < 0.001, 0.9, 0.0).astype(np.float32)
    for audio in (bursts, clicks, np.zeros(16, np.float32)):
        assert whisper.transcribe(audio).text == ""


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


@pytest.fixture(scope="module")
def mandarin(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, str]:
    """The real Mandarin recording in the f5-tts wheel (a film line) and the wheel's transcript of it."""
    from llasm.training.datagen.real import F5_WHEEL, f5_references, setup_wheel

    tmp = tmp_path_factory.mktemp("f5")
    rec = f5_references(setup_wheel(F5_WHEEL, tmp, "--f5-wheel"), tmp)["zh"]
    return rec.load(), rec.text


@pytest.mark.real
def test_a_real_mandarin_recording_comes_out_in_characters(whisper: WhisperHearing,
                                                           mandarin: tuple[np.ndarray, str]) -> None:
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.bench import WhisperCascadeASR

    audio, said = mandarin
    whisper.language = whisper.check_language("zh")
    try:
        text = whisper.transcribe(audio).text
    finally:
        whisper.language = "en"
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 12, text
    # a character error rate (the metric counts each character as a word): two of 14 characters misheard
    # ("仅" for "敬", "以" for "乙"), as Whisper's own decoder on a 30-s window with beam 5 mishears them
    reference = WhisperCascadeASR(resolve("default:whisper-base"), n_threads=2, beam_size=5, language="zh")
    whisper_30s = reference.transcribe(audio)
    assert wer([said], [text]) <= 0.2 and wer([said], [text]) <= wer([said], [whisper_30s]) + 1 / 14, (text, whisper_30s)
    whisper.language = whisper.check_language("auto")
    try:
        auto = whisper.transcribe(audio)
    finally:
        whisper.language = "en"
    assert auto.language == "zh" and wer([said], [auto.text]) <= 0.2, auto
    auto_30s = WhisperCascadeASR(resolve("default:whisper-base"), n_threads=2, language="auto").transcribe(audio)
    assert wer([said], [auto_30s]) <= 0.2, auto_30s
    with pytest.raises(Exception, match="unknown language"):
        whisper.check_language("klingon")


def test_unrepeat_drops_a_sentence_said_over() -> None:
    from llasm.assistant.hearing import unrepeat

    said = "how many days are there in a week, how many days are there in a week, how many days"
    assert unrepeat(said) == "how many days are there in a week"
    assert unrepeat("Who wrote Romeo and Juliet, who wrote Romeo and Juliet.") == "Who wrote Romeo and Juliet"
    for kept in ("5 5", "I think that that is fine.", "Press 1 to mute, 2 to lock, 3 to leave."):
        assert unrepeat(kept) == kept


def test_a_partial_view_hears_a_short_rest_without_the_long_window() -> None:
    """Hands-free's views of an utterance still being spoken pad a short rest with the plain pad; the turn's hearing
    of the same audio pads it to short_window_s (the view is heard again; the long encode would hold the engine)."""
    from types import SimpleNamespace

    h = _cutter()
    h.model = SimpleNamespace(n_mels=80)
    h.pad_s, h.short_s, h.short_window_s, h.window_s, h.sentence = 2.0, 2.0, 20.0, 25.0, False
    frames: list[int] = []

    def window(audio: np.ndarray, short_window: bool = True) -> Heard:
        frames.append(h._features(audio, short_window).shape[2])
        return Heard("words", "en")

    h._window = window  # type: ignore[method-assign]
    stream = StreamingHearing(h)
    audio = np.random.default_rng(0).normal(0, 0.1, int(1.5 * SR)).astype(np.float32)
    assert stream.hear(audio, partial=True).text == stream.hear(audio, commit=False).text == "words"
    assert frames == [pytest.approx(350, abs=2), pytest.approx(2000, abs=2)]  # 1.5 s + 2 s pad; 20 s in all
