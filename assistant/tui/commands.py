"""Command palette entries (ctrl+p) for the assistant's actions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand

if TYPE_CHECKING:
    from llasm.assistant.tui.app import AssistantApp


def assistant_commands(app: AssistantApp) -> Iterator[SystemCommand]:
    yield SystemCommand("Toggle microphone", "Start or stop listening (ctrl+r)", app.action_toggle_mic)
    yield SystemCommand("Cancel", "Stop the answer being generated or spoken (esc)", app.action_cancel)
    yield SystemCommand("New chat", "Forget the conversation and start a fresh one (ctrl+n)", app.action_new_chat)
    yield SystemCommand("Open saved chat", "Reload a chat from the history (ctrl+o)", app.action_history)
    yield SystemCommand("Toggle spoken replies", "Answer aloud through hibari TTS", app.action_toggle_speak)
    yield SystemCommand("Quit", "Leave the assistant (ctrl+q)", app.action_quit)
