"""One chat turn in the transcript: the user's (typed or spoken) and the assistant's streamed reply."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static


class UserMessage(Static):
    """A typed question, or a spoken one (shown with its length, then what the model heard)."""

    def __init__(self, text: str, *, spoken: bool = False) -> None:
        self.text = text
        self.spoken = spoken
        super().__init__(self._label(), classes="user spoken" if spoken else "user", markup=False)

    def _label(self) -> str:
        return f"🎤 {self.text}" if self.spoken else self.text

    def set_heard(self, heard: str) -> None:
        self.text = f"“{heard}”"
        self.update(self._label())


def latency_line(timings: dict[str, Any], cancelled: bool = False) -> str:
    """'first token 182 ms · 96 tok/s · encoder 24 ms · prefill 130 ms · audio 2.1 s' from the timings."""
    parts = []
    if "ttft_ms" in timings:
        parts.append(f"first token {timings['ttft_ms']:.0f} ms")
    elif "turn_first_token_ms" in timings:
        parts.append(f"first token {timings['turn_first_token_ms']:.0f} ms")
    if timings.get("decode_tokens_per_s"):
        parts.append(f"{timings['decode_tokens_per_s']:.0f} tok/s")
    for key, label in (("encoder_ms", "encoder"), ("prefill_ms", "prefill")):
        if key in timings:
            parts.append(f"{label} {timings[key]:.0f} ms")
    if timings.get("audio_s"):
        parts.append(f"audio {timings['audio_s']:.1f} s")
    if "turn_ms" in timings:
        parts.append(f"turn {timings['turn_ms'] / 1000:.2f} s")
    if cancelled:
        parts.append("cancelled")
    return " · ".join(parts)


class AssistantMessage(Vertical):
    """The reply, streamed as Markdown, with the turn's latency underneath when it is done."""

    def __init__(self, text: str = "") -> None:
        super().__init__(classes="assistant")
        self.text = text
        self._initial = text
        self._stream: Any = None
        self.done = False

    def compose(self) -> ComposeResult:
        yield Markdown(self._initial, classes="reply")
        yield Static("", classes="latency", markup=False)

    async def add_token(self, token: str) -> None:
        self.text += token
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        await self._stream.write(token)

    async def finish(self, timings: dict[str, Any], *, cancelled: bool = False, error: str | None = None) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if error:
            self.add_class("error")
            await self.query_one(Markdown).update(f"{self.text}\n\n**error:** {error}")
        self.query_one(".latency", Static).update(latency_line(timings, cancelled))
        self.done = True
