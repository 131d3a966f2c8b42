"""Audio sources for the hands-free loop: a microphone, a file replayed in real time, or an array.

Every source yields 16 kHz mono int16 chunks from `read()`, so the same VAD code runs on all of them.

- `MicrophoneSource`: a PyAudio *callback* stream. The callback only copies the bytes into a queue and
  counts overflows; all work happens in the reader. A stream that stops delivering audio (device
  unplugged, driver gone) raises `DeviceLost` from `read()`, and the caller reopens it.
- `FileSource` / `ArraySource`: the same chunks from a recording, paced in real time (or as fast as
  possible for tests).

PyAudio prints ALSA/JACK chatter on stderr while it scans devices; `quiet_stderr()` silences file
descriptor 2 around that.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from llasm.assistant.vad import SAMPLE_RATE, to_int16

CHUNK_MS = 30
LIST_DEVICES_HINT = "run `llasm-assistant --list-devices` to see the input devices and pick one with --input-device"


class CaptureError(RuntimeError):
    """The audio input cannot be used; the message says why and what to do."""


class NoInputDevice(CaptureError):
    pass


class DeviceLost(CaptureError):
    """The input stream stopped delivering audio mid-stream."""


class EndOfStream(Exception):
    """A finite source (a file) has delivered all its audio."""


class AudioSource(Protocol):
    name: str
    overflows: int

    def open(self) -> None: ...

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        """The next int16 chunk, None when none arrived within `timeout`; raises EndOfStream / DeviceLost."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C libraries write there directly)."""
    fd = 2  # C libraries write to the descriptor, whatever Python's sys.stderr is
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


# --------------------------------------------------------------------------------------------------
# devices


@dataclass
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool = False


def _pyaudio_module() -> Any:
    try:
        import pyaudio
    except ImportError as e:  # pragma: no cover - pyaudio is a base dependency
        raise CaptureError(
            f"PyAudio is not importable ({e}); install PortAudio (apt-get install portaudio19-dev) and pyaudio"
        ) from None
    return pyaudio


def open_pyaudio(pyaudio_module: Any = None) -> Any:
    pa_mod = pyaudio_module or _pyaudio_module()
    with quiet_stderr():
        return pa_mod.PyAudio()


def list_input_devices(pyaudio_module: Any = None) -> list[InputDevice]:
    with quiet_stderr():
        return _list_input_devices(pyaudio_module)


def _list_input_devices(pyaudio_module: Any) -> list[InputDevice]:
    pa = open_pyaudio(pyaudio_module)
    try:
        try:
            default = pa.get_default_input_device_info()["index"]
        except (OSError, KeyError):
            default = None
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                out.append(
                    InputDevice(
                        index=i,
                        name=str(info.get("name", f"device {i}")),
                        channels=int(info["maxInputChannels"]),
                        default_rate=float(info.get("defaultSampleRate", 0.0)),
                        is_default=(i == default),
                    )
                )
        return out
    finally:
        pa.terminate()


def format_devices(devices: list[InputDevice]) -> str:
    if not devices:
        return "no audio input devices found (is a microphone connected, and PortAudio able to see it?)"
    lines = ["input devices (use --input-device INDEX or a part of the NAME):"]
    for d in devices:
        mark = "*" if d.is_default else " "
        lines.append(f" {mark}{d.index:3d}  {d.name}  ({d.channels} ch, {d.default_rate:.0f} Hz)")
    return "\n".join(lines)


def resolve_device(spec: int | str | None, devices: list[InputDevice]) -> InputDevice:
    """Pick a device by index, exact name, or a case-insensitive part of its name; None: the default."""
    if not devices:
        raise NoInputDevice(f"no audio input device found; {LIST_DEVICES_HINT}")
    if spec is None or spec == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    text = str(spec).strip()
    if text.isdigit():
        for d in devices:
            if d.index == int(text):
                return d
        raise NoInputDevice(f"no input device with index {text}; {LIST_DEVICES_HINT}")
    exact = [d for d in devices if d.name == text]
    if exact:
        return exact[0]
    part = [d for d in devices if text.lower() in d.name.lower()]
    if len(part) == 1:
        return part[0]
    if len(part) > 1:
        names = ", ".join(f"{d.index}: {d.name}" for d in part)
        raise NoInputDevice(f"input device {text!r} is ambiguous ({names}); pass its index; {LIST_DEVICES_HINT}")
    raise NoInputDevice(f"no input device matches {text!r}; {LIST_DEVICES_HINT}")


# --------------------------------------------------------------------------------------------------
# sources


class MicrophoneSource:
    """PyAudio callback stream at 16 kHz mono int16; the callback only enqueues."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        chunk_ms: int = CHUNK_MS,
        stall_s: float = 2.0,
        max_queue: int = 1000,
        pyaudio_module: Any = None,
    ) -> None:
        self.device_spec = device
        self.chunk = SAMPLE_RATE * chunk_ms // 1000
        self.stall_s = stall_s
        self.overflows = 0  # PortAudio input overflows + chunks dropped because the queue was full
        self.name = "microphone"
        self._pa_mod = pyaudio_module
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max_queue)
        self._pa: Any = None
        self._stream: Any = None
        self._last_data = 0.0
        self._lock = threading.Lock()

    def _callback(self, in_data: bytes, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
        if status & self._overflow_flag:
            self.overflows += 1
        try:
            self._queue.put_nowait(in_data)
        except queue.Full:
            self.overflows += 1
        return (None, self._continue)

    def open(self) -> None:
        pa_mod = self._pa_mod or _pyaudio_module()
        self._overflow_flag = int(getattr(pa_mod, "paInputOverflow", 2))
        self._continue = getattr(pa_mod, "paContinue", 0)
        devices = list_input_devices(pa_mod)
        dev = resolve_device(self.device_spec, devices)
        self.name = f"microphone {dev.index}: {dev.name}"
        pa = open_pyaudio(pa_mod)
        try:
            with quiet_stderr():
                stream = pa.open(
                    format=pa_mod.paInt16,
                    channels=1,
                    rate=SAMPLE_RATE,
                    input=True,
                    input_device_index=dev.index,
                    frames_per_buffer=self.chunk,
                    stream_callback=self._callback,
                )
                stream.start_stream()
        except Exception as e:
            with quiet_stderr():
                pa.terminate()
            raise CaptureError(
                f"cannot open input device {dev.index} ({dev.name}) at 16 kHz mono: {e}; {LIST_DEVICES_HINT}"
            ) from None
        with self._lock:
            self._pa, self._stream = pa, stream
        self._last_data = time.monotonic()

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        if self._stream is None:
            raise DeviceLost(f"{self.name} is not open")
        try:
            data = self._queue.get(timeout=timeout)
        except queue.Empty:
            data = None
        now = time.monotonic()
        if data is not None:
            self._last_data = now
            return np.frombuffer(data, dtype=np.int16).copy()
        try:
            active = bool(self._stream.is_active())
        except Exception:
            active = False
        if not active:
            raise DeviceLost(f"{self.name} stopped (device disconnected?)")
        if now - self._last_data > self.stall_s:
            raise DeviceLost(f"{self.name} delivered no audio for {now - self._last_data:.1f} s")
        return None

    def close(self) -> None:
        with self._lock:
            stream, pa = self._stream, self._pa
            self._stream = self._pa = None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.stop_stream()
            with contextlib.suppress(Exception):
                stream.close()
        if pa is not None:
            with contextlib.suppress(Exception), quiet_stderr():
                pa.terminate()


class ArraySource:
    """Chunks of an in-memory recording, paced in real time when `realtime` (a fake microphone)."""

    def __init__(
        self,
        audio: np.ndarray,
        *,
        realtime: bool = True,
        chunk_ms: int = CHUNK_MS,
        name: str = "array",
        speed: float = 1.0,
    ) -> None:
        self.audio = to_int16(np.asarray(audio).reshape(-1))
        self.realtime = realtime
        self.chunk = SAMPLE_RATE * chunk_ms // 1000
        self.speed = speed
        self.name = name
        self.overflows = 0
        self._pos = 0
        self._t0: float | None = None

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def open(self) -> None:
        self._t0 = time.monotonic()

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        if self._t0 is None:
            self.open()
        if self._pos >= self.audio.size:
            raise EndOfStream(self.name)
        if self.realtime:
            due = self._t0 + (self._pos + self.chunk) / SAMPLE_RATE / self.speed  # type: ignore[operator]
            wait = due - time.monotonic()
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        out = self.audio[self._pos : self._pos + self.chunk]
        self._pos += self.chunk
        return out

    def close(self) -> None:
        self._t0 = None


class FileSource(ArraySource):
    """A recording replayed through the capture path; decoded and resampled to 16 kHz mono."""

    def __init__(self, path: str | Path, *, realtime: bool = True, chunk_ms: int = CHUNK_MS, speed: float = 1.0):
        from llasm.assistant.audio import AudioError, load_audio

        try:
            audio = load_audio(str(path), max_seconds=None)
        except AudioError as e:
            raise CaptureError(f"--mic-file {path}: {e}") from None
        super().__init__(audio, realtime=realtime, chunk_ms=chunk_ms, name=str(path), speed=speed)
