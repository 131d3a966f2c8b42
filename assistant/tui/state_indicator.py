"""What the assistant is doing right now: loading / listening / hearing you / thinking / speaking."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

LABELS = {
    "loading": "◌ loading model",
    "ready": "○ ready (ctrl+r: mic)",
    "muted": "○ mic off",
    "listening": "● listening",
    "hearing": "◉ hearing you",
    "thinking": "… thinking",
    "speaking": "♪ speaking",
    "lost": "⚠ microphone lost",
    "error": "✖ model failed to load",
}


class StateIndicator(Static):
    state: reactive[str] = reactive("loading")

    def watch_state(self, old: str, new: str) -> None:
        self.remove_class(f"state-{old}")
        self.add_class(f"state-{new}")
        self.update(LABELS.get(new, new))

    def on_mount(self) -> None:
        self.add_class(f"state-{self.state}")
        self.update(LABELS.get(self.state, self.state))


class HeardSoFar(Static):
    """What is heard of the utterance while the user is still speaking (hands-free); empty otherwise."""

    text: reactive[str] = reactive("")

    def watch_text(self, old: str, new: str) -> None:
        self.set_class(bool(new), "active")
        self.update(f"◉ {new}" if new else "")

