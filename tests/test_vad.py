"""VAD segmentation on synthesized speech with known silences."""

from __future__ import annotations

import numpy as np
import pytest
from llasm.assistant.capture import ArraySource, EndOfStream
from llasm.assistant.vad import (
    PushToTalk,
    Segmenter,
    SpeechDiscarded,
    SpeechPaused,
    SpeechProgress,
    SpeechStarted,
    Utterance,
    VadError,
    VadOptions,
    level_dbfs,
)
from test_handsfree_fakes import SR, conversation, espeak


@pytest.fixture(scope="module")
def convo(tmp_path_factory):
    return conversation(tmp_path_factory.mktemp("speech"))


def segment(audio, opts=None, chunk=480):
    seg = Segmenter(opts)
    events = []
    src = ArraySource(audio, realtime=False, chunk_ms=chunk * 1000 // SR)
    while True:
        try:
            events += seg.feed(src.read())
        except EndOfStream:
            break
    return events + seg.flush()


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_boundaries_within_100ms_none_lost_none_split(convo, frame_ms):
    audio, truth = convo
    events = segment(audio, VadOptions(frame_ms=frame_ms))
    utts = [e for e in events if isinstance(e, Utterance)]
    assert len(utts) == len(truth), [(u.start_s, u.end_s) for u in utts]
    for u, (a, b) in zip(utts, truth, strict=True):
        assert abs(u.start_s - a) <= 0.1, (u.start_s, a)
        assert abs(u.end_s - b) <= 0.1, (u.end_s, b)
        assert not u.truncated
    starts = [e.start_s for e in events if isinstance(e, SpeechStarted)]
    assert starts == [u.start_s for u in utts]


def test_audio_has_pre_roll_and_tail(convo):
    audio, truth = convo
    opts = VadOptions(pre_roll_ms=300, tail_ms=150)
    u = next(e for e in segment(audio, opts) if isinstance(e, Utterance))
    assert u.audio.dtype == np.float32
    assert u.audio_start_s == pytest.approx(u.start_s - 0.3, abs=0.031)
    assert u.audio.size / SR == pytest.approx(u.end_s - u.audio_start_s + 0.15, abs=0.031)
    # the audio is the stream's own samples at that position
    i = round(u.audio_start_s * SR)
    np.testing.assert_allclose(u.audio[:1000], audio[i : i + 1000], atol=1 / 16000)


def test_speech_paused_carries_the_utterance_audio_early(convo):
    """Each utterance is announced, tail_ms after its last voiced frame, with exactly the audio it will have;
    pauses shorter than end_silence_ms announce a shorter candidate first."""
    audio, truth = convo
    opts = VadOptions(tail_ms=200, end_silence_ms=700)
    events = segment(audio, opts)
    utts = [i for i, e in enumerate(events) if isinstance(e, Utterance)]
    assert len(utts) == len(truth)
    for i in utts:
        paused = [e for e in events[:i] if isinstance(e, SpeechPaused)]
        last = paused[-1]
        np.testing.assert_array_equal(last.audio, events[i].audio)
        assert last.end_s == events[i].end_s and last.start_s == events[i].start_s
    # announced 200 ms after the speech ends, the Utterance 700 ms after: 500 ms earlier on the stream clock
    seg = Segmenter(VadOptions(frame_ms=10, tail_ms=200, end_silence_ms=700))
    src = ArraySource(audio, realtime=False, chunk_ms=10)
    seen: dict[str, float] = {}
    while "utt" not in seen:
        for e in seg.feed(src.read()):
            key = "paused" if isinstance(e, SpeechPaused) else "utt" if isinstance(e, Utterance) else ""
            if key:
                seen[key] = seg.stream_time_s
    assert seen["utt"] - seen["paused"] == pytest.approx(0.5, abs=0.011)


def test_speech_progress_gives_the_audio_so_far_while_speech_goes_on(convo):
    """Every progress_ms of speech the audio so far, each a prefix of the utterance's final audio, so the hearing
    can follow the speech; none with progress_ms 0."""
    audio, truth = convo
    events = segment(audio, VadOptions(progress_ms=500))
    utts = [i for i, e in enumerate(events) if isinstance(e, Utterance)]
    start = 0
    for i in utts:
        progress = [e for e in events[start:i] if isinstance(e, SpeechProgress)]
        final = events[i].audio
        lengths = [len(p.audio) for p in progress]
        assert lengths == sorted(lengths) and all(n < len(final) for n in lengths)
        for p in progress:
            np.testing.assert_array_equal(p.audio, final[: len(p.audio)])
        gaps = np.diff([p.end_s for p in progress])
        assert all(g >= 0.5 - 1e-6 for g in gaps)
        if events[i].duration_s > 1.2:
            assert progress, "a long utterance is followed while it is spoken"
        start = i + 1
    assert not [e for e in segment(audio, VadOptions(progress_ms=0)) if isinstance(e, SpeechProgress)]


def test_chunk_size_does_not_change_segments(convo):
    audio, _ = convo
    a = [(u.start_s, u.end_s) for u in segment(audio, chunk=480) if isinstance(u, Utterance)]
    b = [(u.start_s, u.end_s) for u in segment(audio, chunk=1234) if isinstance(u, Utterance)]
    assert a == b


def test_short_burst_is_discarded(tmp_path):
    clip = espeak("Hello there, how are you today?", tmp_path / "h.wav")
    start = int(np.nonzero(np.abs(clip) > 0.01)[0][0])
    burst = clip[start : start + int(0.15 * SR)]
    audio = np.concatenate([np.zeros(SR, np.float32), burst, np.zeros(SR, np.float32)])
    events = segment(audio, VadOptions(min_speech_ms=250))
    assert not any(isinstance(e, Utterance) for e in events)
    assert any(isinstance(e, SpeechDiscarded) for e in events)
    kept = segment(audio, VadOptions(min_speech_ms=60))
    assert sum(isinstance(e, Utterance) for e in kept) == 1


def test_long_speech_is_cut_at_max_utterance(convo):
    audio, truth = convo
    # the sentences back to back with no pause: one long utterance, cut at 2 s
    speech = np.concatenate([audio[int(a * SR) : int(b * SR)] for a, b in truth])
    events = segment(np.concatenate([np.zeros(SR // 2, np.float32), speech]), VadOptions(max_utterance_s=2.0))
    utts = [e for e in events if isinstance(e, Utterance)]
    assert len(utts) >= 3
    assert all(u.end_s - u.start_s <= 2.0 + 1e-6 for u in utts)
    assert any(u.truncated for u in utts)


def test_silence_and_noise_give_nothing():
    rng = np.random.default_rng(1)
    assert segment(np.zeros(3 * SR, np.float32)) == []
    assert segment(rng.normal(0, 0.0005, 3 * SR).astype(np.float32)) == []


def test_push_to_talk_trims_to_voiced_frames(convo):
    audio, truth = convo
    ptt = PushToTalk()
    pcm = (audio * 32767).astype(np.int16)
    a, b = truth[1]
    press_at, release_at = int((a - 0.5) * SR), int((b + 0.4) * SR)
    events = ptt.feed(pcm[:press_at]) + ptt.press() + ptt.feed(pcm[press_at:release_at]) + ptt.release()
    assert isinstance(events[0], SpeechStarted)
    u = events[-1]
    assert isinstance(u, Utterance)
    assert abs(u.start_s - a) <= 0.1 and abs(u.end_s - b) <= 0.1
    assert u.audio.size == pytest.approx(release_at - press_at, abs=480)
    # holding the key over silence sends nothing
    ptt.press()
    ptt.feed(np.zeros(SR, np.int16))
    assert isinstance(ptt.release()[0], SpeechDiscarded)


def test_bad_options_name_the_setting():
    with pytest.raises(VadError, match="frame_ms"):
        Segmenter(VadOptions(frame_ms=25))
    with pytest.raises(VadError, match="aggressiveness"):
        Segmenter(VadOptions(aggressiveness=5))


def test_level_dbfs():
    assert level_dbfs(np.zeros(480, np.int16)) == -100.0
    full = np.full(480, 32767, np.int16)
    assert level_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs((full // 10).astype(np.int16)) == pytest.approx(-20.0, abs=0.05)
