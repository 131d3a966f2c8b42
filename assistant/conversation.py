"""The conversation: turns, llama.cpp's KV cache, prefill, LoRA switching and decoding.

Its interface, as the engine uses it:

    chat = Conversation(lm, template, stops, lora_turns="all", token_table=None)
    chat.new_chat(system)                                   # forget the turns (the system prompt's KV stays)
    for ev in chat.answer(instruction, read, heard, transcribe=False, options=opts, cancel=event,
                          timings=timings, t0=t0):          # Token... then one Done
        ...
    chat.speculate(read)                                    # prefill a spoken turn ahead (Engine.prepare)

`read` is what the hearing (assistant/listening.py) made of the audio: a transcript's token ids [n] (int32) or
input embeddings [n, n_embd] (float32), placed in the prompt's audio slot; None for a typed turn.

KV cache: the conversation is kept as a list of pieces (token-id arrays and embedding arrays) whose prefix is in
llama.cpp's KV cache (`n_kv` positions). A new turn only prefills what is not there yet (the previous reply's
closing tokens and the new turn). When a turn would overflow the context, the oldest turns are dropped and the
kept ones prefilled again after the system prompt (whose KV stays). Cancelling (the `cancel` event, or closing
the generator) keeps a partial reply, or drops an unanswered turn, and leaves the conversation ready for the
next turn.

Every reply runs under a repetition guard (`looping`): a reply that ends in one block of tokens said over and
over stops with `Done.stop_reason` "loop".
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .llm import LlamaLM, LLMError
from .prompt import AUDIO, Message, PromptTemplate, Text

CLOSE_MARGIN = 8  # positions reserved for the closing tokens of a reply
# A transcript cannot be much longer than its speech: fast English runs near 5 tokens a second (6.7 at most in
# our training clips). `transcribe` turns stop at this rate (plus a margin), so a small LLM that falls into a
# loop ("a circuit that under is a circuit that under is ...") stops near the speech's length; `looping` stops
# it at the third or fourth repeat.
TRANSCRIPT_TOKENS_PER_S = 8.0
TRANSCRIPT_MARGIN_TOKENS = 16
# The repetition guard on answers: a block of up to ANSWER_LOOP_BLOCK tokens said ANSWER_LOOP_REPEATS times in a
# row, the repeats covering at least ANSWER_LOOP_TOKENS tokens. Answers, unlike transcripts, legitimately repeat
# short runs ("very very", "ha ha ha", list items, a table's "|---|"), and a small LLM sometimes repeats a list
# item or a sentence three times and then goes on (a list naming one book three times), so the guard waits for a
# fourth repeat over a long enough stretch. Measured on SmolLM2's typed answers to 200 test questions (facts,
# how-tos, recommendations, stories; greedy, 256 tokens): it fires on 9, each an answer saying one block over and over (6 ran to the
# token limit; 3 said a sentence or a code block 4 to 6 times before ending), and on none that is not a loop.
# "The key to the answer is " said over and over stops after about 36 tokens instead of 256.
ANSWER_LOOP_BLOCK = 64
ANSWER_LOOP_TOKENS = 32
ANSWER_LOOP_REPEATS = 4


def looping(ids: Sequence[int], max_block: int = 8, min_tokens: int = 0, min_repeats: int = 3) -> bool:
    """True when `ids` ends with one block of tokens said over and over: a block of 1-2 tokens at least 4
    times, or of 3-`max_block` tokens at least `min_repeats` times, and in either case until the repeats cover
    `min_tokens` tokens ("a business that is a business that is a business that is"). Speech rarely does that;
    a small LLM that lost track of a transcript or an answer does. Transcripts use the defaults; answers
    ANSWER_LOOP_BLOCK, ANSWER_LOOP_TOKENS and ANSWER_LOOP_REPEATS."""
    n = len(ids)
    for size in range(1, max_block + 1):
        times = max(4 if size <= 2 else min_repeats, -(-min_tokens // size))
        span = size * times  # never shrinks as `size` grows, so the first span too long ends the search
        if n < span:
            break
        if ids[n - 1] != ids[n - 1 - size]:  # the last token must equal the one a block earlier
            continue
        tail = list(ids[n - span:])
        if tail[size:] == tail[:-size]:  # every token equals the one a block earlier: `times` equal blocks
            return True
    return False


def transcript_token_cap(audio_s: float) -> int:
    """The most tokens a `transcribe` turn generates for `audio_s` seconds of audio."""
    return int(math.ceil(TRANSCRIPT_TOKENS_PER_S * audio_s)) + TRANSCRIPT_MARGIN_TOKENS


class EngineError(RuntimeError):
    """A request the engine cannot serve (no input, a turn longer than the context); one line, with the fix."""


@dataclass
class GenerationOptions:
    max_tokens: int = 256
    temperature: float = 0.0  # <= 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: tuple[str, ...] = ()  # extra stop strings (the bundle's always apply)
    seed: int | None = 0


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    answer: str
    timings: dict[str, float]
    heard: str | None = None
    # eos | stop | length | loop (the reply repeating itself: the repetition guard) | cancelled | silence (no
    # speech heard: no turn) | transcript (a --transcribe turn whose reply is Whisper's transcript)
    stop_reason: str = "eos"
    cancelled: bool = False


@dataclass
class Turn:
    role_text: str  # the user's text (typed, or the instruction for audio)
    spoken: bool
    pieces: list[np.ndarray] = field(default_factory=list)  # int32 [n] tokens or float32 [n, n_embd]
    answer: str = ""
    heard: str | None = None

    @property
    def n(self) -> int:
        return sum(len(p) for p in self.pieces)


def sample(logits: np.ndarray, opts: GenerationOptions, rng: np.random.Generator) -> int:
    """The next token: greedy at temperature <= 0, else drawn after top-k and top-p."""
    if opts.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / opts.temperature
    if opts.top_k and opts.top_k < z.shape[0]:
        kth = np.partition(z, -opts.top_k)[-opts.top_k]
        z = np.where(z >= kth, z, -np.inf)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if opts.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, opts.top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.shape[0], p=p))


class StopScanner:
    """Streams text, holding back any tail that may begin a stop string."""

    def __init__(self, stops: Sequence[str], *, one_line: bool = False) -> None:
        self.stops = [s for s in stops if s]
        self.one_line = one_line  # also stop at the first line break after some text
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:  # the reply ended at a stop: later pieces are not part of it
            return ""
        self.text += piece
        start = max(0, self.emitted - max((len(s) for s in self.stops), default=0))
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if self.one_line:  # a line break after the first non-blank character
            lead = len(self.text) - len(self.text.lstrip())
            brk = self.text.find("\n", lead) if lead < len(self.text) else -1
            if brk >= 0:
                hits.append(brk)
        if hits:
            cut = min(hits)
            out = self.text[self.emitted:cut] if cut > self.emitted else ""
            self.text = self.text[:cut]
            self.emitted = len(self.text)
            self.stopped = True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = len(self.text) - hold
        out = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return out

    def flush(self) -> str:
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out


class _Cancelled(Exception):
    pass


@dataclass
class _Reply:
    """One reply being decoded: its tokens, streamed text and clock."""

    scanner: StopScanner
    tokens: list[int] = field(default_factory=list)
    utf8: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    t_first: float | None = None
    t_last: float | None = None


class Conversation:
    """A multi-turn chat in one llama.cpp context: user turns in, streamed replies out."""

    def __init__(self, lm: LlamaLM, template: PromptTemplate, stops: Sequence[str], *, lora_turns: str = "all",
                 token_table: np.ndarray | None = None, expect_transcribe: bool = False) -> None:
        """lora_turns: bundle.json's llm.lora_turns ("all" or "transcribe"), the turns the LLM's LoRA runs for;
        token_table: the GGUF's token-embedding rows, when some turns hold embeddings (one prefill batch for text
        and audio together); expect_transcribe: idle time prepares the next turn as a `--transcribe` turn."""
        self.lm = lm
        self.template = template
        self.stops = tuple(stops)
        self.lora_turns = lora_turns
        self.token_table = token_table
        self.expect_transcribe = expect_transcribe
        self.close_ids = np.asarray(lm.tokenize(template.assistant_parts()[1]), np.int32)
        # What every user turn starts with ("<|im_start|>user\n"): prefilled in idle time (see prime).
        self.user_open = np.asarray(lm.tokenize(template.user.split("{content}")[0]), np.int32)
        # KV positions past n_kv prefilled ahead of the next turn (see prime and speculate): they hold
        # primed_pieces, and primed_logits are the last one's logits when those pieces are a whole turn
        self.primed = 0
        self.primed_pieces: list[np.ndarray] = []
        self.primed_logits: np.ndarray | None = None
        self.prefix: list[np.ndarray] = []
        self.turns: list[Turn] = []
        self.n_kv = 0
        self.system: str | None = None

    # ---- a turn, from its pieces to its first token and on ------------------------------------------
    def answer(self, instruction: str, read: np.ndarray | None, heard: str | None, *, transcribe: bool,
               options: GenerationOptions, cancel: threading.Event | None, timings: dict[str, float],
               t0: float) -> Iterator[Token | Done]:
        """Add a user turn (typed `instruction`, or audio read as `read` with an optional instruction) and stream
        the reply: Token..., then one Done. `timings` holds the hearing's figures and gets the turn's."""
        turn = Turn(instruction, read is not None, heard=heard)
        turn.pieces = self.turn_pieces(instruction, read)
        turn_start = self.n_positions
        self.turns.append(turn)
        self.use_lora(self.lora_for(transcribe))
        primed_logits = self.use_primed(turn, turn_start)
        timings["speculative"] = float(primed_logits is not None)  # the whole turn was prefilled ahead
        n_kv_before = self.n_kv
        timings["prompt_positions"] = float(turn.n)
        timings["audio_positions"] = float(len(read) if read is not None else 0)
        # a transcript is one line: the LLM's commentary after it ("\n\nThis sentence is ...") is not
        reply = _Reply(StopScanner(self.stops + tuple(options.stop), one_line=transcribe))
        stop_reason = "cancelled"
        answered = False
        try:
            want = options.max_tokens
            if transcribe and read is not None:
                want = min(want, transcript_token_cap(timings["audio_s"]))
            max_tokens = self.fit(want)
            turn_start = self.n_positions - turn.n
            tp = time.perf_counter()
            logits = self.sync(cancel)
            if logits is None and primed_logits is not None and self.n_kv == self.n_positions:
                logits = primed_logits  # nothing left to prefill: the turn was prefilled ahead
            timings["prefill_ms"] = (time.perf_counter() - tp) * 1e3
            timings["prefill_positions"] = float(self.n_kv - min(n_kv_before, self.n_kv))
            if logits is None:  # cancelled during the prefill
                raise _Cancelled
            answered = True
            stop_reason = yield from self._decode(logits, reply, max_tokens, options, cancel, transcribe,
                                                  timings, t0)
        except _Cancelled:
            stop_reason = "cancelled"
        finally:
            self._settle(turn, turn_start, answered, reply.tokens)
        yield from self._finish(turn, reply, answered, stop_reason, timings, t0)

    def _decode(self, logits: np.ndarray, reply: _Reply, max_tokens: int, opts: GenerationOptions,
                cancel: threading.Event | None, transcribe: bool, timings: dict[str, float],
                t0: float) -> Iterator[Token]:
        """Sample and stream tokens from `logits` on; returns why the reply stopped."""
        rng = np.random.default_rng(opts.seed)
        guard = (8, 0, 3) if transcribe else (ANSWER_LOOP_BLOCK, ANSWER_LOOP_TOKENS, ANSWER_LOOP_REPEATS)
        while len(reply.tokens) < max_tokens:
            if cancel is not None and cancel.is_set():
                return "cancelled"
            tok = sample(logits, opts, rng)
            now = time.perf_counter()
            if reply.t_first is None:
                reply.t_first = now
                timings["ttft_ms"] = (now - t0) * 1e3
            reply.t_last = now
            if self.lm.is_eog(tok):
                return "eos"
            reply.tokens.append(tok)
            out = reply.scanner.feed(reply.utf8.decode(self.lm.piece(tok)))
            if out:
                yield Token(out)
            if reply.scanner.stopped:
                return "stop"
            if looping(reply.tokens, *guard):
                return "loop"
            if len(reply.tokens) >= max_tokens:
                break
            logits = self.lm.decode_tokens([tok], self.n_kv)
            self.n_kv += 1
        return "length"

    def _settle(self, turn: Turn, turn_start: int, answered: bool, reply: list[int]) -> None:
        """Leave the conversation consistent whatever happened (done, cancelled, generator closed, error): an
        unanswered turn is dropped, an answered one keeps its (partial) reply and closing tokens."""
        if not answered:
            if self.turns and self.turns[-1] is turn:
                self.turns.pop()
            if self.n_kv > turn_start:
                self.n_kv = turn_start
                self.truncate_kv()
        else:
            if reply:
                turn.pieces.append(np.asarray(reply, np.int32))
            if len(self.close_ids):
                turn.pieces.append(self.close_ids)

    def _finish(self, turn: Turn, reply: _Reply, answered: bool, stop_reason: str, timings: dict[str, float],
                t0: float) -> Iterator[Token | Done]:
        """The reply's last held-back text, its timings, and Done; then idle-time priming for the next turn."""
        scanner = reply.scanner
        tail = reply.utf8.decode(b"", final=True)
        rest = scanner.feed(tail) if tail else ""
        if not scanner.stopped:
            rest += scanner.flush()
        if rest:
            yield Token(rest)
        turn.answer = scanner.text
        n_gen = len(reply.tokens)
        timings["n_tokens"] = n_gen  # a count: an int in every JSON record (hands-free's too)
        timings.setdefault("ttft_ms", (time.perf_counter() - t0) * 1e3)
        timings.setdefault("prefill_ms", 0.0)
        span = (reply.t_last - reply.t_first) if (reply.t_first is not None and reply.t_last is not None) else 0.0
        timings["decode_tokens_per_s"] = (n_gen - 1) / span if n_gen > 1 and span > 0 else 0.0
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        if answered:
            self.prime()
        yield Done(scanner.text, timings, turn.heard, stop_reason, stop_reason == "cancelled")

    def transcript_turn(self, heard: str, ids: np.ndarray, timings: dict[str, float],
                        t0: float) -> Iterator[Token | Done]:
        """A `--transcribe` turn heard by Whisper's decoder: the transcript is the reply, with no LLM call. The
        turn joins the conversation (its positions are prefilled with the next turn)."""
        turn = Turn(self.template.transcribe, True, heard=heard, answer=heard)
        turn.pieces = self.turn_pieces(self.template.transcribe, ids)
        turn.pieces += [np.asarray(self.lm.tokenize(heard, special=False), np.int32), self.close_ids]
        self.turns.append(turn)
        try:
            self.fit(1)
        except EngineError:
            pass  # a turn longer than the context: answered, but not kept (fit has dropped it)
        now = time.perf_counter()
        yield Token(heard)
        timings.update(n_tokens=len(turn.pieces[-2]), ttft_ms=(now - t0) * 1e3, prefill_ms=0.0,
                       decode_tokens_per_s=0.0, total_ms=(time.perf_counter() - t0) * 1e3)
        yield Done(heard, timings, heard, "transcript")

    # ---- conversation state ------------------------------------------------------------------------
    def new_chat(self, system: str | None = None) -> None:
        """Forget the turns (the system prompt's KV is kept when it does not change)."""
        msgs = [Message("system", system)] if system is not None else []
        prefix = self.render(self.template.render_parts(msgs, add_generation=False, include_prefix=True), None)
        same = (len(prefix) == len(self.prefix)
                and all(np.array_equal(a, b) for a, b in zip(prefix, self.prefix, strict=True)))
        n_prefix = sum(len(p) for p in prefix)
        if not same:
            self.n_kv = 0
        self.prefix = prefix
        self.turns = []
        self.system = system
        self.n_kv = min(self.n_kv, n_prefix)
        self.truncate_kv()
        self.sync(None)
        self.prime()

    def clear(self) -> None:
        """Drop every turn and its KV, keeping the system prompt's (after warm-up turns)."""
        self.turns = []
        self.n_kv = min(self.n_kv, sum(len(p) for p in self.prefix))
        self.truncate_kv()

    @property
    def history(self) -> list[tuple[str, str, bool]]:
        """[(role, text, spoken)] of the conversation so far (oldest trimmed turns are gone)."""
        out: list[tuple[str, str, bool]] = []
        for t in self.turns:
            out.append(("user", t.role_text if not t.spoken else (t.heard or t.role_text), t.spoken))
            out.append(("assistant", t.answer, False))
        return out

    @property
    def n_positions(self) -> int:
        return sum(len(p) for p in self._all_pieces())

    def _all_pieces(self) -> list[np.ndarray]:
        out = list(self.prefix)
        for t in self.turns:
            out.extend(t.pieces)
        return out

    def turn_pieces(self, instruction: str, read: np.ndarray | None) -> list[np.ndarray]:
        """A user turn's positions: typed text, or audio with an optional typed instruction after it."""
        msg = Message("user", instruction, audio=read is not None, audio_first=read is not None)
        return self.render(self.template.render_parts([msg], add_generation=True, include_prefix=False), read)

    def render(self, segments: Sequence[str | object], read: np.ndarray | None) -> list[np.ndarray]:
        """Segments (`PromptTemplate.render_parts`) -> pieces: token ids, or `read` for the audio slot.
        A turn's content (`Text`: typed, heard, a system prompt, an instruction) is tokenized with special
        tokens off, so "<|im_end|>" typed stays text; only the template's own strings make control tokens.
        Adjacent token runs join into one piece, one prefill batch, as when the text was one string."""
        pieces: list[np.ndarray] = []
        for seg in segments:
            if seg is AUDIO:
                assert read is not None
                if read.ndim == 2:
                    pieces.append(read)
                    continue
                ids = read  # a heard transcript's token ids: the same pieces as the question typed
            else:
                ids = np.asarray(self.lm.tokenize(str(seg), special=not isinstance(seg, Text)), np.int32)
            if not len(ids):
                continue
            if pieces and pieces[-1].ndim == 1:
                pieces[-1] = np.concatenate([pieces[-1], ids])
            else:
                pieces.append(ids)
        return pieces

    def fit(self, max_tokens: int) -> int:
        """Drop the oldest turns until the conversation plus `max_tokens` fits; returns the max tokens to use."""
        n_ctx = self.lm.n_ctx
        n_prefix = sum(len(p) for p in self.prefix)
        dropped = False
        while len(self.turns) > 1 and self.n_positions + max_tokens + CLOSE_MARGIN > n_ctx:
            self.turns.pop(0)
            dropped = True
        if dropped:
            self.n_kv = min(self.n_kv, n_prefix)
            self.truncate_kv()
        room = n_ctx - self.n_positions - CLOSE_MARGIN
        if room < 1:
            n_turn = self.turns[-1].n if self.turns else 0
            self.turns.pop()
            raise EngineError(f"the turn needs {n_turn} positions but the context holds {n_ctx} "
                              f"(system prompt {n_prefix}): use a shorter clip or text, or a bundle with a "
                              f"larger llm.n_ctx")
        return min(max_tokens, room)

    # ---- the KV cache ------------------------------------------------------------------------------
    def truncate_kv(self) -> None:
        """Drop every KV position from n_kv on (primed ones included)."""
        self.lm.truncate(self.n_kv)
        self.primed = 0
        self.primed_pieces = []
        self.primed_logits = None

    def sync(self, cancel: threading.Event | None) -> np.ndarray | None:
        """Prefill every position not yet in the KV cache; returns the last position's logits (or None
        when nothing was decoded). Stops early (returning None) when `cancel` is set."""
        n_prefix = sum(len(p) for p in self.prefix)
        first = None
        if self.n_kv < n_prefix:
            # The system prompt is decoded in a batch of its own. llama.cpp multiplies a batch of 64 rows or
            # more with other kernels than a smaller one, and their results differ (logits by up to ~1 on the
            # default bundle): decoded together with a whole conversation (a re-prefill after a LoRA switch),
            # the system prompt's KV, and every answer after it, would depend on what came with it.
            first = self._decode_pieces(self.prefix, cancel)
            if self.n_kv < n_prefix:
                return None  # cancelled
        logits = self._decode_pieces(self._all_pieces(), cancel)
        if logits is None and self.n_kv == self.n_positions:
            return first  # the system prompt was all there was to prefill
        return logits

    def _decode_pieces(self, pieces: list[np.ndarray], cancel: threading.Event | None) -> np.ndarray | None:
        """Prefill the positions of `pieces` (positions 0..) from n_kv on; the last one's logits."""
        offset = 0
        total = sum(len(p) for p in pieces)
        if self.token_table is not None and any(p.ndim == 2 for p in pieces):
            # One llama_decode for text and audio together: each call costs a pass over the weights, so
            # three calls (text, audio, text) cost ~3x one. Token rows of the GGUF's own table give the
            # same logits as the token ids (tests/test_engine.py).
            pending: list[np.ndarray] = []
            for p in pieces:
                end = offset + len(p)
                if self.n_kv < end:
                    rest = p[max(self.n_kv - offset, 0):]
                    pending.append(rest if rest.ndim == 2 else self.token_table[rest])
                offset = end
            if not pending:
                return None  # every position is in the KV cache already
            pieces, offset = [np.concatenate(pending)], self.n_kv
        logits = None
        for p in pieces:
            end = offset + len(p)
            while self.n_kv < end:
                if cancel is not None and cancel.is_set():
                    return None
                lo = self.n_kv - offset
                hi = min(len(p), lo + self.lm.n_batch)
                chunk = p[lo:hi]
                last = offset + hi == total
                if chunk.ndim == 2:
                    logits = self.lm.decode_embeddings(chunk, self.n_kv, logits=last)
                else:
                    logits = self.lm.decode_tokens(chunk, self.n_kv, logits=last)
                self.n_kv += len(chunk)
            offset = end
        return logits

    # ---- work ahead of the next turn -----------------------------------------------------------------
    def prime(self) -> None:
        """Idle-time work for the next turn: prefill what is pending (the last reply's closing tokens) and the
        text every user turn starts with, so a question only waits for its own positions. The primed
        positions count once a turn that starts with them arrives; any other turn drops them first."""
        k = len(self.user_open)
        if self.primed or not k or self.n_positions + k + CLOSE_MARGIN >= self.lm.n_ctx:
            return
        try:
            self.use_lora(self.lora_for(self.expect_transcribe))
            self.sync(None)
            self.lm.decode_tokens(self.user_open, self.n_kv, logits=False)
            self.primed, self.primed_pieces = k, [self.user_open]
        except LLMError:
            self.truncate_kv()

    def speculate(self, read: np.ndarray) -> None:
        """Prefill the spoken turn `read` would start (what `respond(audio)` sends) past the conversation, so
        that turn's first token needs no prefill. Hands-free mode runs it while the VAD waits out the
        end-of-speech silence; a turn with other content (more speech, typed text, `--transcribe`) drops it."""
        turn = Turn("", True)
        turn.pieces = self.turn_pieces("", read)
        if self.n_positions + turn.n + CLOSE_MARGIN >= self.lm.n_ctx:
            return  # the turn will first make room by dropping old turns
        try:
            self.use_lora(self.lora_for(False))
            if self.primed:
                self.truncate_kv()  # "<|im_start|>user\n" alone, or another candidate's turn
            self.sync(None)  # the last reply's closing tokens belong to the conversation
            start = self.n_kv
            self.turns.append(turn)
            try:
                logits = self.sync(None)
            finally:
                self.turns.pop()
            self.primed, self.n_kv = self.n_kv - start, start
            self.primed_pieces, self.primed_logits = turn.pieces, logits
        except LLMError:
            self.truncate_kv()

    def use_primed(self, turn: Turn, start: int) -> np.ndarray | None:
        """Count the primed positions as the start of `turn` (which begins at position `start`), or drop them.
        Returns the last position's logits when the primed positions were the whole turn."""
        if not self.primed:
            return None
        # the primed pieces must be the turn's first pieces, the last of them possibly a prefix of its piece
        primed, pieces = self.primed_pieces, turn.pieces
        k = len(primed) - 1
        fits = (self.n_kv == start and 0 <= k < len(pieces)
                and all(np.array_equal(a, b) for a, b in zip(primed[:k], pieces[:k], strict=True))
                and primed[k].ndim == pieces[k].ndim and np.array_equal(primed[k], pieces[k][: len(primed[k])]))
        if not fits:
            self.truncate_kv()
            return None
        whole = self.primed == turn.n
        logits = self.primed_logits if whole else None
        self.n_kv += self.primed
        self.primed, self.primed_pieces, self.primed_logits = 0, [], None
        return logits

    # ---- the LoRA ------------------------------------------------------------------------------------
    def lora_for(self, transcribe: bool) -> bool:
        """Whether a turn runs with the LLM's LoRA (bundle.json llm.lora_turns)."""
        return self.lm.has_lora and (transcribe or self.lora_turns == "all")

    def use_lora(self, on: bool) -> None:
        """Switch the LLM's LoRA for the coming positions. A switch drops the whole KV cache, so the
        conversation is prefilled again under one set of weights (a one-shot turn: just the system prompt)."""
        if self.lm.lora_on != on:
            self.n_kv = 0
            self.truncate_kv()
            self.lm.set_lora(on)
