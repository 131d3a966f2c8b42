"""The conversation (assistant/conversation.py) on a scripted LLM: the repetition guard, stop reasons, the KV
bookkeeping. No model: a fake LLM whose logits always pick the next token of a script, so every reply is known
token for token."""

from __future__ import annotations

import time

import numpy as np
import pytest
from llasm.assistant.conversation import (
    ANSWER_LOOP_BLOCK,
    ANSWER_LOOP_REPEATS,
    ANSWER_LOOP_TOKENS,
    Conversation,
    Done,
    GenerationOptions,
    Token,
    looping,
)
from llasm.assistant.prompt import PromptTemplate

EOS = 0
CHATML = PromptTemplate(system="<|im_start|>system\n{content}<|im_end|>\n",
                        user="<|im_start|>user\n{content}<|im_end|>\n",
                        assistant="<|im_start|>assistant\n{content}<|im_end|>\n",
                        generation="<|im_start|>assistant\n", stop=("<|im_end|>",))


class ScriptedLM:
    """The parts of `assistant.llm.LlamaLM` a conversation uses. Tokens are words: each distinct word (with its
    leading space) gets an id; a reply is the next words of `script`, then end-of-generation."""

    n_ctx = 2048
    n_batch = 64
    has_lora = False
    lora_on = False

    def __init__(self) -> None:
        self.words: list[str] = ["</s>"]
        self.script: list[int] = []
        self.kv = 0

    def word_id(self, word: str) -> int:
        if word not in self.words:
            self.words.append(word)
        return self.words.index(word)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return [self.word_id(w) for w in text.replace(" ", "\x00 ").split("\x00") if w]

    def say(self, text: str) -> None:
        """The next reply, token for token."""
        self.script = self.tokenize(text) + [EOS]

    def _logits(self) -> np.ndarray:
        out = np.zeros(max(len(self.words), 2), np.float32)
        out[self.script.pop(0) if self.script else EOS] = 1.0
        return out

    def decode_tokens(self, ids: np.ndarray | list[int], pos: int, logits: bool = True) -> np.ndarray | None:
        assert pos == self.kv, (pos, self.kv)  # the conversation decodes exactly the positions it has not
        self.kv += len(ids)
        return self._logits() if logits else None

    def truncate(self, n: int) -> None:
        self.kv = min(self.kv, n)

    def is_eog(self, tok: int) -> bool:
        return tok == EOS

    def piece(self, tok: int) -> bytes:
        return self.words[tok].encode()


def _answer(chat: Conversation, text: str, max_tokens: int = 256, *, transcribe: bool = False) -> tuple[str, Done]:
    timings: dict[str, float] = {"audio_s": 3.0}
    events = list(chat.answer(text, None, None, transcribe=transcribe, options=GenerationOptions(max_tokens=max_tokens),
                              cancel=None, timings=timings, t0=time.perf_counter()))
    done = events[-1]
    assert isinstance(done, Done) and all(isinstance(e, Token) for e in events[:-1])
    assert "".join(e.text for e in events[:-1]) == done.answer  # what streamed is the answer
    return done.answer, done


@pytest.fixture
def chat() -> tuple[Conversation, ScriptedLM]:
    lm = ScriptedLM()
    conv = Conversation(lm, CHATML, CHATML.stop)  # type: ignore[arg-type]
    conv.new_chat()
    return conv, lm


def test_an_answer_repeating_itself_stops_as_a_loop(chat):
    conv, lm = chat
    lm.say("Let me think. " + "The key to the answer is " * 40)
    answer, done = _answer(conv, "What is the key?")
    assert done.stop_reason == "loop"
    n = done.timings["n_tokens"]
    # the block is 6 tokens: it stops once the repeats cover ANSWER_LOOP_TOKENS tokens, long before the limit
    assert n == 3 + 6 * max(ANSWER_LOOP_REPEATS, -(-ANSWER_LOOP_TOKENS // 6)) and n < 60
    assert answer.startswith("Let me think. The key to the answer is The key")
    # the turn is kept with its reply, and the next turn answers normally
    assert conv.history[-1] == ("assistant", answer, False)
    lm.say("Blue.")
    assert _answer(conv, "And the sky?")[1].stop_reason == "eos"
    assert lm.kv == conv.n_kv + conv.primed and conv.n_kv <= conv.n_positions  # the KV cache is consistent


def test_legitimate_repeats_are_answered_whole(chat):
    conv, lm = chat
    replies = [
        "It is very very very good, truly truly good.",
        "Ha ha ha ha ha ha, that is funny!",
        "Pack these: - a towel\n- a hat\n- a towel for the kids\n- sunscreen\n- water\n- a hat for the sun",
        "1. Mix the flour.\n2. Mix the eggs.\n3. Mix the milk.\n4. Mix it all.\n5. Bake it.\n6. Eat it.",
        "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |",
        "No, no, no, no, no! Not like that.",
        # one list item said three times over more than ANSWER_LOOP_TOKENS tokens, then the answer goes on
        # (SmolLM2 answers a request for books so): not yet a loop
        "Books:" + " - The Nightingale, a novel by Elizabeth St. John about two sisters in France." * 3
        + " These are just a few examples.",
    ]
    for text in replies:
        lm.say(text)
        answer, done = _answer(conv, "Say something.")
        assert done.stop_reason == "eos" and answer == text, text


def test_a_long_reply_stops_at_the_token_limit(chat):
    conv, lm = chat
    lm.say(" ".join(f"w{i}" for i in range(50)))
    answer, done = _answer(conv, "Count.", max_tokens=10)
    assert done.stop_reason == "length" and done.timings["n_tokens"] == 10


def test_transcripts_keep_their_tighter_guard(chat):
    conv, lm = chat
    # a 3-token block three times: a loop for a transcript, not yet for an answer
    lm.say("so it is so it is so it is so it is the end")
    assert _answer(conv, "Repeat.", transcribe=True)[1].stop_reason == "loop"
    lm.say("so it is so it is so it is so it is the end")
    assert _answer(conv, "Repeat.")[1].stop_reason == "eos"


def test_looping_rules():
    # the transcript rule (the defaults): 1-2 tokens four times, 3-8 tokens three times
    assert looping([5, 7, 7, 7, 7]) and not looping([5, 7, 7, 7])
    assert looping([9] + list(range(8)) * 3) and not looping(list(range(9)) * 2 + [0])
    # the answer rule: the repeats must also cover ANSWER_LOOP_TOKENS tokens
    answer = {"max_block": ANSWER_LOOP_BLOCK, "min_tokens": ANSWER_LOOP_TOKENS, "min_repeats": ANSWER_LOOP_REPEATS}
    assert not looping([1, 2] * 8, **answer) and looping([1, 2] * (ANSWER_LOOP_TOKENS // 2), **answer)
    block = list(range(ANSWER_LOOP_BLOCK))
    assert looping(block * 4, **answer) and not looping(block * 3, **answer)
    assert not looping(list(range(ANSWER_LOOP_BLOCK + 1)) * 4, **answer)  # longer blocks are not looked for
    assert not looping([], **answer)
