"""A modal list of saved chats; picking one reloads it into the transcript."""

from __future__ import annotations

import time

from llasm.assistant.history import ChatSummary
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class HistoryScreen(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, chats: list[ChatSummary]) -> None:
        super().__init__()
        self.chats = chats

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box"):
            yield Label("Saved chats (enter opens, esc closes)" if self.chats else "No saved chats yet")
            yield OptionList(
                *[
                    Option(f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(c.created))}  "
                           f"{c.title or '(untitled)'}  [{c.turns} turns]", id=str(c.id))
                    for c in self.chats
                ]
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id) if event.option.id else None)
