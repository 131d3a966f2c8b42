"""Hands-free assistant: microphone (or a replayed file) -> VAD -> engine -> printed / spoken / shown reply.

`llasm-assistant --mic` / `--mic-file` / (no input flags: the TUI) run it through `assistant.cli.handsfree_main`,
which starts the TUI (`assistant.tui.app`, which imports this module) or `run_headless`. Pieces:

- `Listener`: a thread that reads an `AudioSource`, reports the input level, feeds the VAD segmenter (or
  push-to-talk) and reports speech events; when the device vanishes it says so and reopens it.
- `Responder`: one turn through the engine (`Heard`, `Token`, `Done` events), cancellable, turned into a
  record with the runtime's JSON fields plus `segment_start_s` / `segment_end_s`.
- `run_headless`: `--no-tui` — answers each utterance on stdout (`--json`: one object per utterance).
- the Textual app in `assistant.tui` for everything else.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from llasm.assistant.capture import (
    AudioSource,
    CaptureError,
    DeviceLost,
    EndOfStream,
    FileSource,
    MicrophoneSource,
)
from llasm.assistant.settings import Settings
from llasm.assistant.vad import (
    PushToTalk,
    Segmenter,
    SpeechDiscarded,
    SpeechPaused,
    SpeechProgress,
    SpeechStarted,
    Utterance,
    VadOptions,
    level_dbfs,
)

PROG = "llasm-assistant"


class HandsFreeError(RuntimeError):
    """Bad combination of options or an unusable input; the message names the fix."""


# --------------------------------------------------------------------------------------------------
# the engine, as this module uses it (assistant.engine.Engine satisfies it)


class EngineLike(Protocol):
    def new_chat(self) -> None: ...

    def respond(
        self,
        audio: Any = None,
        text: str | None = None,
        transcribe: bool = False,
        options: Any = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Any]: ...


def event_kind(ev: Any) -> str:
    """'heard', 'token' or 'done' for an engine event (matched by shape, so fakes need not import it)."""
    if hasattr(ev, "answer") and hasattr(ev, "timings"):
        return "done"
    name = type(ev).__name__.lower()
    if name == "heard":
        return "heard"
    if name == "token":
        return "token"
    raise TypeError(f"unexpected engine event {ev!r}")


def generation_options(settings: Settings) -> Any:
    """The engine's `GenerationOptions` built from the settings (None when nothing is set)."""
    values = settings.generation_options()
    if not values:
        return None
    # imported here: the engine module brings llama.cpp and the hearing stack
    from llasm.assistant.engine import GenerationOptions

    known = {f.name for f in dataclasses.fields(GenerationOptions)}
    return GenerationOptions(**{k: v for k, v in values.items() if k in known})


def load_engine(settings: Settings) -> EngineLike:
    from llasm.assistant.engine import Engine

    given = settings.hearing_overrides()
    engine = Engine.load(settings.bundle, n_threads=settings.threads, hearing=given, llm=settings.llm,
                         device=settings.device)
    if engine.can_rescore:
        # The adaptor's hearing: a bundle's hearing section is its one-shot default, where the LLM's help delays
        # the first token; hands-free that help runs while the VAD waits (HearingOptions.for_handsfree).
        tuned = engine.hearing.for_handsfree(given)
        engine.set_n_best(tuned.n_best)
        engine.set_fusion(tuned.fusion)
    if settings.system is not None:
        engine.new_chat(system=settings.system)
    return engine


# --------------------------------------------------------------------------------------------------
# listening


@dataclass
class Level:
    dbfs: float
    overflows: int


@dataclass
class DeviceStatus:
    message: str
    ok: bool  # False: the device is gone and being reopened


@dataclass
class StreamEnded:
    name: str


@dataclass
class PartialHeard:
    """What is heard so far of the utterance being spoken (`Engine.hear_partial` on a `SpeechProgress`)."""

    text: str
    end_s: float


ListenerEvent = Level | DeviceStatus | StreamEnded | SpeechStarted | SpeechDiscarded | Utterance | PartialHeard


class Listener:
    """Capture thread: source -> level + segmenter events, device loss handled by reopening."""

    def __init__(
        self,
        source: AudioSource,
        on_event: Callable[[ListenerEvent], None],
        *,
        vad: VadOptions | None = None,
        ptt: bool = False,
        reopen: Callable[[], AudioSource] | None = None,
        reconnect_s: float = 1.0,
        detector: Any = None,
        prepare: Callable[[Any], None] | None = None,
        hear: Callable[[Any], str] | None = None,
    ) -> None:
        self.source = source
        self.on_event = on_event
        self.ptt = ptt
        self.detector = detector or (PushToTalk(vad) if ptt else Segmenter(vad))
        self.reopen = reopen
        self.reconnect_s = reconnect_s
        self.muted = False  # microphone toggled off: audio is read and dropped
        self.ignore = False  # the assistant is speaking and barge-in is off
        self.reconnects = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        # SpeechPaused -> prepare(audio) and SpeechProgress -> hear(audio) (then a PartialHeard event) on a worker
        # thread, the newest job only: an older one is stale once more audio has come (Engine.prepare, hear_partial)
        self.prepare = prepare
        self.hear = hear
        self._prep_cv = threading.Lock()
        self._prep_next: Any = None
        self._prep_thread: threading.Thread | None = None

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def in_speech(self) -> bool:
        return bool(self.detector.in_speech)

    def press(self) -> None:
        """Push-to-talk: start an utterance."""
        with self._lock:
            events = self.detector.press() if self.ptt else []
        self._emit(events)

    def release(self) -> None:
        """Push-to-talk: end the utterance and send it."""
        with self._lock:
            events = self.detector.release() if self.ptt else []
        self._emit(events)

    def _emit(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, SpeechPaused) and self.prepare is not None:
                self._prepare_soon(("prepare", ev))
            elif isinstance(ev, SpeechProgress):
                if self.hear is not None:
                    self._prepare_soon(("hear", ev))
                continue  # the audio so far is for the hearing, not for the listener's consumer
            elif isinstance(ev, (Utterance, SpeechDiscarded)):
                self._drop_pending("hear")  # the utterance is over: a view of it so far is stale work
            self.on_event(ev)

    def _drop_pending(self, kind: str) -> None:
        with self._prep_cv:
            if self._prep_next is not None and self._prep_next[0] == kind:
                self._prep_next = None

    def _prepare_soon(self, job: tuple[str, Any]) -> None:
        with self._prep_cv:
            self._prep_next = job
            if self._prep_thread is None:
                self._prep_thread = threading.Thread(target=self._prepare_loop, name="prepare", daemon=True)
                self._prep_thread.start()

    def _prepare_loop(self) -> None:
        while True:
            with self._prep_cv:
                job, self._prep_next = self._prep_next, None
                if job is None:
                    self._prep_thread = None
                    return
            kind, ev = job
            try:
                if kind == "prepare":
                    self.prepare(ev.audio)  # type: ignore[misc]
                else:
                    text = self.hear(ev.audio)  # type: ignore[misc]
                    if text and self.detector.in_speech:
                        self.on_event(PartialHeard(text, ev.end_s))
            except Exception:  # noqa: BLE001 - the turn hears again and reports its own one-line error
                pass

    def _run(self) -> None:
        src: AudioSource | None = self.source
        while not self._stop.is_set():
            if src is None:
                src = self._reopen()
                if src is None:
                    continue
            try:
                chunk = src.read(timeout=0.2)
            except EndOfStream:
                with self._lock:
                    events = self.detector.flush()
                self._emit(events)
                self.on_event(StreamEnded(src.name))
                src.close()
                return
            except DeviceLost as e:
                src.close()
                src = None
                self.on_event(DeviceStatus(f"{e}; trying to reopen it", ok=False))
                continue
            if chunk is None:
                continue
            silent = self.muted
            self.on_event(Level(-100.0 if silent else level_dbfs(chunk), src.overflows))
            with self._lock:
                if silent or self.ignore:
                    # keep the stream clock running, but hear nothing
                    self.detector.feed(chunk)
                    self.detector.reset()
                    events = []
                else:
                    events = self.detector.feed(chunk)
            self._emit(events)
        if src is not None:
            src.close()

    def _reopen(self) -> AudioSource | None:
        if self.reopen is None:
            self._stop.set()
            self.on_event(StreamEnded("input"))
            return None
        if self._stop.wait(self.reconnect_s):
            return None
        try:
            src = self.reopen()
            src.open()
        except CaptureError:
            return None
        self.reconnects += 1
        self.source = src
        self.on_event(DeviceStatus(f"listening again on {src.name}", ok=True))
        return src


# --------------------------------------------------------------------------------------------------
# answering


@dataclass
class TurnResult:
    answer: str
    heard: str | None
    timings: dict[str, Any]
    cancelled: bool
    segment: Utterance | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None  # the engine's Done.stop_reason (eos, stop, length, loop, cancelled, ...)

    def record(self, input_name: str) -> dict[str, Any]:
        """The runtime's JSON fields (`input`, `answer`, timings, `heard`, `stop_reason`) plus the segment
        bounds."""
        rec: dict[str, Any] = {"input": input_name, "answer": self.answer}
        rec.update(self.timings)
        rec["heard"] = self.heard
        if self.stop_reason is not None:
            rec["stop_reason"] = self.stop_reason
        if self.segment is not None:
            rec["segment_start_s"] = round(self.segment.start_s, 3)
            rec["segment_end_s"] = round(self.segment.end_s, 3)
            if self.segment.truncated:
                rec["truncated"] = True
        if self.cancelled:
            rec["cancelled"] = True
        rec.update(self.extra)
        return rec


class Responder:
    """Runs turns through the engine one at a time; `cancel()` stops the current one (Esc, barge-in)."""

    def __init__(self, engine: EngineLike, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.options = generation_options(settings)
        self._cancel = threading.Event()
        self.busy = False

    def cancel(self) -> None:
        self._cancel.set()

    def new_chat(self) -> None:
        if self.settings.system is not None:
            self.engine.new_chat(system=self.settings.system)
        else:
            self.engine.new_chat()

    def run(
        self,
        *,
        segment: Utterance | None = None,
        text: str | None = None,
        on_heard: Callable[[str], None] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> TurnResult:
        self._cancel = cancel = threading.Event()
        self.busy = True
        heard: str | None = None
        parts: list[str] = []
        t0 = time.perf_counter()
        first: float | None = None
        try:
            events = self.engine.respond(
                audio=segment.audio if segment is not None else None,
                text=text,
                transcribe=self.settings.transcribe,
                options=self.options,
                cancel=cancel,
            )
            for ev in events:
                kind = event_kind(ev)
                if kind == "heard":
                    heard = ev.text
                    if on_heard:
                        on_heard(ev.text)
                elif kind == "token":
                    if first is None:
                        first = time.perf_counter()
                    parts.append(ev.text)
                    if on_token:
                        on_token(ev.text)
                else:
                    timings = dict(ev.timings or {})
                    if first is not None:
                        timings.setdefault("turn_first_token_ms", round((first - t0) * 1000, 1))
                    timings.setdefault("turn_ms", round((time.perf_counter() - t0) * 1000, 1))
                    heard = heard if heard is not None else getattr(ev, "heard", None)
                    cancelled = bool(getattr(ev, "cancelled", False)) or cancel.is_set()
                    return TurnResult(ev.answer, heard, timings, cancelled, segment, text,
                                      stop_reason=getattr(ev, "stop_reason", None))
            answer = "".join(parts)
            return TurnResult(answer, heard, {"turn_ms": round((time.perf_counter() - t0) * 1000, 1)},
                              True, segment, text)
        except Exception as e:  # the engine's errors are one-line messages (too-short clip, full context...)
            return TurnResult("".join(parts), heard, {}, cancel.is_set(), segment, text,
                              extra={"error": str(e) or type(e).__name__})
        finally:
            self.busy = False


# --------------------------------------------------------------------------------------------------
# sources from settings


def make_source(settings: Settings, *, pyaudio_module: Any = None) -> tuple[AudioSource, Callable[[], AudioSource] | None]:
    """The configured source (not yet opened) and a factory that reopens it after a device loss."""
    if settings.mic_file:
        return FileSource(settings.mic_file, realtime=settings.realtime), None
    if settings.mic:
        def factory() -> AudioSource:
            return MicrophoneSource(settings.input_device, pyaudio_module=pyaudio_module)

        return factory(), factory
    raise HandsFreeError("no audio input chosen; pass --mic or --mic-file PATH")


def make_speech(settings: Settings, on_state: Callable[[bool], None] | None = None) -> Any:
    """Spoken replies through hibari and the default output device (opened now, so a missing one fails early)."""
    from llasm.assistant.tts import HibariVoice, SpeechOutput

    speech = SpeechOutput(HibariVoice(settings.voice), on_state=on_state)
    try:
        speech.player.open()
    except Exception:
        speech.close()
        raise
    return speech


# --------------------------------------------------------------------------------------------------
# headless


def run_headless(
    engine: EngineLike,
    source: AudioSource,
    settings: Settings,
    *,
    reopen: Callable[[], AudioSource] | None = None,
    speech: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    key_presses: Iterator[Any] | None = None,
) -> int:
    """Answer each utterance on `out` until the stream ends (file) or Ctrl-C (microphone)."""
    out = out or sys.stdout
    err = err or sys.stderr
    events: queue.Queue[ListenerEvent] = queue.Queue()
    responder = Responder(engine, settings)
    barge_in = settings.barge_in and speech is not None

    def on_event(ev: ListenerEvent) -> None:
        if isinstance(ev, Level):
            return
        if isinstance(ev, SpeechStarted) and barge_in and (responder.busy or speech.speaking):
            responder.cancel()
            speech.stop()
        events.put(ev)

    listener = Listener(source, on_event, vad=settings.vad, ptt=settings.ptt, reopen=reopen,
                        prepare=getattr(engine, "prepare", None), hear=getattr(engine, "hear_partial", None))
    if speech is not None:
        def on_speaking(active: bool) -> None:
            listener.ignore = active and not settings.barge_in

        speech.on_state = on_speaking

    print(f"{PROG}: listening on {source.name} (Ctrl-C to stop)", file=err, flush=True)
    if settings.ptt:
        print(f"{PROG}: push-to-talk: press Enter to start talking, Enter again to send", file=err, flush=True)
        _start_ptt_keys(listener, key_presses)
    listener.start()
    count = 0
    try:
        while True:
            ev = events.get()
            if isinstance(ev, DeviceStatus):
                print(f"{PROG}: {ev.message}", file=err, flush=True)
            elif isinstance(ev, StreamEnded):
                break
            elif isinstance(ev, Utterance):
                count += 1
                result = _answer(responder, ev, settings, speech, out)
                if "error" in result.extra:
                    print(f"{PROG}: utterance {count}: {result.extra['error']}", file=err, flush=True)
                if settings.json:
                    rec = result.record(source.name)
                    rec["utterance"] = count
                    rec["llm"] = getattr(engine, "llm_name", None)  # which LLM answered
                    print(json.dumps(rec, ensure_ascii=False), file=out, flush=True)
        if speech is not None:
            speech.wait()
        return 0
    except KeyboardInterrupt:
        responder.cancel()
        return 0
    finally:
        listener.stop()
        if speech is not None:
            speech.close()


def _answer(responder: Responder, seg: Utterance, settings: Settings, speech: Any, out: TextIO) -> TurnResult:
    stream_text = not settings.json

    def on_token(tok: str) -> None:
        if stream_text:
            out.write(tok)
            out.flush()
        if speech is not None:
            speech.feed(tok)

    result = responder.run(segment=seg, on_token=on_token)
    if speech is not None and not result.cancelled:
        speech.finish()
    if stream_text:
        out.write("\n")
        out.flush()
    if speech is not None:
        speech.wait()
    return result


def _start_ptt_keys(listener: Listener, key_presses: Iterator[Any] | None) -> None:
    presses = key_presses if key_presses is not None else iter(sys.stdin.readline, "")

    def run() -> None:
        talking = False
        for _ in presses:
            talking = not talking
            (listener.press if talking else listener.release)()

    threading.Thread(target=run, name="ptt-keys", daemon=True).start()
