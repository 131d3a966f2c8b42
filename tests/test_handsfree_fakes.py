"""Fakes shared by the hands-free tests: an engine, a PyAudio module, espeak-ng speech with known timing.

(Named test_*.py so it stays with the hands-free tests; it holds helpers and no tests.)
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SR = 16000


# -- engine ----------------------------------------------------------------------------------------
@dataclass
class Heard:
    text: str


@dataclass
class Token:
    text: str


@dataclass
class Done:
    answer: str
    timings: dict = field(default_factory=dict)
    stop_reason: str = "eos"


class FakeEngine:
    """Answers 'You said N.N seconds.' for audio and echoes text, token by token, honouring `cancel`."""

    def __init__(self, token_delay: float = 0.0, heard: bool = True, stop_reason: str = "eos") -> None:
        self.token_delay = token_delay
        self.stop_reason = stop_reason  # what every Done says (the real engine's "loop": the repetition guard)
        self.heard = heard
        self.calls: list[dict] = []
        self.chats = 0

    def new_chat(self) -> None:
        self.chats += 1

    def respond(self, audio=None, text=None, transcribe=False, options=None, cancel=None):
        self.calls.append({"audio": audio, "text": text, "options": options})
        t0 = time.perf_counter()
        if audio is not None:
            secs = audio.size / SR
            if self.heard:
                yield Heard(f"{secs:.1f} seconds of speech")
            answer = f"You said **{secs:.1f}** seconds. That is all."
        else:
            answer = f"Echo: {text}. Done here."
        words = answer.split(" ")
        out = []
        first = None
        for i, w in enumerate(words):
            if cancel is not None and cancel.is_set():
                break
            if self.token_delay:
                time.sleep(self.token_delay)
            tok = w if i == 0 else " " + w
            first = first or time.perf_counter()
            out.append(tok)
            yield Token(tok)
        ms = (time.perf_counter() - t0) * 1000
        yield Done(
            "".join(out),
            {
                "encoder_ms": 1.0, "adaptor_ms": 0.5, "prefill_ms": 2.0,
                "ttft_ms": round(((first or time.perf_counter()) - t0) * 1000, 1),
                "decode_tokens_per_s": 100.0,
                "audio_s": round(audio.size / SR, 3) if audio is not None else 0.0,
                "total_ms": ms,
            },
            self.stop_reason,
        )


# -- PyAudio ---------------------------------------------------------------------------------------
class FakeStream:
    def __init__(self, module, callback, frames, audio, vanish_after_s, overflow_every):
        self.module, self.callback, self.frames = module, callback, frames
        self.audio, self.vanish_after_s, self.overflow_every = audio, vanish_after_s, overflow_every
        self.active = False
        self._stop = threading.Event()
        self.written: list[bytes] = []

    def start_stream(self):
        self.active = True
        if self.callback is not None:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        pos, n = 0, 0
        while not self._stop.is_set():
            if self.vanish_after_s is not None and pos >= self.vanish_after_s * SR:
                self.active = False  # the device disappears: no more callbacks, stream inactive
                return
            chunk = self.audio[pos : pos + self.frames] if self.audio is not None else np.zeros(0, np.int16)
            if chunk.size < self.frames:
                chunk = np.concatenate([chunk, np.zeros(self.frames - chunk.size, np.int16)])
            n += 1
            flags = self.module.paInputOverflow if self.overflow_every and n % self.overflow_every == 0 else 0
            self.callback(chunk.tobytes(), self.frames, {}, flags)
            pos += self.frames
            time.sleep(0.001)

    def is_active(self):
        return self.active

    def stop_stream(self):
        self._stop.set()
        self.active = False

    def close(self):
        self._stop.set()

    def write(self, data):
        self.written.append(data)


class FakePyAudioModule:
    """Stands in for the `pyaudio` module: devices, callback input streams, output streams."""

    paInt16 = 8
    paContinue = 0
    paInputOverflow = 2

    def __init__(self, devices=(("Built-in Mic", 2), ("USB Headset", 1), ("Speakers", 0)), audio=None,
                 vanish_after_s=None, overflow_every=0, fail_open=False):
        self.devices = list(devices)
        self.audio = audio
        self.vanish_after_s = vanish_after_s
        self.overflow_every = overflow_every
        self.fail_open = fail_open
        self.streams: list[FakeStream] = []
        module = self

        class PyAudio:
            def get_device_count(self):
                return len(module.devices)

            def get_device_info_by_index(self, i):
                name, ch = module.devices[i]
                return {"index": i, "name": name, "maxInputChannels": ch, "defaultSampleRate": 48000.0}

            def get_default_input_device_info(self):
                for i, (_, ch) in enumerate(module.devices):
                    if ch:
                        return {"index": i}
                raise OSError("No Default Input Device Available")

            def open(self, format, channels, rate, input=False, output=False, input_device_index=None,
                     output_device_index=None, frames_per_buffer=1024, stream_callback=None):
                if module.fail_open:
                    raise OSError("[Errno -9996] Invalid input device (no default output device)")
                s = FakeStream(module, stream_callback, frames_per_buffer, module.audio, module.vanish_after_s,
                               module.overflow_every)
                module.streams.append(s)
                return s

            def terminate(self):
                pass

        self.PyAudio = PyAudio


# -- speech ----------------------------------------------------------------------------------------
SENTENCES = [
    "What is the capital of France?",
    "Tell me a joke about cats, please.",
    "How far away is the moon from the earth?",
    "Turn on the lights in the kitchen.",
]
SILENCES = [0.8, 1.3, 1.6, 2.0, 1.1]  # before each sentence, and after the last


def espeak(text: str, path: Path) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), "--", text], check=True, capture_output=True)
    from llasm.assistant.audio import load_audio

    return load_audio(str(path))


def speech_extent(clip: np.ndarray, thresh: float = 0.01) -> tuple[float, float]:
    idx = np.nonzero(np.abs(clip) > thresh)[0]
    return idx[0] / SR, (idx[-1] + 1) / SR


def conversation(tmp_path: Path, sentences=SENTENCES, silences=SILENCES, noise=0.001, seed=0):
    """Sentences separated by known silences, light noise; returns (audio float32, [(start_s, end_s)])."""
    parts, truth, t = [], [], 0.0
    for i, s in enumerate(silences):
        parts.append(np.zeros(int(s * SR), np.float32))
        t += s
        if i < len(sentences):
            clip = espeak(sentences[i], tmp_path / f"s{i}.wav")
            a, b = speech_extent(clip)
            truth.append((t + a, t + b))
            parts.append(clip)
            t += clip.size / SR
    audio = np.concatenate(parts)
    audio = audio + np.random.default_rng(seed).normal(0, noise, audio.size).astype(np.float32)
    return audio.astype(np.float32), truth
