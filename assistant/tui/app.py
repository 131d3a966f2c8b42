"""`AssistantApp`: the hands-free assistant's Textual UI.

Threads: the engine loads and answers in thread workers, the microphone is read by `Listener`'s thread,
speech plays in `SpeechOutput`'s thread; they talk to the UI only through messages and
`call_from_thread`, so the UI never blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llasm.assistant.capture import AudioSource, CaptureError, MicrophoneSource
from llasm.assistant.handsfree import (
    DeviceStatus,
    EngineLike,
    Level,
    Listener,
    PartialHeard,
    Responder,
    StreamEnded,
    TurnResult,
    load_engine,
    make_speech,
)
from llasm.assistant.history import History, HistoryError
from llasm.assistant.settings import Settings
from llasm.assistant.tui.commands import assistant_commands
from llasm.assistant.tui.history_screen import HistoryScreen
from llasm.assistant.tui.level_meter import LevelMeter
from llasm.assistant.tui.message import AssistantMessage, UserMessage
from llasm.assistant.tui.state_indicator import HeardSoFar, StateIndicator
from llasm.assistant.tui.transcript import Transcript
from llasm.assistant.vad import SpeechDiscarded, SpeechStarted, Utterance
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input


class ListenerMessage(Message):
    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class SpeakingChanged(Message):
    def __init__(self, active: bool) -> None:
        super().__init__()
        self.active = active


class AssistantApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "llasm"
    SUB_TITLE = "on-device voice assistant"
    BINDINGS = [
        Binding("ctrl+r", "toggle_mic", "Mic"),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        source: AudioSource | None = None,
        reopen: Callable[[], AudioSource] | None = None,
        engine: EngineLike | None = None,
        engine_factory: Callable[[], EngineLike] | None = None,
        history: History | None = None,
        speech: Any = None,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.source = source
        self.reopen = reopen
        self.engine = engine
        self.engine_factory = engine_factory or (lambda: load_engine(self.settings))
        self._history = history
        self.speech = speech
        self.responder: Responder | None = None
        self.listener: Listener | None = None
        self.chat_id: int | None = None
        self.busy = False
        self.pending: deque[tuple[Utterance | None, str | None]] = deque()
        self.results: list[TurnResult] = []
        self.exit_code = 0
        self._device_lost = False
        self._hearing = False
        self._speaking = False
        if self.settings.theme:
            self.theme = self.settings.theme

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="status-bar"):
            yield StateIndicator(id="state")
            yield LevelMeter(id="level")
        yield Transcript(id="transcript")
        yield HeardSoFar(id="heard")
        hint = "Type a question and press enter"
        hint += " — or just talk" if self.source is not None else " — ctrl+r turns the microphone on"
        yield Input(placeholder=hint, id="prompt")
        yield Footer()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from assistant_commands(self)
        yield from super().get_system_commands(screen)

    # the main screen's widgets (looked up there, so they are found while a modal screen is on top)
    @property
    def transcript(self) -> Transcript:
        return self.screen_stack[0].query_one(Transcript)

    @property
    def state_indicator(self) -> StateIndicator:
        return self.screen_stack[0].query_one(StateIndicator)

    @property
    def heard_so_far(self) -> HeardSoFar:
        return self.screen_stack[0].query_one(HeardSoFar)

    @property
    def level_meter(self) -> LevelMeter:
        return self.screen_stack[0].query_one(LevelMeter)

    @property
    def history(self) -> History | None:
        if self._history is None and self.settings.history:
            try:
                self._history = History()
            except HistoryError as e:
                self.notify(str(e), severity="warning")
                self.settings.history = False
        return self._history

    # -- start-up ------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self.engine is not None:
            self._engine_ready(self.engine)
        else:
            self.state_indicator.state = "loading"
            self._load_engine()

    def on_unmount(self) -> None:
        self._stop_audio()

    def _stop_audio(self) -> None:
        self.action_cancel()
        if self.listener is not None:
            self.listener.stop()
        if self.speech is not None:
            self.speech.close()
            self.speech = None

    @work(thread=True, exclusive=True, group="load")
    def _load_engine(self) -> None:
        try:
            engine = self.engine_factory()
        except Exception as e:
            self.call_from_thread(self._engine_failed, str(e) or type(e).__name__)
            return
        self.call_from_thread(self._engine_ready, engine)

    def _engine_failed(self, message: str) -> None:
        self.state_indicator.state = "error"
        self.notify(f"cannot load the model: {message}", severity="error", timeout=30)
        self.exit_code = 1

    def _engine_ready(self, engine: EngineLike) -> None:
        self.engine = engine
        name = getattr(engine, "llm_name", None)
        if name:  # which LLM answers: the bundle's, or --llm's
            devices = getattr(engine, "devices", None)
            on = f" on {devices.llm}" if devices is not None and devices.llm != "cpu" else ""
            self.sub_title = f"{self.SUB_TITLE} - {name}{on}"
        self.responder = Responder(engine, self.settings)
        if self.settings.speak and self.speech is None:
            self._enable_speech()
        if self.speech is not None:
            self.speech.on_state = lambda active: self.post_message(SpeakingChanged(active))
        if self.source is not None:
            self._start_listener(self.source)
        self._refresh_state()

    def _enable_speech(self) -> bool:
        try:
            self.speech = make_speech(self.settings)
        except Exception as e:
            self.notify(f"spoken replies are off: {e}", severity="warning", timeout=10)
            self.settings.speak = False
            return False
        self.speech.on_state = lambda active: self.post_message(SpeakingChanged(active))
        return True

    def _start_listener(self, source: AudioSource) -> None:
        self.listener = Listener(
            source,
            lambda ev: self.post_message(ListenerMessage(ev)),
            vad=self.settings.vad,
            ptt=self.settings.ptt,
            reopen=self.reopen,
            prepare=self._prepare_audio,
            hear=self._hear_partial,
        ).start()
        self.level_meter.active = True

    def _prepare_audio(self, audio: Any) -> None:
        """Listener thread: encode an utterance whose audio is final while the VAD waits out the silence."""
        prepare = getattr(self.engine, "prepare", None)
        if prepare is not None:
            prepare(audio)

    def _hear_partial(self, audio: Any) -> str:
        """Listener thread: what is heard so far of the utterance being spoken."""
        hear = getattr(self.engine, "hear_partial", None)
        return hear(audio) if hear is not None else ""

    # -- state ---------------------------------------------------------------------------------------
    def _refresh_state(self) -> None:
        if self.engine is None:
            state = "loading" if self.exit_code == 0 else "error"
        elif self._device_lost:
            state = "lost"
        elif self._speaking:
            state = "speaking"
        elif self.busy:
            state = "thinking"
        elif self._hearing:
            state = "hearing"
        elif self.listener is not None and self.listener.running:
            state = "muted" if self.listener.muted else "listening"
        else:
            state = "ready"
        self.state_indicator.state = state

    # -- microphone events ---------------------------------------------------------------------------
    def on_listener_message(self, message: ListenerMessage) -> None:
        if not self.is_running or not self.screen_stack:
            return
        ev = message.event
        if isinstance(ev, Level):
            self.level_meter.level = ev.dbfs
            return
        if isinstance(ev, PartialHeard):
            if self._hearing:
                self.heard_so_far.text = ev.text
            return
        if not isinstance(ev, SpeechStarted):
            self.heard_so_far.text = ""
        if isinstance(ev, SpeechStarted):
            self._hearing = True
            if self.settings.barge_in and (self.busy or self._speaking) and self.speech is not None:
                self.action_cancel()
        elif isinstance(ev, SpeechDiscarded):
            self._hearing = False
        elif isinstance(ev, Utterance):
            self._hearing = False
            self.submit(segment=ev)
        elif isinstance(ev, DeviceStatus):
            self._device_lost = not ev.ok
            self.notify(ev.message, severity="information" if ev.ok else "warning", timeout=6)
        elif isinstance(ev, StreamEnded):
            self._hearing = False
            self.level_meter.active = False
            self.level_meter.level = -100.0
        self._refresh_state()

    def on_speaking_changed(self, message: SpeakingChanged) -> None:
        self._speaking = message.active
        if self.listener is not None:
            self.listener.ignore = message.active and not self.settings.barge_in
        self._refresh_state()

    # -- turns ---------------------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        self.submit(text=text)

    def submit(self, *, segment: Utterance | None = None, text: str | None = None) -> None:
        if self.responder is None:
            self.notify("the model is still loading", severity="warning")
            return
        if self.busy:
            self.pending.append((segment, text))
            return
        self.busy = True
        self._refresh_state()
        self._run_turn(segment, text)

    @work(thread=True, group="respond")
    def _run_turn(self, segment: Utterance | None, text: str | None) -> None:
        assert self.responder is not None
        user, reply = self.call_from_thread(self._begin_turn, segment, text)
        speech = self.speech if self.settings.speak else None

        def on_token(tok: str) -> None:
            self.call_from_thread(reply.add_token, tok)
            if speech is not None:
                speech.feed(tok)

        result = self.responder.run(
            segment=segment, text=text, on_heard=lambda h: self.call_from_thread(user.set_heard, h), on_token=on_token
        )
        if speech is not None and not result.cancelled:
            speech.finish()
        self.call_from_thread(self._end_turn, user, reply, result)

    async def _begin_turn(self, segment: Utterance | None, text: str | None) -> tuple[UserMessage, AssistantMessage]:
        if segment is not None:
            label = f"({segment.duration_s:.1f} s of speech at {segment.start_s:.1f} s)"
            user = await self.transcript.add_user(label, spoken=True)
        else:
            user = await self.transcript.add_user(text or "")
        reply = await self.transcript.add_assistant()
        return user, reply

    async def _end_turn(self, user: UserMessage, reply: AssistantMessage, result: TurnResult) -> None:
        await reply.finish(result.timings, cancelled=result.cancelled, error=result.extra.get("error"))
        self.transcript.scroll_end(animate=False)
        self.results.append(result)
        self._save_turn(user, result)
        self.busy = False
        self._refresh_state()
        if self.pending:
            segment, text = self.pending.popleft()
            self.submit(segment=segment, text=text)

    def _save_turn(self, user: UserMessage, result: TurnResult) -> None:
        history = self.history
        if history is None:
            return
        if self.chat_id is None:
            self.chat_id = history.new_chat()
        history.add_turn(self.chat_id, "user", user.text, spoken=result.segment is not None)
        history.add_turn(self.chat_id, "assistant", result.answer, timings=result.timings)

    # -- actions -------------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        self.pending.clear()
        if self.responder is not None:
            self.responder.cancel()
        if self.speech is not None:
            self.speech.stop()

    async def action_new_chat(self) -> None:
        self.action_cancel()
        if self.responder is not None:
            self.responder.new_chat()
        self.chat_id = None
        await self.transcript.clear()
        self.notify("new chat")

    def action_toggle_mic(self) -> None:
        if self.settings.ptt and self.listener is not None:
            self._toggle_talk()
            return
        if self.listener is None or not self.listener.running:
            src: AudioSource = MicrophoneSource(self.settings.input_device)
            try:
                src.open()
            except CaptureError as e:
                self.notify(str(e), severity="error", timeout=10)
                return
            self.source = src
            self.reopen = lambda: MicrophoneSource(self.settings.input_device)
            if self.engine is not None:
                self._start_listener(src)
        else:
            self.listener.muted = not self.listener.muted
            self.level_meter.active = not self.listener.muted
        self._refresh_state()

    def _toggle_talk(self) -> None:
        assert self.listener is not None
        if self.listener.in_speech:
            self.listener.release()
        else:
            self.listener.press()

    def action_toggle_speak(self) -> None:
        if self.settings.speak:
            self.settings.speak = False
            if self.speech is not None:
                self.speech.stop()
            self.notify("spoken replies off")
        elif self.speech is not None or self._enable_speech():
            self.settings.speak = True
            self.notify("spoken replies on")

    def action_history(self) -> None:
        history = self.history
        if history is None:
            self.notify("history is off (history = false in settings.toml)")
            return
        self.push_screen(HistoryScreen(history.chats()), self._open_chat)

    async def _open_chat(self, chat_id: int | None) -> None:
        if chat_id is None or self.history is None:
            return
        self.action_cancel()
        if self.responder is not None:
            self.responder.new_chat()
        await self.transcript.clear()
        turns = self.history.turns(chat_id)
        from llasm.assistant.tui.message import latency_line

        for t in turns:
            if t.role == "user":
                await self.transcript.add_user(t.text, spoken=t.spoken)
            else:
                msg = await self.transcript.add_assistant(t.text)
                msg.query_one(".latency").update(latency_line(t.timings))
        await self.transcript.add_note("— reloaded from history; the model starts a fresh context from here —")
        self.chat_id = chat_id

    async def action_quit(self) -> None:
        self._stop_audio()
        self.exit(self.exit_code, return_code=self.exit_code)

    def save_svg(self, path: str | Path) -> Path:
        p = Path(path)
        self.save_screenshot(filename=p.name, path=str(p.parent))
        return p
