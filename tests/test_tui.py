"""Textual Pilot tests of the assistant TUI with a fake engine and fake audio sources."""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
import pytest
from llasm.assistant.capture import ArraySource
from llasm.assistant.history import History
from llasm.assistant.settings import Settings
from llasm.assistant.tui.app import AssistantApp
from llasm.assistant.tui.history_screen import HistoryScreen
from llasm.assistant.tui.message import AssistantMessage, UserMessage
from test_handsfree_fakes import FakeEngine, conversation

SIZE = (100, 32)


def aio(fn):
    """Run an async test with asyncio.run (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def wait_for(pilot, cond, timeout=15.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


@pytest.fixture(scope="module")
def convo(tmp_path_factory):
    return conversation(tmp_path_factory.mktemp("speech"), sentences=["What is the capital of France?",
                        "Tell me a joke about cats."], silences=[0.6, 1.0, 0.8])


def make_app(tmp_path, **kw):
    return AssistantApp(Settings(), history=History(tmp_path / "h.db"), **kw)


@aio
async def test_typed_question_streams_a_reply(tmp_path):
    app = make_app(tmp_path, engine=FakeEngine(token_delay=0.1))
    async with app.run_test(size=SIZE) as pilot:
        assert app.state_indicator.state == "ready"
        await pilot.click("#prompt")
        await pilot.press(*"hello there", "enter")
        await wait_for(pilot, lambda: app.query(AssistantMessage))
        reply = app.query_one(AssistantMessage)
        seen = set()
        while not reply.done:
            seen.add(reply.text)
            if app.busy:
                assert app.state_indicator.state == "thinking"
            await pilot.pause(0.01)
        assert reply.text == "Echo: hello there. Done here."
        assert len(seen) >= 3  # the reply grew token by token
        md_text = "".join(str(b.content) if hasattr(b, "content") else "" for b in reply.query("MarkdownBlock"))
        assert "Echo" in md_text or "Echo" in reply.query_one("Markdown").source
        assert "first token" in str(reply.query_one(".latency").render())
        assert app.query_one(UserMessage).text == "hello there"
        assert app.state_indicator.state == "ready"
        # saved to the history
        chats = app.history.chats()
        assert chats and chats[0].title == "hello there"


@aio
async def test_spoken_questions_are_segmented_and_answered(tmp_path, convo):
    audio, truth = convo
    engine = FakeEngine()
    app = make_app(tmp_path, engine=engine, source=ArraySource(audio, realtime=True, speed=3.0))
    async with app.run_test(size=SIZE) as pilot:
        levels = []
        states = set()
        while len(app.results) < len(truth):
            levels.append(app.level_meter.level)
            states.add(app.state_indicator.state)
            await pilot.pause(0.02)
            assert len(levels) < 1000, "no answers"
        users = list(app.query(UserMessage))
        assert len(users) == len(truth)
        assert all(u.spoken and "seconds of speech" in u.text for u in users)  # the Heard event was shown
        for r, (a, b) in zip(app.results, truth, strict=True):
            assert abs(r.segment.start_s - a) <= 0.1 and abs(r.segment.end_s - b) <= 0.1
            assert r.answer.startswith("You said")
        # the level meter followed the input: loud during speech, at the floor in silence
        assert max(levels) > -35 and min(levels) < -50
        assert app.level_meter.updates > 50
        assert {"listening", "hearing"} <= states


@aio
async def test_what_is_heard_shows_while_the_user_speaks(tmp_path, convo):
    """The engine's hear_partial runs on each SpeechProgress; its text shows under the transcript while the user
    speaks and goes when the utterance is answered."""
    audio, truth = convo

    class HearingEngine(FakeEngine):
        def hear_partial(self, clip: np.ndarray) -> str:
            return f"{clip.size / 16000:.1f} s heard so far"

    app = make_app(tmp_path, engine=HearingEngine(), source=ArraySource(audio, realtime=True, speed=1.0))
    async with app.run_test(size=SIZE) as pilot:
        shown = []
        while len(app.results) < len(truth):
            shown.append(app.heard_so_far.text)
            await pilot.pause(0.02)
            assert len(shown) < 2000, "no answers"
        partial = [t for t in shown if t]
        assert partial and all(t.endswith("heard so far") for t in partial)
        assert app.heard_so_far.text == ""  # gone once the utterance is answered


@aio
async def test_level_meter_moves_with_the_input(tmp_path):
    loud = (np.sin(np.arange(8000) * 2 * np.pi * 300 / 16000) * 0.5).astype(np.float32)
    audio = np.concatenate([np.zeros(8000, np.float32), loud, np.zeros(8000, np.float32)])
    app = make_app(tmp_path, engine=FakeEngine(), source=ArraySource(audio, realtime=True))
    async with app.run_test(size=SIZE) as pilot:
        seen = []
        for _ in range(100):
            seen.append(app.level_meter.level)
            await pilot.pause(0.02)
        assert min(seen) < -90 and max(seen) > -10
        assert "█" in str(app.level_meter.render()) or app.level_meter.active is False


@aio
async def test_escape_cancels_generation(tmp_path):
    engine = FakeEngine(token_delay=0.2)
    app = make_app(tmp_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"tell me everything", "enter")
        await wait_for(pilot, lambda: app.query(AssistantMessage) and app.query_one(AssistantMessage).text)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.results)
        assert app.results[0].cancelled
        assert len(app.results[0].answer.split()) < 5
        assert "cancelled" in str(app.query_one(AssistantMessage).query_one(".latency").render())


@aio
async def test_new_chat_and_history_reload(tmp_path):
    engine = FakeEngine()
    app = make_app(tmp_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"first question", "enter")
        await wait_for(pilot, lambda: app.results)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not app.query(UserMessage))
        assert engine.chats == 1
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query(UserMessage))
        assert app.query_one(UserMessage).text == "first question"
        assert app.query_one(AssistantMessage).text == "Echo: first question. Done here."


@aio
async def test_command_palette_lists_assistant_commands(tmp_path):
    app = make_app(tmp_path, engine=FakeEngine())
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Toggle microphone", "New chat", "Cancel", "Open saved chat", "Quit"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        assert app.screen.__class__.__name__ == "CommandPalette"


@aio
async def test_model_load_runs_in_a_worker(tmp_path):
    def slow_engine():
        time.sleep(2.0)  # longer than the app takes to come up on a busy 2-core machine (0.5 s was not)
        return FakeEngine()

    app = make_app(tmp_path, engine_factory=slow_engine)
    async with app.run_test(size=SIZE) as pilot:
        assert app.state_indicator.state == "loading"  # the UI is up while the model loads
        await wait_for(pilot, lambda: app.engine is not None)
        await asyncio.sleep(0)
        await pilot.pause(0.05)
        assert app.state_indicator.state == "ready"
