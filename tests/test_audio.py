"""assistant.audio: loading any audio into 16 kHz mono float32, and the numpy Whisper log-mel."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from llasm.assistant.audio import (
    HOP_LENGTH,
    SAMPLE_RATE,
    AudioError,
    load_audio,
    log_mel,
    mel_filters,
    n_frames,
    save_wav,
)


def tone(freq: float, rate: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def level_at(x: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of the `freq` component of `x` (windowed DFT)."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) / (w.sum() / 2)
    k = int(round(freq * len(x) / rate))
    return float(spec[max(0, k - 2) : k + 3].max())


def speech_like(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    env = np.abs(np.sin(np.linspace(0, 9 * np.pi, n))) ** 2
    x = rng.normal(0, 0.1, n) * env + 0.3 * np.sin(2 * np.pi * 180 * np.arange(n) / rate) * env
    return np.clip(x, -1, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# loading good input


@pytest.mark.parametrize(
    "rate,channels,fmt,subtype",
    [
        (8000, 2, "WAV", "PCM_24"),
        (44100, 2, "WAV", "PCM_24"),
        (48000, 2, "FLAC", "PCM_24"),
        (22050, 1, "OGG", "VORBIS"),
        (16000, 1, "WAV", "PCM_16"),
        (32000, 6, "WAV", "FLOAT"),
        (11025, 1, "WAV", "PCM_U8"),
    ],
)
def test_load_resamples_and_downmixes(tmp_path: Path, rate: int, channels: int, fmt: str, subtype: str) -> None:
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, tone(440.0, rate, 1.5, channels), rate, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - int(1.5 * SAMPLE_RATE)) <= 2
    assert np.abs(out).max() <= 1.0
    # downmix is the channel mean; 440 Hz survives resampling at the right pitch and level
    expected_amp = 0.5 * np.mean([1 - 0.1 * c for c in range(channels)])
    assert level_at(out, 440.0, SAMPLE_RATE) == pytest.approx(expected_amp, rel=0.05)
    assert level_at(out, 880.0, SAMPLE_RATE) < 0.02 * expected_amp
    # the same bytes load identically
    np.testing.assert_array_equal(load_audio(path.read_bytes()), out)


def test_resampling_is_anti_aliased(tmp_path: Path) -> None:
    # a 12 kHz tone is above the 8 kHz Nyquist of 16 kHz audio: naive decimation folds it to 4 kHz
    for rate in (44100, 48000):
        x = tone(12000.0, rate, 1.0, amp=0.8) + tone(1000.0, rate, 1.0, amp=0.1)
        sf.write(tmp_path / "hi.wav", x, rate, subtype="PCM_24")
        out = load_audio(tmp_path / "hi.wav")
        assert level_at(out, 1000.0, SAMPLE_RATE) == pytest.approx(0.1, rel=0.05)
        assert level_at(out, 4000.0, SAMPLE_RATE) < 1e-3  # the alias of 12 kHz is > 58 dB down
    naive = x[::3]  # what dropping samples does to the 48 kHz signal, for contrast
    assert level_at(naive, 4000.0, SAMPLE_RATE) > 0.5


def test_load_arrays() -> None:
    x = tone(300.0, 48000, 0.5, channels=2)
    out = load_audio(x, source_rate=48000)
    assert len(out) == 8000 and out.dtype == np.float32
    # (channels, n) layout and integer PCM are understood
    np.testing.assert_allclose(load_audio(x.T.copy(), source_rate=48000), out, atol=1e-6)
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm, source_rate=48000), out, atol=2e-4)
    # no source_rate: the array is taken to be at the target rate already, and is returned unchanged
    y = tone(300.0, 16000, 0.5)
    np.testing.assert_array_equal(load_audio(y), y)
    # float input louder than full scale is scaled to peak 1
    loud = load_audio(y * 4.0)
    assert np.abs(loud).max() == pytest.approx(1.0)
    # a different target rate
    assert len(load_audio(x, source_rate=48000, sample_rate=24000)) == 12000


def test_save_wav_roundtrip(tmp_path: Path) -> None:
    x = tone(440.0, 16000, 0.5)
    x[10] = 1.7  # clipped on write
    path = save_wav(tmp_path / "sub" / "a.wav", x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    y = load_audio(path)
    assert np.abs(y - np.clip(x, -1, 1)).max() < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temporary left behind
    assert "NaN" in one_line_error(save_wav, tmp_path / "b.wav", np.full(10, np.nan, np.float32))
    assert "non-empty" in one_line_error(save_wav, tmp_path / "b.wav", np.zeros(0, np.float32))


# --------------------------------------------------------------------------------------------------
# bad input: one-line AudioError, never a raw soundfile error


def one_line_error(fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(AudioError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert isinstance(info.value, ValueError)
    assert info.value.__suppress_context__ or info.value.__cause__ is None
    return msg


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in one_line_error(load_audio, tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    assert "directory" in one_line_error(load_audio, tmp_path)


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    assert "empty" in one_line_error(load_audio, tmp_path / "empty.wav")
    assert "empty" in one_line_error(load_audio, b"")


def test_zero_samples(tmp_path: Path) -> None:
    sf.write(tmp_path / "z.wav", np.zeros((0,), np.float32), 16000)
    assert "no samples" in one_line_error(load_audio, tmp_path / "z.wav")
    assert "no samples" in one_line_error(load_audio, np.zeros(0, np.float32))
    assert "no samples" in one_line_error(load_audio, np.zeros((0, 2), np.float32))


def test_corrupt_and_non_audio(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "noise.wav").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "notes.txt").write_text("this is not audio\n" * 20)
    good = tmp_path / "good.flac"
    sf.write(good, tone(440, 16000, 1.0), 16000)
    (tmp_path / "cut.flac").write_bytes(good.read_bytes()[:40])  # header torn off mid-way
    for name in ("noise.wav", "notes.txt", "cut.flac"):
        msg = one_line_error(load_audio, tmp_path / name)
        assert "not a readable audio file" in msg or "no samples" in msg, msg
    assert "not a readable audio file" in one_line_error(load_audio, b"RIFF....WAVEjunkjunk")


def test_nan_and_inf(tmp_path: Path) -> None:
    x = tone(440, 16000, 0.5)
    x[100] = np.nan
    assert "NaN" in one_line_error(load_audio, x)
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    assert "NaN" in one_line_error(load_audio, tmp_path / "nan.wav")
    y = tone(440, 16000, 0.5)
    y[5] = np.inf
    assert "infinite" in one_line_error(load_audio, y)


def test_over_long(tmp_path: Path) -> None:
    x = np.zeros(16000 * 11, np.float32)
    assert "limit" in one_line_error(load_audio, x, max_seconds=10)
    sf.write(tmp_path / "long.wav", x, 16000)
    assert "11.0 s long" in one_line_error(load_audio, tmp_path / "long.wav", max_seconds=10)
    assert len(load_audio(tmp_path / "long.wav", max_seconds=None)) == 16000 * 11
    assert "max_seconds" in one_line_error(load_audio, x, max_seconds=0)


def test_bad_sample_rates(tmp_path: Path) -> None:
    x = tone(440, 16000, 0.2)
    for bad in (0, -16000, 12.5, 10**7, True):
        assert "source_rate" in one_line_error(load_audio, x, source_rate=bad)
    assert "sample_rate" in one_line_error(load_audio, x, sample_rate=0)
    sf.write(tmp_path / "a.wav", x, 16000)
    assert "only to raw" in one_line_error(load_audio, tmp_path / "a.wav", source_rate=8000)


def test_bad_array_shapes_and_types() -> None:
    assert "shape" in one_line_error(load_audio, np.zeros((2, 3, 4), np.float32))
    assert "dtype" in one_line_error(load_audio, np.array(["a", "b"]))
    assert "list" in one_line_error(load_audio, [0.0, 0.1])


# --------------------------------------------------------------------------------------------------
# log-mel


def test_mel_filters_are_slaney() -> None:
    f = mel_filters(80)
    assert f.shape == (80, 201) and not f.flags.writeable
    assert mel_filters(80) is f  # cached
    # slaney area normalisation: each filter's peak is 2 / (bandwidth in Hz)
    assert f.min() >= 0 and (f.sum(axis=1) > 0).all()
    assert mel_filters(128).shape == (128, 201)


def test_log_mel_shape_and_frames() -> None:
    for n in (160, 399, 400, 16000, 16001, 12345):
        x = speech_like(16000, n / 16000)
        m = log_mel(x)
        assert m.shape == (80, n // HOP_LENGTH) == (80, n_frames(n)) and m.dtype == np.float32
        assert m.min() >= m.max() - 2.0 - 1e-6  # dynamic range clamped to 8 log10 units, then / 4
    assert log_mel(speech_like(16000, 1.0), n_mels=128).shape == (128, 100)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers(n_mels: int) -> None:
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    worst = 0.0
    for i, n in enumerate((201, 401, 4000, 16000, 16001, 23457, 48000 + 7, 160 * 301 + 159)):
        x = speech_like(16000, n / 16000, seed=i)
        ref = fe(x, sampling_rate=16000, padding="longest", return_tensors="np").input_features[0]
        ours = log_mel(x, n_mels=n_mels)
        assert ours.shape == ref.shape, (n, ours.shape, ref.shape)
        worst = max(worst, float(np.abs(ours - ref).max()))
    print(f"max |log_mel - WhisperFeatureExtractor| ({n_mels} bins): {worst:.2e}")
    assert worst < 1e-4
    # clips shorter than the 200-sample reflect pad: torch.stft refuses them, the numpy path agrees with us
    for n in (160, 199):
        x = speech_like(16000, n / 16000, seed=n)
        ref = fe._np_extract_fbank_features(x[None].astype(np.float64), "cpu")[0]
        assert np.abs(log_mel(x, n_mels=n_mels) - ref).max() < 1e-4


def test_log_mel_bad_input() -> None:
    assert "1-D" in one_line_error(log_mel, np.zeros((2, 1600), np.float32))
    assert "float" in one_line_error(log_mel, np.zeros(1600, np.int16))
    assert "fewer than one" in one_line_error(log_mel, np.zeros(100, np.float32))
    bad = np.zeros(1600, np.float32)
    bad[3] = np.nan
    assert "NaN" in one_line_error(log_mel, bad)
    assert "n_mels" in one_line_error(log_mel, np.zeros(1600, np.float32), n_mels=0)


def test_speed(tmp_path: Path) -> None:
    """Prints timings (no assert on them: shared CI machines vary)."""
    x = speech_like(44100, 60.0)
    sf.write(tmp_path / "min.flac", np.stack([x, x], 1), 44100, subtype="PCM_24")
    t0 = time.perf_counter()
    audio = load_audio(tmp_path / "min.flac")
    t1 = time.perf_counter()
    mel = log_mel(audio[: 30 * SAMPLE_RATE])
    t2 = time.perf_counter()
    assert mel.shape == (80, 3000)
    print(f"load+resample 60 s 44.1 kHz stereo flac: {1e3 * (t1 - t0):.0f} ms; log_mel of 30 s: {1e3 * (t2 - t1):.1f} ms")


@pytest.mark.real
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_speech_from_espeak(tmp_path: Path) -> None:
    """Real synthesized speech (22.05 kHz) through the whole front end, against transformers."""
    wav = tmp_path / "s.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "--", "The quick brown fox jumps over the lazy dog."],
        check=True,
        capture_output=True,
    )
    assert sf.info(str(wav)).samplerate != SAMPLE_RATE
    audio = load_audio(wav)
    assert 1.0 < len(audio) / SAMPLE_RATE < 6.0 and np.abs(audio).max() > 0.05
    mel = log_mel(audio)
    transformers = pytest.importorskip("transformers")
    ref = transformers.WhisperFeatureExtractor(feature_size=80)(
        audio, sampling_rate=16000, padding="longest", return_tensors="np"
    ).input_features[0]
    assert np.abs(mel - ref).max() < 1e-4


def test_quiet_cuts_split_long_audio_at_pauses() -> None:
    from llasm.assistant.audio import quiet_cuts

    rng = np.random.default_rng(0)
    sr = 16000
    loud = lambda s: (0.3 * rng.standard_normal(int(s * sr))).astype(np.float32)  # noqa: E731
    quiet = lambda s: (0.001 * rng.standard_normal(int(s * sr))).astype(np.float32)  # noqa: E731
    # 4 s of "speech", a 0.3 s pause, 5 s, a pause, 3 s: cut in the pauses, never inside the loud parts
    audio = np.concatenate([loud(4), quiet(0.3), loud(5), quiet(0.3), loud(3)])
    pieces = quiet_cuts(audio, 7.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # contiguous, in order
    assert all(e - s <= 7 * sr for s, e in pieces) and pieces[-1][1] - pieces[-1][0] >= 2 * sr
    assert len(pieces) == 3
    assert 4 * sr <= pieces[0][1] <= 4.3 * sr and 9.3 * sr <= pieces[1][1] <= 9.6 * sr
    # with no pause anywhere it still cuts within the limits; short audio stays whole
    flat = loud(16)
    pieces = quiet_cuts(flat, 7.0)
    assert all(2 * sr <= e - s <= 7 * sr for s, e in pieces) and pieces[-1][1] == len(flat)
    assert quiet_cuts(loud(6.5), 7.0) == [(0, int(6.5 * sr))]
    with pytest.raises(AudioError, match="max_s > 2 \\* min_s"):
        quiet_cuts(flat, 3.0)
