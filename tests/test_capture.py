"""Microphone capture through a fake PyAudio: device choice, overflows, a device that vanishes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from llasm.assistant.capture import (
    ArraySource,
    CaptureError,
    DeviceLost,
    EndOfStream,
    FileSource,
    MicrophoneSource,
    NoInputDevice,
    format_devices,
    list_input_devices,
    resolve_device,
)
from llasm.assistant.handsfree import DeviceStatus, Listener, StreamEnded
from llasm.assistant.vad import Utterance
from test_handsfree_fakes import SR, FakePyAudioModule, conversation


def test_list_and_resolve_devices():
    fake = FakePyAudioModule()
    devices = list_input_devices(fake)
    assert [d.name for d in devices] == ["Built-in Mic", "USB Headset"]  # the output-only device is left out
    assert devices[0].is_default
    assert resolve_device(None, devices).index == 0
    assert resolve_device("1", devices).name == "USB Headset"
    assert resolve_device(1, devices).name == "USB Headset"
    assert resolve_device("usb", devices).index == 1
    assert "USB Headset" in format_devices(devices)
    for spec in ("7", "webcam"):
        with pytest.raises(NoInputDevice, match="--list-devices"):
            resolve_device(spec, devices)
    with pytest.raises(NoInputDevice, match="ambiguous"):
        resolve_device("t", devices)
    with pytest.raises(NoInputDevice, match="--list-devices"):
        resolve_device(None, [])


def test_microphone_delivers_int16_chunks_and_counts_overflows():
    audio = (np.sin(np.arange(SR) * 2 * np.pi * 440 / SR) * 8000).astype(np.int16)
    fake = FakePyAudioModule(audio=audio, overflow_every=5)
    mic = MicrophoneSource("USB", pyaudio_module=fake)
    mic.open()
    try:
        assert mic.name == "microphone 1: USB Headset"
        chunks = [mic.read(timeout=1.0) for _ in range(20)]
        assert all(c is not None and c.dtype == np.int16 and c.size == 480 for c in chunks)
        np.testing.assert_array_equal(np.concatenate(chunks[:2]), audio[:960])
        assert mic.overflows >= 3
    finally:
        mic.close()


def test_open_failure_is_one_clear_error():
    mic = MicrophoneSource(None, pyaudio_module=FakePyAudioModule(fail_open=True))
    with pytest.raises(CaptureError, match="cannot open input device 0 .*--list-devices"):
        mic.open()
    with pytest.raises(NoInputDevice, match="--list-devices"):
        MicrophoneSource(None, pyaudio_module=FakePyAudioModule(devices=[("Speakers", 0)])).open()


def test_vanished_device_raises_device_lost():
    fake = FakePyAudioModule(audio=np.zeros(SR, np.int16), vanish_after_s=0.3)
    mic = MicrophoneSource(None, pyaudio_module=fake, stall_s=0.5)
    mic.open()
    with pytest.raises(DeviceLost, match="stopped"):
        for _ in range(200):
            mic.read(timeout=0.05)
    mic.close()


def test_listener_recovers_when_the_device_comes_back(tmp_path):
    speech, truth = conversation(tmp_path, silences=[0.5, 1.0, 1.0, 1.0, 1.0])
    pcm = (speech * 32767).astype(np.int16)
    # first stream dies before the second sentence; the reopened one plays the whole recording
    first = FakePyAudioModule(audio=pcm, vanish_after_s=truth[1][0] - 0.3)
    second = FakePyAudioModule(audio=pcm)
    events, done = [], threading.Event()

    def on_event(ev):
        if isinstance(ev, (DeviceStatus, Utterance)):
            events.append(ev)
        if sum(isinstance(e, Utterance) for e in events) >= 5:
            done.set()

    mic = MicrophoneSource(None, pyaudio_module=first, stall_s=0.5)
    mic.open()
    listener = Listener(
        mic, on_event, reopen=lambda: MicrophoneSource(None, pyaudio_module=second, stall_s=0.5), reconnect_s=0.05
    ).start()
    try:
        assert done.wait(20), events
    finally:
        listener.stop()
    kinds = [type(e).__name__ for e in events]
    lost = kinds.index("DeviceStatus")
    assert events[lost].ok is False and "reopen" in events[lost].message
    assert events[lost + 1].ok is True and "listening again" in events[lost + 1].message
    assert kinds[:lost] == ["Utterance"]  # the first sentence, answered before the loss
    assert kinds[lost + 2 :].count("Utterance") >= 4  # the stream came back and was segmented again
    assert listener.reconnects == 1


def test_file_source_paces_in_real_time(tmp_path):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(int(0.5 * SR), np.float32), SR)
    src = FileSource(path, realtime=True)
    src.open()
    t0 = time.monotonic()
    n = 0
    with pytest.raises(EndOfStream):
        while True:
            if src.read(timeout=0.5) is not None:
                n += 1
    assert 0.45 < time.monotonic() - t0 < 0.8
    assert n == 17  # ceil(8000 / 480)
    with pytest.raises(CaptureError, match="--mic-file"):
        FileSource(tmp_path / "missing.wav")


def test_array_source_end_of_stream_reaches_listener():
    got = []
    ended = threading.Event()

    def on_event(ev):
        got.append(ev)
        if isinstance(ev, StreamEnded):
            ended.set()

    Listener(ArraySource(np.zeros(SR, np.int16), realtime=False), on_event).start()
    assert ended.wait(5)
    assert not any(isinstance(e, Utterance) for e in got)
