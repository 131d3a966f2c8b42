"""The one definition of the chat prompt around the audio.

A `PromptTemplate` is plain strings, derived once from the LLM's own chat template and then carried as data
in checkpoints (`llasm.json`) and bundles (`bundle.json`). Training and the runtime both call `render`, so
they build identical prompts; only the tokenizer differs (Hugging Face in training, llama.cpp at run time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

AUDIO = object()  # marker for the audio slot in a rendered prompt
"""Rendered prompts are lists of `str` and this marker; the adaptor's embeddings replace the marker."""

AUDIO_PLACEHOLDER = "<|audio|>"

TRANSCRIBE_INSTRUCTIONS_EN = (
    "Transcribe the audio.",
    "Write down what is said in the audio.",
    "Please transcribe this recording.",
    "What does the speaker say? Give the exact words.",
    "Convert the speech to text.",
    "Repeat exactly what you hear.",
)
TRANSCRIBE_INSTRUCTIONS_ZH = (
    "请转写这段音频。",
    "把这段语音写成文字。",
    "这段录音里说了什么？请逐字写出。",
)
DEFAULT_TRANSCRIBE_INSTRUCTION = TRANSCRIBE_INSTRUCTIONS_EN[0]

_SENTINEL = {"system": "\x01SYS\x01", "user": "\x01USR\x01", "assistant": "\x01AST\x01"}


class ChatTemplateTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> str: ...


@dataclass(frozen=True)
class Message:
    """One chat turn. A user turn may carry audio: its `content` is then placed around the audio slot."""

    role: str  # "system" | "user" | "assistant"
    content: str = ""
    audio: bool = False  # this turn holds the audio slot
    audio_first: bool = False  # audio before the text (True) or after it (False)


@dataclass(frozen=True)
class PromptTemplate:
    """Chat formatting as plain strings. `{content}` is replaced by the turn's text."""

    prefix: str = ""  # text before the first turn (e.g. a BOS string)
    system: str = "{content}\n"
    user: str = "{content}\n"
    assistant: str = "{content}\n"
    generation: str = ""  # what opens the assistant's reply (the text before {content} in `assistant`)
    default_system: str | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    audio_separator: str = "\n"  # between the audio slot and the text of the same turn

    # ---- rendering -------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation: bool = True,
               include_prefix: bool = True) -> list[str | object]:
        """Render turns into text segments and `AUDIO` markers (adjacent text merged)."""
        out: list[str | object] = []

        def emit(piece: str | object) -> None:
            if isinstance(piece, str):
                if not piece:
                    return
                if out and isinstance(out[-1], str):
                    out[-1] = out[-1] + piece
                    return
            out.append(piece)

        if include_prefix:
            emit(self.prefix)
        msgs = list(messages)
        if include_prefix and self.default_system is not None and (not msgs or msgs[0].role != "system"):
            msgs.insert(0, Message("system", self.default_system))
        for m in msgs:
            fmt = {"system": self.system, "user": self.user, "assistant": self.assistant}[m.role]
            before, after = fmt.split("{content}")
            emit(before)
            if m.audio:
                if m.audio_first:
                    emit(AUDIO)
                    if m.content:
                        emit(self.audio_separator + m.content)
                else:
                    if m.content:
                        emit(m.content + self.audio_separator)
                    emit(AUDIO)
            else:
                emit(m.content)
            emit(after)
        if add_generation:
            emit(self.generation)
        return out

    def assistant_parts(self) -> tuple[str, str]:
        """(text that opens an assistant turn, text that closes it)."""
        before, after = self.assistant.split("{content}")
        return before, after

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptTemplate:
        d = dict(d)
        d["stop"] = tuple(d.get("stop", ()))
        return cls(**d)

    @classmethod
    def from_chat_template(cls, tokenizer: ChatTemplateTokenizer, *, eos_token: str | None = None,
                           bos_token: str | None = None) -> PromptTemplate:
        """Derive the strings by rendering sentinel messages through the tokenizer's own chat template."""
        s, u, a = _SENTINEL["system"], _SENTINEL["user"], _SENTINEL["assistant"]

        def render(conv: list[dict[str, str]], gen: bool) -> str:
            return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)

        with_sys = render([{"role": "system", "content": s}, {"role": "user", "content": u},
                           {"role": "assistant", "content": a}], False)
        gen_text = render([{"role": "system", "content": s}, {"role": "user", "content": u}], True)
        no_sys = render([{"role": "user", "content": u}], False)

        i_s, i_u, i_a = with_sys.index(s), with_sys.index(u), with_sys.index(a)
        prefix_and_sys_open = with_sys[:i_s]
        sys_close_user_open = with_sys[i_s + len(s):i_u]
        user_close_ast_open = with_sys[i_u + len(u):i_a]
        ast_close = with_sys[i_a + len(a):]
        generation_tail = gen_text[gen_text.index(u) + len(u):]

        # The close of a turn is the same for every role in chatml-like templates; detect it from the
        # assistant close (which may carry a trailing newline).
        close = ast_close
        if user_close_ast_open.startswith(close):
            user_close, ast_open = close, user_close_ast_open[len(close):]
        else:  # templates whose turns have no closing text (e.g. "User: ...\nAssistant: ...")
            cut = _common_suffix_start(user_close_ast_open, generation_tail)
            user_close, ast_open = user_close_ast_open[:cut], user_close_ast_open[cut:]
        if sys_close_user_open.startswith(close):
            sys_close, user_open = close, sys_close_user_open[len(close):]
        else:
            sys_close, user_open = "", sys_close_user_open

        # Which part of the text before the system sentinel is a fixed prefix (BOS) and which opens
        # the system turn? The user turn's opening tells us the shape of a turn opening.
        sys_open = prefix_and_sys_open
        prefix = ""
        if bos_token and sys_open.startswith(bos_token):
            prefix, sys_open = bos_token, sys_open[len(bos_token):]

        # A default system prompt: what the template inserts when the conversation has none.
        default_system = None
        if u in no_sys:
            head = no_sys[: no_sys.index(u)]
            if head.startswith(prefix):
                head = head[len(prefix):]
            if head != user_open and head.startswith(sys_open) and head.endswith(sys_close + user_open):
                default_system = head[len(sys_open): len(head) - len(sys_close + user_open)]
        stops = tuple(x for x in {close.strip(), eos_token or ""} if x)
        return cls(
            prefix=prefix,
            system=sys_open + "{content}" + sys_close,
            user=user_open + "{content}" + user_close,
            assistant=ast_open + "{content}" + close,
            generation=ast_open,
            default_system=default_system,
            stop=tuple(sorted(stops)),
        )


def _common_suffix_start(a: str, b: str) -> int:
    """Index in `a` where the longest common suffix of `a` and `b` starts."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return len(a) - n
