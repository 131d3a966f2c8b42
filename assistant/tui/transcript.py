"""The scrolling chat transcript."""

from __future__ import annotations

from llasm.assistant.tui.message import AssistantMessage, UserMessage
from textual.containers import VerticalScroll
from textual.widgets import Static


class Transcript(VerticalScroll):
    async def add_user(self, text: str, *, spoken: bool = False) -> UserMessage:
        msg = UserMessage(text, spoken=spoken)
        await self.mount(msg)
        self.scroll_end(animate=False)
        return msg

    async def add_assistant(self, text: str = "") -> AssistantMessage:
        msg = AssistantMessage(text)
        await self.mount(msg)
        self.scroll_end(animate=False)
        return msg

    async def add_note(self, text: str) -> None:
        await self.mount(Static(text, classes="note", markup=False))
        self.scroll_end(animate=False)

    async def clear(self) -> None:
        await self.remove_children()
