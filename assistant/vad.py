"""Voice activity detection: cut a 16 kHz int16 stream into utterances.

`Segmenter` is fed chunks of any length (from a microphone callback queue, a file replayed in real time,
or a test array) and returns events: `SpeechStarted` when speech begins, `Utterance` when it ends,
`SpeechDiscarded` when a burst was too short to be speech. The same code runs on every source, so it is
tested without a microphone.

Per frame (10, 20 or 30 ms) webrtcvad decides voiced / unvoiced; frames quieter than an energy floor are
unvoiced whatever webrtcvad says. Speech starts after `start_ms` of consecutive voiced frames and ends
after `end_silence_ms` of consecutive unvoiced ones. An utterance's `start_s` / `end_s` mark the speech
itself (first voiced frame to the end of the last voiced frame); its `audio` adds `pre_roll_ms` before and
up to `tail_ms` after, which the encoder likes.

`PushToTalk` is the alternative: the caller says when the user starts and stops talking.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000
FRAME_MS_CHOICES = (10, 20, 30)


class VadError(ValueError):
    """Bad VAD settings."""


@dataclass
class VadOptions:
    frame_ms: int = 30  # webrtcvad frame: 10, 20 or 30 ms
    aggressiveness: int = 2  # webrtcvad mode 0 (lenient) .. 3 (strict)
    start_ms: int = 60  # consecutive voiced audio that starts an utterance
    end_silence_ms: int = 700  # consecutive silence that ends it
    pre_roll_ms: int = 300  # audio kept before the speech onset
    tail_ms: int = 200  # audio kept after the last voiced frame
    min_speech_ms: int = 250  # shorter bursts are discarded (coughs, clicks)
    max_utterance_s: float = 20.0  # longer speech is cut here
    energy_floor_dbfs: float = -55.0  # frames quieter than this are silence
    progress_ms: int = 500  # while speech goes on, the audio so far every this often (SpeechProgress; 0 = off)

    def validate(self) -> VadOptions:
        if self.frame_ms not in FRAME_MS_CHOICES:
            raise VadError(f"vad frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise VadError(f"vad aggressiveness must be 0..3, got {self.aggressiveness}")
        for name in ("start_ms", "end_silence_ms", "pre_roll_ms", "tail_ms", "min_speech_ms", "progress_ms"):
            if getattr(self, name) < 0:
                raise VadError(f"vad {name} must be >= 0, got {getattr(self, name)}")
        if self.end_silence_ms < self.frame_ms:
            raise VadError(f"vad end_silence_ms must be at least one frame ({self.frame_ms} ms)")
        if self.max_utterance_s <= 0:
            raise VadError(f"vad max_utterance_s must be > 0, got {self.max_utterance_s}")
        return self


@dataclass
class SpeechStarted:
    start_s: float  # stream time of the first voiced frame


@dataclass
class SpeechDiscarded:
    start_s: float
    end_s: float
    reason: str


@dataclass
class Utterance:
    audio: np.ndarray = field(repr=False)  # float32 mono 16 kHz: pre-roll + speech + tail
    start_s: float  # speech start, seconds from the start of the stream
    end_s: float  # speech end (end of the last voiced frame)
    audio_start_s: float  # stream time of audio[0]
    truncated: bool = False  # cut at max_utterance_s

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class SpeechPaused:
    """The speech paused long enough that the utterance's audio is complete (its tail is in): if the silence
    lasts until `end_silence_ms`, the `Utterance` delivered then has exactly this audio. Lets a consumer start
    the expensive, state-free work (encoder, adaptor) while the segmenter is still deciding."""

    audio: np.ndarray = field(repr=False)
    start_s: float
    end_s: float


@dataclass
class SpeechProgress:
    """The utterance so far while it is still being spoken (every `VadOptions.progress_ms` of speech), so a
    consumer can hear it as it goes (the hands-free TUI shows what it hears so far)."""

    audio: np.ndarray = field(repr=False)
    start_s: float
    end_s: float


VadEvent = SpeechStarted | SpeechDiscarded | SpeechPaused | SpeechProgress | Utterance


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 (or float in [-1, 1]) samples in dB full scale; -100 for silence or no samples."""
    if pcm.size == 0:
        return -100.0
    x = pcm.astype(np.float64)
    if pcm.dtype == np.int16:
        x /= 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return max(-100.0, 20.0 * np.log10(rms)) if rms > 0 else -100.0


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 (clipped); int16 passes through."""
    if audio.dtype == np.int16:
        return audio
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def to_float32(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype == np.float32:
        return pcm
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


class _FrameVad:
    """webrtcvad plus an energy floor, one decision per frame."""

    def __init__(self, opts: VadOptions) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(opts.aggressiveness)
        self._floor = opts.energy_floor_dbfs

    def __call__(self, frame: np.ndarray) -> bool:
        if level_dbfs(frame) < self._floor:
            return False
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))


class _Framer:
    """Re-chunk arbitrary int16 chunks into fixed frames, tracking stream time in samples."""

    def __init__(self, frame_len: int) -> None:
        self.frame_len = frame_len
        self._buf = np.zeros(0, dtype=np.int16)
        self.samples_out = 0  # samples emitted as frames so far

    def push(self, pcm: np.ndarray) -> list[tuple[int, np.ndarray]]:
        pcm = to_int16(np.asarray(pcm).reshape(-1))
        self._buf = np.concatenate([self._buf, pcm]) if self._buf.size else pcm
        out = []
        n = self._buf.size // self.frame_len
        for i in range(n):
            out.append((self.samples_out, self._buf[i * self.frame_len : (i + 1) * self.frame_len]))
            self.samples_out += self.frame_len
        self._buf = self._buf[n * self.frame_len :].copy()
        return out


class Segmenter:
    """Streaming utterance segmenter. Feed int16 (or float) 16 kHz mono chunks; get `VadEvent`s back."""

    def __init__(self, options: VadOptions | None = None, *, is_speech=None) -> None:
        self.options = (options or VadOptions()).validate()
        o = self.options
        self.frame_len = SAMPLE_RATE * o.frame_ms // 1000
        self._is_speech = is_speech or _FrameVad(o)
        self._framer = _Framer(self.frame_len)
        self._start_frames = max(1, -(-o.start_ms // o.frame_ms))
        self._end_frames = max(1, -(-o.end_silence_ms // o.frame_ms))
        self._pre_frames = o.pre_roll_ms // o.frame_ms
        self._tail_frames = o.tail_ms // o.frame_ms
        self._max_samples = int(o.max_utterance_s * SAMPLE_RATE)
        self.reset()

    # -- state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget any speech in progress (used while the assistant talks and barge-in is off)."""
        self._history: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=self._pre_frames + self._start_frames
        )
        self._onset: list[tuple[int, np.ndarray]] = []  # consecutive voiced frames before the trigger
        self._speech: list[tuple[int, np.ndarray, bool]] | None = None  # frames since the onset
        self._silence_run = 0
        self._last_voiced_end = 0  # sample index after the last voiced frame

    @property
    def in_speech(self) -> bool:
        return self._speech is not None

    @property
    def stream_time_s(self) -> float:
        return self._framer.samples_out / SAMPLE_RATE

    # -- feeding -------------------------------------------------------------------------------------
    def feed(self, pcm: np.ndarray) -> list[VadEvent]:
        events: list[VadEvent] = []
        for t, frame in self._framer.push(pcm):
            ev = self._frame(t, frame, self._is_speech(frame))
            if ev is not None:
                events.extend(ev)
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an utterance in progress."""
        if self._speech is None:
            return []
        return [self._finish(truncated=False)]

    def _frame(self, t: int, frame: np.ndarray, voiced: bool) -> list[VadEvent] | None:
        if self._speech is None:
            if voiced:
                self._onset.append((t, frame))
                if len(self._onset) >= self._start_frames:
                    pre = list(self._history)[-self._pre_frames :] if self._pre_frames else []
                    self._pre_roll = pre
                    self._speech = [(tt, ff, True) for tt, ff in self._onset]
                    self._speech_start = self._onset[0][0]
                    self._progress_at = t + self.frame_len
                    self._last_voiced_end = t + self.frame_len
                    self._silence_run = 0
                    self._onset = []
                    return [SpeechStarted(self._speech_start / SAMPLE_RATE)]
            else:
                for item in self._onset:
                    self._history.append(item)
                self._onset = []
                self._history.append((t, frame))
            return None

        if t + self.frame_len - self._speech_start > self._max_samples:
            cut = self._finish(truncated=True)  # this frame would go over: it may start the next utterance
            return [cut] + (self._frame(t, frame, voiced) or [])
        self._speech.append((t, frame, voiced))
        if voiced:
            self._silence_run = 0
            self._last_voiced_end = t + self.frame_len
        else:
            self._silence_run += 1
        if self._silence_run >= self._end_frames:
            return [self._finish(truncated=False)]
        if self._silence_run == max(self._tail_frames, 1):  # the tail is complete: the audio is final
            end = self._last_voiced_end
            if self._voiced_ms(end) >= self.options.min_speech_ms:
                return [SpeechPaused(self._assemble(end), self._speech_start / SAMPLE_RATE, end / SAMPLE_RATE)]
        now = t + self.frame_len
        step = self.options.progress_ms * SAMPLE_RATE // 1000
        if step and voiced and now - self._progress_at >= step:
            self._progress_at = now
            return [SpeechProgress(self._assemble(now), self._speech_start / SAMPLE_RATE, now / SAMPLE_RATE)]
        return None

    def _voiced_ms(self, end: int) -> float:
        assert self._speech is not None
        return sum(self.frame_len for tt, _, v in self._speech if v and tt < end) * 1000 / SAMPLE_RATE

    def _assemble(self, end: int) -> np.ndarray:
        """pre-roll + speech frames before `end` + up to tail_ms of the frames after it."""
        assert self._speech is not None
        frames = [f for tt, f, _ in self._speech if tt < end]
        tail = [f for tt, f, _ in self._speech if tt >= end][: self._tail_frames]
        pre = [f for _, f in self._pre_roll]
        return to_float32(np.concatenate(pre + frames + tail))

    def _finish(self, *, truncated: bool) -> VadEvent:
        assert self._speech is not None
        o = self.options
        start = self._speech_start
        end = self._speech[-1][0] + self.frame_len if truncated else self._last_voiced_end
        audio = self._assemble(end)
        voiced_ms = self._voiced_ms(end)
        audio_start = self._pre_roll[0][0] if self._pre_roll else start
        speech_frames = self._speech
        # the frames after the end stay in history as pre-roll for a following utterance
        self.reset()
        for tt, f, _ in speech_frames[-self._history.maxlen :] if self._history.maxlen else []:
            self._history.append((tt, f))
        if voiced_ms < o.min_speech_ms:
            return SpeechDiscarded(start / SAMPLE_RATE, end / SAMPLE_RATE, f"{voiced_ms:.0f} ms of speech")
        return Utterance(
            audio=audio,
            start_s=start / SAMPLE_RATE,
            end_s=end / SAMPLE_RATE,
            audio_start_s=audio_start / SAMPLE_RATE,
            truncated=truncated,
        )


class PushToTalk:
    """Push-to-talk: audio between `press()` and `release()` is one utterance.

    The reported `start_s` / `end_s` are trimmed to the voiced frames inside the held window when any are
    voiced (so JSON boundaries mean the same as in VAD mode); otherwise the whole window.
    """

    def __init__(self, options: VadOptions | None = None, *, is_speech=None) -> None:
        self.options = (options or VadOptions()).validate()
        self.frame_len = SAMPLE_RATE * self.options.frame_ms // 1000
        self._is_speech = is_speech or _FrameVad(self.options)
        self._framer = _Framer(self.frame_len)
        self._held: list[tuple[int, np.ndarray, bool]] | None = None

    @property
    def in_speech(self) -> bool:
        return self._held is not None

    @property
    def stream_time_s(self) -> float:
        return self._framer.samples_out / SAMPLE_RATE

    def reset(self) -> None:
        self._held = None

    def press(self) -> list[VadEvent]:
        if self._held is None:
            self._held = []
            return [SpeechStarted(self.stream_time_s)]
        return []

    def feed(self, pcm: np.ndarray) -> list[VadEvent]:
        for t, frame in self._framer.push(pcm):
            if self._held is not None:
                self._held.append((t, frame, self._is_speech(frame)))
                if len(self._held) * self.frame_len >= self.options.max_utterance_s * SAMPLE_RATE:
                    return [self._finish(truncated=True)]
        return []

    def release(self) -> list[VadEvent]:
        if self._held is None:
            return []
        return [self._finish(truncated=False)]

    flush = release

    def _finish(self, *, truncated: bool) -> VadEvent:
        held, self._held = self._held or [], None
        if not held:
            now = self.stream_time_s
            return SpeechDiscarded(now, now, "no audio while the key was held")
        voiced = [t for t, _, v in held if v]
        start = voiced[0] if voiced else held[0][0]
        end = voiced[-1] + self.frame_len if voiced else held[-1][0] + self.frame_len
        if not voiced:
            return SpeechDiscarded(start / SAMPLE_RATE, end / SAMPLE_RATE, "no speech while the key was held")
        audio = to_float32(np.concatenate([f for _, f, _ in held]))
        return Utterance(audio, start / SAMPLE_RATE, end / SAMPLE_RATE, held[0][0] / SAMPLE_RATE, truncated)
