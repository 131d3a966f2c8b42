"""Spoken replies: hibari TTS (24 kHz) played through a PyAudio output stream, sentence by sentence.

`SpeechOutput.feed()` takes the reply's tokens as they stream; each finished sentence is synthesized and
played by one background thread while the model keeps generating, so speech starts after the first
sentence rather than after the whole answer. `stop()` is barge-in: it drops the queued sentences and cuts
the playing one within one write block (about 50 ms).

Only the voice bundled in the hibari wheel (or one already in hibari's cache) is used: nothing downloads.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from llasm.assistant.capture import CaptureError, open_pyaudio, quiet_stderr

TTS_SAMPLE_RATE = 24000
BLOCK = 1200  # samples per write: 50 ms at 24 kHz, the barge-in reaction time
_SENTENCE_END = re.compile(r"([.!?…:;]+[\"')\]]*\s+|\n+)")
_MD = re.compile(r"[*_`#>|~]+|\[([^\]]*)\]\([^)]*\)")


class TtsError(RuntimeError):
    """Speech output cannot be used; the message says why and what to do."""


def speakable(text: str) -> str:
    """Strip markdown so the voice does not read symbols aloud."""
    text = _MD.sub(lambda m: m.group(1) or " ", text)
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(buffer: str) -> tuple[list[str], str]:
    """Complete sentences in `buffer` and the unfinished rest."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(buffer):
        sentence = buffer[start : m.end()].strip()
        if sentence:
            out.append(sentence)
        start = m.end()
    return out, buffer[start:]


class HibariVoice:
    """hibari text-to-speech with a local voice; `__call__(text)` returns float32 samples at 24 kHz."""

    sample_rate = TTS_SAMPLE_RATE

    def __init__(self, voice: str | None = None) -> None:
        try:
            import hibari
            from hibari.voices import DEFAULT, voice_path
        except ImportError as e:
            raise TtsError(f"--speak needs the hibari-tts package ({e}); pip install hibari-tts") from None
        name = voice or DEFAULT
        try:
            path = voice_path(name, download_missing=False)
        except Exception as e:
            raise TtsError(f"hibari voice {name!r} is not available offline ({e}); use the bundled voice {DEFAULT!r}") from None
        if not path:
            raise TtsError(f"hibari voice {name!r} is not installed; use the bundled voice {DEFAULT!r}")
        self._tts = hibari.Hibari(voice=name, model=str(path))
        self.sample_rate = int(getattr(hibari, "SAMPLE_RATE", TTS_SAMPLE_RATE))

    def __call__(self, text: str) -> np.ndarray:
        return np.asarray(self._tts(text), dtype=np.float32)


class PyAudioPlayer:
    """Blocking writes to a PyAudio output stream in small blocks so playback can be cut short."""

    def __init__(self, sample_rate: int = TTS_SAMPLE_RATE, *, device: int | None = None, pyaudio_module: Any = None):
        self.sample_rate = sample_rate
        self.device = device
        self._pa_mod = pyaudio_module
        self._pa: Any = None
        self._stream: Any = None

    def open(self) -> None:
        if self._stream is not None:
            return
        if self._pa_mod is None:
            import pyaudio

            self._pa_mod = pyaudio
        pa = open_pyaudio(self._pa_mod)
        try:
            with quiet_stderr():
                self._stream = pa.open(
                    format=self._pa_mod.paInt16,
                    channels=1,
                    rate=self.sample_rate,
                    output=True,
                    output_device_index=self.device,
                    frames_per_buffer=BLOCK,
                )
        except Exception as e:
            pa.terminate()
            raise TtsError(f"cannot open an audio output device for --speak: {e}; connect speakers or drop --speak") from None
        self._pa = pa

    def play(self, audio: np.ndarray, cancelled: Callable[[], bool]) -> bool:
        """Play `audio`; returns False when `cancelled()` turned true and cut it short."""
        self.open()
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        for i in range(0, pcm.size, BLOCK):
            if cancelled():
                return False
            self._stream.write(pcm[i : i + BLOCK].tobytes())
        return True

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except Exception:
                pass
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


class SpeechOutput:
    """Speaks a streamed reply sentence by sentence in a background thread; `stop()` for barge-in."""

    def __init__(
        self,
        voice: Callable[[str], np.ndarray] | None = None,
        player: Any = None,
        *,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.voice = voice or HibariVoice()
        self.player = player or PyAudioPlayer(int(getattr(self.voice, "sample_rate", TTS_SAMPLE_RATE)))
        self.on_state = on_state
        self.spoken: list[str] = []  # sentences played to the end (for tests and logs)
        self._buffer = ""
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self._generation = 0  # bumped by stop(): queued or playing sentences of older generations die
        self._pending = 0
        self._lock = threading.Lock()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="tts", daemon=True)
        self._thread.start()

    @property
    def speaking(self) -> bool:
        with self._lock:
            return self._pending > 0

    def feed(self, text: str) -> None:
        self._buffer += text
        sentences, self._buffer = split_sentences(self._buffer)
        for s in sentences:
            self._say(s)

    def finish(self) -> None:
        """The reply is complete: speak what is left in the buffer."""
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            self._say(rest)

    def say(self, text: str) -> None:
        self.feed(text)
        self.finish()

    def _say(self, sentence: str) -> None:
        text = speakable(sentence)
        if not text:
            return
        with self._lock:
            self._pending += 1
            first = self._pending == 1
            gen = self._generation
        if first and self.on_state:
            self.on_state(True)
        self._queue.put((gen, text))

    def stop(self) -> None:
        """Barge-in: drop everything queued and cut the sentence being played."""
        self._buffer = ""
        with self._lock:
            self._generation += 1
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._done_one()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything queued has been spoken (or stopped)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self.speaking:
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self.stop()
        self._queue.put(None)
        self._thread.join(timeout=2)
        self.player.close()

    def _done_one(self) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            idle = self._pending == 0
        if idle and self.on_state:
            self.on_state(False)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            gen, text = item

            def cancelled(gen: int = gen) -> bool:
                return gen != self._generation

            try:
                if not cancelled():
                    audio = self.voice(text)
                    if not cancelled() and self.player.play(audio, cancelled):
                        self.spoken.append(text)
            except (TtsError, CaptureError) as e:
                self.error = str(e)
                self.stop()
            except Exception as e:  # a synthesis failure must not kill the assistant
                self.error = f"speech output failed: {e}"
            finally:
                self._done_one()
