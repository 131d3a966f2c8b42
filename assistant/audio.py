"""Audio front end: any audio file or array -> 16 kHz mono float32 -> Whisper log-mel.

`load_audio` reads wav/flac/ogg (anything libsndfile opens) of any rate, bit depth and channel count,
downmixes to mono and resamples with soxr's anti-aliased high-quality filter. Every kind of bad input
raises `AudioError` (a `ValueError`) with a one-line message naming the problem and the fix.

`log_mel` is a numpy re-implementation of transformers' `WhisperFeatureExtractor` that works on the audio's
real length instead of padding to 30 s:

- 25 ms Hann window (`N_FFT` = 400, periodic), 10 ms hop (`HOP_LENGTH` = 160), centred frames with reflect
  padding of `N_FFT // 2` on both sides;
- power spectrum -> Slaney-style mel filterbank (0-8 kHz, area-normalised, as librosa and Whisper) ->
  log10 with a floor of 1e-10;
- like Whisper, the last frame is dropped, so `n_frames = len(audio) // HOP_LENGTH` (100 frames a second);
- dynamic range clamped to 8 (log10 units) below the clip's maximum, then `(x + 4) / 4`.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
DEFAULT_MAX_SECONDS = 600.0
_MIN_RATE, _MAX_RATE = 1000, 768_000


class AudioError(ValueError):
    """Audio that cannot be used: the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------------------
# loading


def load_audio(
    src: str | Path | bytes | bytearray | np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    source_rate: int | None = None,
) -> np.ndarray:
    """Return `src` as mono float32 samples in [-1, 1] at `sample_rate` Hz.

    `src` is a path to an audio file, the bytes of one, or a raw array of samples. Raw arrays are
    `(n,)` or `(n, channels)` (a `(channels, n)` array with at most 8 rows is accepted too); integer arrays
    are scaled from their type's range; float arrays louder than full scale are scaled down to peak 1.0.
    A raw array is taken to be at `source_rate`, or at `sample_rate` when `source_rate` is None.
    Input longer than `max_seconds` (None: no limit) is refused before it is decoded.
    """
    _check_rate(sample_rate, "sample_rate")
    if max_seconds is not None and not max_seconds > 0:
        raise AudioError(f"max_seconds must be positive or None, not {max_seconds!r}")

    if isinstance(src, np.ndarray):
        rate = sample_rate if source_rate is None else source_rate
        _check_rate(rate, "source_rate")
        samples = _array_to_mono(src)
        name = "audio array"
    elif isinstance(src, (str, Path, bytes, bytearray, memoryview)):
        if source_rate is not None:
            raise AudioError(
                "source_rate applies only to raw sample arrays; audio files carry their own rate in the header"
            )
        samples, rate, name = _read_file(src, max_seconds)
    else:
        raise AudioError(
            f"cannot load audio from a {type(src).__name__}; pass a file path, file bytes or a numpy array"
        )

    if samples.size == 0:
        raise AudioError(f"{name} contains no samples; record or pick a non-empty clip")
    seconds = samples.shape[0] / rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{name} is {seconds:.1f} s long, over the {_limit(max_seconds)}; {_TRIM}"
        )
    if not np.isfinite(samples).all():
        raise AudioError(f"{name} contains NaN or infinite samples; the file or array is corrupt")

    if rate != sample_rate:
        import soxr

        samples = soxr.resample(samples, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:
        # resampling can overshoot a full-scale signal by a hair; real over-range input is rescaled
        samples = np.clip(samples, -1.0, 1.0) if peak < 1.01 else samples / peak
    return np.ascontiguousarray(samples, dtype=np.float32)


# No command-line flag sets the limit (only callers of `load_audio` can pass `max_seconds`), so the message
# names the limit and what a user can do with the recording, never the argument.
_TRIM = "trim or split the recording into shorter parts"


def _limit(max_seconds: float) -> str:
    minutes = max_seconds / 60
    return f"{max_seconds:g} s ({minutes:g} min) limit of one input" if minutes >= 1 else f"{max_seconds:g} s limit"


def _check_rate(rate: object, what: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not _MIN_RATE <= rate <= _MAX_RATE:
        raise AudioError(
            f"{what} must be a whole number of Hz between {_MIN_RATE} and {_MAX_RATE}, not {rate!r}; "
            "pass the rate the samples were recorded at"
        )


def _array_to_mono(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2 and a.shape[0] <= 8 and a.shape[1] > a.shape[0]:
        a = a.T  # (channels, n) -> (n, channels)
    if a.ndim not in (1, 2):
        raise AudioError(f"audio array must be 1-D (n,) or 2-D (n, channels), not shape {a.shape}")
    if a.dtype.kind == "i":
        scale = float(2 ** (8 * a.dtype.itemsize - 1))
        a = a.astype(np.float64) / scale
    elif a.dtype.kind == "u":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        a = (a.astype(np.float64) - half) / half
    elif a.dtype.kind == "f":
        a = a.astype(np.float64, copy=False)
    elif a.dtype.kind == "b":
        raise AudioError("audio array is boolean; pass samples as floats in [-1, 1] or integers")
    else:
        raise AudioError(f"audio array has dtype {a.dtype}; pass samples as floats in [-1, 1] or integers")
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[1] > 0 else a.reshape(0)
    if a.size and np.isfinite(a).all():
        peak = float(np.abs(a).max())
        if peak > 1.0:
            a = a / peak
    return a.astype(np.float32)


def _read_file(
    src: str | Path | bytes | bytearray | memoryview, max_seconds: float | None
) -> tuple[np.ndarray, int, str]:
    import soundfile as sf

    if isinstance(src, (bytes, bytearray, memoryview)):
        name = "audio data"
        if len(src) == 0:
            raise AudioError("audio data is empty (0 bytes); pass the bytes of a wav, flac or ogg file")
        handle: object = io.BytesIO(bytes(src))
    else:
        path = Path(src).expanduser()
        name = str(path)
        if not path.exists():
            raise AudioError(f"audio file not found: {path}; check the path")
        if path.is_dir():
            raise AudioError(f"{path} is a directory, not an audio file; pass a wav, flac or ogg file")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise AudioError(f"cannot read {path}: {e.strerror}; check its permissions") from None
        if size == 0:
            raise AudioError(f"audio file is empty (0 bytes): {path}; record or pick a non-empty clip")
        handle = str(path)
    try:
        with sf.SoundFile(handle) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            if rate <= 0:
                raise AudioError(f"{name} declares a sample rate of {rate} Hz; the file is corrupt")
            if max_seconds is not None and frames / rate > max_seconds:
                raise AudioError(
                    f"{name} is {frames / rate:.1f} s long, over the {_limit(max_seconds)}; {_TRIM}"
                )
            data = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except PermissionError:
        raise AudioError(f"cannot read {name}: permission denied; check its permissions") from None
    except (RuntimeError, ValueError, TypeError, OSError, EOFError, MemoryError) as e:  # libsndfile errors
        reason = " ".join(str(e).split()) or type(e).__name__
        reason = reason.replace(f"Error opening {name!r}: ", "").replace(f"Error opening {handle!r}: ", "")
        raise AudioError(
            f"{name} is not a readable audio file ({reason[:120]}); use wav, flac or ogg"
        ) from None
    if data.shape[0] == 0:
        raise AudioError(f"{name} contains no samples; record or pick a non-empty clip")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return mono, rate, name


# A sound whose loudness hardly changes is not speech: speech rises and falls with every syllable. Between the
# 10th and the 95th percentile of its 10-ms frame energies, the 368 recordings of pocketsphinx-testdata and
# Asterisk's prompts span 20.7 dB or more (1st percentile; a few tones and beeps under 1 dB), the 193 clips of the
# real-speech dev and test sets (docs/data.md) 17.1 dB or more (a phone call), a question in white noise at 5 dB
# SNR 12.2 dB; white, pink and brown noise, hum, clicks and alsa-utils' Noise.wav 0.1 to 9.0 dB. Whisper heard
# those noises as made-up sentences ("I'm going to cut it in half and cut it in half.").
STEADY_DB = 11.0


def energy_spread_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """dB between the 10th and the 95th percentile of the 10-ms frame energies of `audio` (0 when shorter
    than a frame)."""
    hop = sample_rate // 100
    n = len(audio) - len(audio) % hop
    if n == 0:
        return 0.0
    frames = np.asarray(audio[:n], np.float64).reshape(-1, hop)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    return float(np.percentile(db, 95) - np.percentile(db, 10))


def steady_sound(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bool:
    """True when `audio`'s loudness hardly changes (noise, hum, a tone): no speech in it (`STEADY_DB`)."""
    return energy_spread_db(audio, sample_rate) < STEADY_DB


_ENERGY_BLOCK = 6000  # 10-ms frames: one minute


def quiet_cuts(audio: np.ndarray, max_s: float, min_s: float = 2.0,
               sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Split `audio` into pieces of at most `max_s` seconds, each cut at the quietest 100 ms between `min_s` and
    `max_s` into the piece (a pause between words where there is one); the last piece is at least `min_s` long.
    Returns (start, end) sample ranges covering the audio in order; one range when it is short enough."""
    if not max_s > 2 * min_s > 0:
        raise AudioError(f"quiet_cuts needs max_s > 2 * min_s > 0, got max_s={max_s}, min_s={min_s}")
    n, longest, shortest = len(audio), int(max_s * sample_rate), int(min_s * sample_rate)
    if n <= longest:
        return [(0, n)]
    hop = sample_rate // 100  # 10 ms
    frames = audio[: n - n % hop].reshape(-1, hop)
    # each 10 ms frame's energy, a minute of frames at a time: a float64 copy of the whole recording (and its
    # squares) was 150 MB of a 10-minute file's peak memory; the values are the same
    power = np.empty(len(frames))
    for i in range(0, len(frames), _ENERGY_BLOCK):
        power[i:i + _ENERGY_BLOCK] = np.mean(np.asarray(frames[i:i + _ENERGY_BLOCK], np.float64) ** 2, axis=1)
    energy = np.convolve(power, np.ones(10) / 10, mode="same")  # 100 ms, centred
    pieces, start = [], 0
    while n - start > longest:
        lo, hi = (start + shortest) // hop, min(start + longest, n - shortest) // hop
        cut = (lo + int(np.argmin(energy[lo:hi]))) * hop
        pieces.append((start, cut))
        start = cut
    pieces.append((start, n))
    return pieces


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as a 16-bit PCM wav, atomically (a temporary file renamed into place).

    Samples are clipped to [-1, 1]. Returns the path. Raises `AudioError` for empty or non-finite audio.
    """
    import os

    import soundfile as sf

    _check_rate(sample_rate, "sample_rate")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"save_wav needs non-empty 1-D mono audio, not shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise AudioError("save_wav: audio contains NaN or infinite samples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------------------------------
# log-mel


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa `htk=False`)."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    logstep = 27.0 / np.log(6.4)
    return np.where(freq >= 1000.0, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), 200.0 * mels / 3.0)


@lru_cache(maxsize=8)
def mel_filters(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, shape `(n_mels, n_fft // 2 + 1)`, 0 Hz to Nyquist.

    The same matrix as `librosa.filters.mel(sr, n_fft, n_mels)` and Whisper's `mel_filters.npz`.
    The returned array is cached and read-only.
    """
    fft_freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    slopes = hz_points[None, :] - fft_freqs[:, None]  # (n_freq, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    weights = np.maximum(0.0, np.minimum(down, up))  # (n_freq, n_mels)
    weights *= 2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels])
    out = np.ascontiguousarray(weights.T)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=2)
def _hann(n: int) -> np.ndarray:
    w = np.hanning(n + 1)[:-1]  # periodic Hann, as torch.hann_window and transformers use
    w.setflags(write=False)
    return w


def n_frames(n_samples: int) -> int:
    """Number of log-mel frames `log_mel` returns for `n_samples` samples (Whisper drops the last frame)."""
    return n_samples // HOP_LENGTH


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper log-mel features of 16 kHz mono audio, shape `(n_mels, len(audio) // 160)`, float32.

    Equal (to float rounding) to `WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000,
    padding="longest")` -- no padding to 30 s; pad the audio yourself if a model needs a fixed length.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise AudioError(f"log_mel needs 1-D mono audio, not shape {audio.shape}; use load_audio first")
    if audio.dtype.kind != "f":
        raise AudioError(f"log_mel needs float samples in [-1, 1], not {audio.dtype}; use load_audio first")
    if audio.shape[0] < HOP_LENGTH:
        raise AudioError(
            f"audio has {audio.shape[0]} samples, fewer than one 10 ms hop ({HOP_LENGTH}); pass a longer clip"
        )
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples; use load_audio to validate it")
    if not isinstance(n_mels, (int, np.integer)) or n_mels <= 0:
        raise AudioError(f"n_mels must be a positive integer, not {n_mels!r}")

    x = audio.astype(np.float64, copy=False)
    pad = N_FFT // 2
    x = np.pad(x, pad, mode="reflect")
    count = n_frames(audio.shape[0])  # the final centred frame is dropped, as Whisper does
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(count, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0]), writeable=False
    )
    spectrum = np.fft.rfft(frames * _hann(N_FFT), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (count, n_freq)
    mel = mel_filters(int(n_mels)) @ power.T  # (n_mels, count)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
