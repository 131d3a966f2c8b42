"""The one definition of the chat prompt around the audio.

A `PromptTemplate` is plain strings, derived once from the LLM's own chat template and then carried as data
in checkpoints (`llasm.json`) and bundles (`bundle.json`). Training and the runtime both render prompts
from it, so they build identical prompts; only the tokenizer differs (Hugging Face in training, llama.cpp at
run time).

`render_parts` keeps what the template writes apart from what a turn holds: a turn's content (typed text, a
transcript, a system prompt, an instruction) comes as `Text`, which the runtime tokenizes with special tokens
off, so text that spells a control token ("<|im_end|>") stays text and cannot close its turn or open another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

AUDIO = object()  # marker for the audio slot in a rendered prompt
"""Rendered prompts are lists of `str` and this marker; the adaptor's embeddings replace the marker."""

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



class Text(str):
    """A turn's content in a rendered prompt: tokenize it as plain text (special tokens off). Only the
    template's own strings (plain `str` segments) may hold control tokens."""

    __slots__ = ()


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
    transcribe: str = DEFAULT_TRANSCRIBE_INSTRUCTION  # what `--transcribe` asks, after the audio

    # ---- rendering -------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation: bool = True,
               include_prefix: bool = True) -> list[str | object]:
        """Render turns into text segments and `AUDIO` markers (adjacent text merged, content and template
        alike: the string the chat template itself writes)."""
        out: list[str | object] = []
        for seg in self.render_parts(messages, add_generation=add_generation, include_prefix=include_prefix):
            if isinstance(seg, str) and out and isinstance(out[-1], str):
                out[-1] = str(out[-1]) + seg
            else:
                out.append(str(seg) if isinstance(seg, str) else seg)
        return out

    def render_parts(self, messages: Sequence[Message], *, add_generation: bool = True,
                     include_prefix: bool = True) -> list[str | object]:
        """`render`, with each turn's content as `Text` segments apart from the template's `str` segments
        (adjacent segments of one kind merged)."""
        out: list[str | object] = []

        def emit(piece: str | object) -> None:
            if isinstance(piece, str):
                if not piece:
                    return
                if out and type(out[-1]) is type(piece):
                    out[-1] = type(piece)(out[-1] + piece)
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
                        emit(self.audio_separator)
                        emit(Text(m.content))
                else:
                    if m.content:
                        emit(Text(m.content))
                        emit(self.audio_separator)
                    emit(AUDIO)
            else:
                emit(Text(m.content))
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
        u2 = u + "2"

        def render(conv: list[tuple[str, str]], gen: bool) -> str:
            msgs = [{"role": r, "content": c} for r, c in conv]
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

        def between(text: str, left: str, right: str | None) -> str:
            i = text.index(left) + len(left)
            return text[i:] if right is None else text[i:text.index(right, i)]

        full = render([("system", s), ("user", u), ("assistant", a)], False)
        two_users = render([("user", u), ("assistant", a), ("user", u2)], False)
        one_user = render([("user", u)], False)

        ast_close = between(full, a, None)
        a_to_u2 = between(two_users, a, u2)
        if not a_to_u2.startswith(ast_close):
            raise ValueError("chat template: cannot find where an assistant turn ends")
        user_open = a_to_u2[len(ast_close):]
        user_close = between(one_user, u, None)
        u_to_a = between(full, u, a)
        if not u_to_a.startswith(user_close):
            raise ValueError("chat template: cannot find where a user turn ends")
        ast_open = u_to_a[len(user_close):]
        s_to_u = between(full, s, u)
        if not s_to_u.endswith(user_open):
            raise ValueError("chat template: cannot find where the system turn ends")
        sys_close = s_to_u[: len(s_to_u) - len(user_open)]

        sys_open = full[: full.index(s)]
        prefix = ""
        # A BOS that opens only the conversation is a prefix; one that opens every turn (chatml) is not.
        if bos_token and sys_open.startswith(bos_token) and not user_open.startswith(bos_token):
            prefix, sys_open = bos_token, sys_open[len(bos_token):]

        # A default system prompt: what the template inserts when the conversation has none.
        default_system = None
        head = one_user[: one_user.index(u)]
        head = head[len(prefix):] if head.startswith(prefix) else head
        if head != user_open and head.startswith(sys_open) and head.endswith(sys_close + user_open):
            default_system = head[len(sys_open): len(head) - len(sys_close + user_open)]
        stops = {x for x in (ast_close.strip(), eos_token or "") if x}
        return cls(
            prefix=prefix,
            system=sys_open + "{content}" + sys_close,
            user=user_open + "{content}" + user_close,
            assistant=ast_open + "{content}" + ast_close,
            generation=ast_open,
            default_system=default_system,
            stop=tuple(sorted(stops)),
        )


