"""The shipped default bundle hears real recordings with Whisper's own decoder (hearing mode whisper), and the LLM
reads the transcript's tokens as it reads the same question typed. Real recordings from Debian packages
(pocketsphinx-testdata, alsa-utils, asterisk-core-sounds-en-wav; `make test` installs them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llasm.assistant.audio import load_audio
from llasm.assistant.evaluate import normalize, wer

PS = Path("/usr/share/pocketsphinx/test/data")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not PS.is_dir(), reason="Debian pocketsphinx-testdata is not installed")]
DEFAULT = Path(__file__).resolve().parents[1] / "assistant" / "default_model"
SR = 16000


def _real_clips() -> list[tuple[Path, str]]:
    rows = []
    for line in (PS / "librivox" / "transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        rows.append((PS / "librivox" / f"{name.strip(' )')}.wav", text.replace("<s>", "").replace("</s>", "")))
    for line in (PS / "cards" / "cards.transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        rows.append((PS / "cards" / f"{name.strip(' )')}.wav", text.replace("<s>", "").replace("</s>", "")))
    return rows


@pytest.fixture(scope="module")
def engine():  # noqa: ANN201
    from llasm.assistant.engine import Engine

    eng = Engine.load(DEFAULT, n_threads=2)
    yield eng
    eng.close()


def test_the_default_bundle_hears_with_whispers_decoder(engine) -> None:  # noqa: ANN001
    assert engine.hearing.mode == "whisper" and engine.whisper is not None


def test_whispers_decoder_is_set_by_the_hearing_options(engine) -> None:  # noqa: ANN001
    """Every Whisper-decoder key of bundle.json's hearing (and its flags) reaches the decoder the engine uses."""
    from llasm.assistant.hearing import WhisperHearing

    w, o = engine.whisper, engine.hearing
    assert (w.pad_s, w.beam_size, w.greedy_first, w.fallback_logprob, w.sentence, w.short_s, w.short_window_s,
            w.short_timestamps) == (o.pad_s, o.whisper_beam, o.whisper_greedy_first, o.whisper_fallback_logprob,
                                    o.whisper_sentence, o.short_s, o.short_window_s, o.short_timestamps)
    assert o.whisper_decoder == "onnx" and w.decoder is not None
    told = o.with_overrides(whisper_greedy_first=False, whisper_beam=2, whisper_sentence=False, short_window_s=6.0,
                            short_timestamps=True, whisper_decoder="ct2")
    other = WhisperHearing.from_options(w.model, w.path, told)
    assert (other.greedy_first, other.beam_size, other.sentence, other.short_window_s, other.short_timestamps) == (
        False, 2, False, 6.0, True)
    assert other.decoder is None
    with pytest.raises(ValueError, match="whisper_decoder"):
        o.with_overrides(whisper_decoder="torch")


def test_the_default_bundle_transcribes_real_speech_as_whisper_does(engine) -> None:  # noqa: ANN001
    """--transcribe on ten real recordings (LibriVox readings and spoken card names) against Whisper's own decoder
    on a 30-s window with beam 5 (the reference of the README's results table)."""
    from llasm.assistant.bench import WhisperCascadeASR
    from llasm.assistant.engine import GenerationOptions

    rows = _real_clips()
    ours, theirs = [], []
    reference = WhisperCascadeASR(engine.encoder.path, n_threads=2, beam_size=5)
    for path, _ in rows:
        audio = load_audio(path)
        engine.new_chat()
        d = engine.ask(audio=audio, transcribe=True, options=GenerationOptions(max_tokens=96))
        assert d.stop_reason == "transcript" and d.answer == d.heard  # no LLM call: the transcript is the reply
        ours.append(d.answer)
        theirs.append(reference.transcribe(audio))
    refs = [t for _, t in rows]
    assert wer(refs, ours) <= 0.15 and wer(refs, ours) <= 1.5 * wer(refs, theirs) + 0.02, (ours, theirs)


def test_a_spoken_question_reads_as_the_same_question_typed(engine) -> None:  # noqa: ANN001
    from llasm.assistant.engine import GenerationOptions

    pcm = np.frombuffer((PS / "goforward.raw").read_bytes(), dtype="<i2")
    audio = load_audio(pcm, source_rate=SR)  # "go forward ten meters"
    ids, heard, _ = engine.encode_audio(audio)
    assert normalize(heard) == ["go", "forward", "10", "meters"]
    assert ids.ndim == 1  # token ids, not embeddings: the transcript's own tokens
    assert [p.tolist() for p in engine.chat.turn_pieces("", ids)] == [p.tolist() for p in engine.chat.turn_pieces(heard, None)]
    greedy = GenerationOptions(max_tokens=24)
    engine.new_chat()
    spoken = engine.ask(audio=audio, options=greedy)
    engine.new_chat()
    typed = engine.ask(text=heard, options=greedy)
    assert spoken.answer == typed.answer and spoken.heard == heard


def test_silence_and_noise_give_no_turn(engine) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    engine.new_chat()
    for audio in (np.zeros(3 * SR, np.float32), (0.4 * rng.standard_normal(3 * SR)).astype(np.float32)):
        d = engine.ask(audio=audio)
        assert (d.stop_reason, d.answer, d.heard) == ("silence", "", "")
    assert engine.history == []  # nothing was added to the conversation
    d = engine.ask(text="Say hi.")
    assert d.answer and d.stop_reason in ("eos", "length")


def test_silence_and_noise_give_no_turn_with_the_adaptors_hearing_too(engine) -> None:  # noqa: ANN001
    rng = np.random.default_rng(4)
    try:
        for mode in ("adaptor", "embeddings"):
            engine.set_mode(mode)
            engine.new_chat()
            for audio in (np.zeros(3 * SR, np.float32), (0.4 * rng.standard_normal(3 * SR)).astype(np.float32)):
                d = engine.ask(audio=audio)
                assert (d.stop_reason, d.answer, d.heard) == ("silence", "", ""), mode
            assert engine.history == []
    finally:
        engine.set_mode("whisper")


def test_a_transcription_joins_the_conversation(engine) -> None:  # noqa: ANN001
    from llasm.assistant.engine import GenerationOptions

    engine.new_chat()
    audio = load_audio(PS / "cards" / "001.wav")  # "ten of clubs"
    d = engine.ask(audio=audio, transcribe=True)
    assert "clubs" in d.answer.lower() and d.timings["n_tokens"] >= 2
    follow = engine.ask(text="How many words did I say?", options=GenerationOptions(max_tokens=16))
    assert follow.answer and [r for r, _, _ in engine.history] == ["user", "assistant", "user", "assistant"]


def test_hands_free_hears_the_utterance_while_it_is_spoken(engine) -> None:  # noqa: ANN001
    rows = _real_clips()
    gap = np.zeros(int(0.5 * SR), np.float32)
    utterance = np.concatenate([load_audio(rows[1][0]), gap, load_audio(rows[4][0])])  # two readings, 7 s
    texts = [engine.hear_partial(utterance[: int(s * SR)]) for s in np.arange(1.0, len(utterance) / SR, 0.5)]
    assert texts[-1] and normalize(texts[-1])[:3] == ["he", "was", "not"], texts
    assert engine.listening.stream is not None and engine.listening.stream._texts  # the first reading was heard once and kept
    ids, heard, timings = engine.encode_audio(utterance)
    assert timings["committed_s"] > 2.5  # the end of the utterance decoded the last piece only
    assert "amiable" in heard.lower() and heard.lower().startswith("he was not")


@pytest.mark.skipif(not ASTERISK.is_dir(), reason="Debian asterisk-core-sounds-en-wav is not installed")
def test_cli_on_real_and_silent_clips(tmp_path: Path) -> None:
    """--json per input; a clip with no speech is "heard nothing", a non-zero exit and a JSON record."""
    silent = tmp_path / "silence.wav"
    import soundfile as sf

    sf.write(str(silent), np.zeros(2 * SR, np.float32), SR)
    proc = subprocess.run([sys.executable, "-m", "llasm.assistant.cli", "--file", str(ASTERISK / "vm-password.wav"),
                           "--file", str(silent), "--transcribe", "--json", "--threads", "2"],
                          capture_output=True, text=True, timeout=300)
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "heard nothing" in proc.stderr and len(records) == 2
    assert normalize(records[0]["answer"]) == ["password"] and records[0]["stop_reason"] == "transcript"
    assert records[1]["stop_reason"] == "silence" and records[1]["answer"] == ""
    bad = subprocess.run([sys.executable, "-m", "llasm.assistant.cli", "--text", "hi", "--hearing", "ears"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "mode must be one of" in bad.stderr and "Traceback" not in bad.stderr


def test_every_hearing_mode_stops_an_answer_that_repeats_itself(engine, monkeypatch) -> None:  # noqa: ANN001
    """The repetition guard runs after every hearing: the LLM's token choice is scripted to say one phrase over
    and over (the hearing, the prefill and the decode are real), and each turn stops as a loop well before the
    token limit: spoken in each hearing mode, `--transcribe` through the adaptor, and typed."""
    import itertools

    import llasm.assistant.conversation as conversation
    from llasm.assistant.engine import GenerationOptions

    block = engine.lm.tokenize(" The key to the answer is", special=False)
    script = itertools.cycle(block)
    monkeypatch.setattr(conversation, "sample", lambda logits, opts, rng: next(script))
    audio = load_audio(_real_clips()[0][0])
    opts = GenerationOptions(max_tokens=200)
    try:
        for mode, transcribe in [("whisper", False), ("adaptor", False), ("adaptor", True), ("embeddings", False)]:
            engine.set_mode(mode)
            engine.new_chat()
            script = itertools.cycle(block)
            done = engine.ask(audio=audio, transcribe=transcribe, options=opts)
            assert done.stop_reason == "loop" and done.timings["n_tokens"] < 60, (mode, transcribe, done)
            assert done.answer.count("The key to the answer is") >= 3
        engine.new_chat()
        script = itertools.cycle(block)
        typed = engine.ask(text="What is the key?", options=opts)
        assert typed.stop_reason == "loop" and typed.timings["n_tokens"] < 60
    finally:
        engine.set_mode("whisper")
