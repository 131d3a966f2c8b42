"""The runtime engine: bundle -> streamed answers, spoken or typed, in one multi-turn conversation.

The hot path (end of audio -> first token), all in this file and the three it calls:

    audio (16 kHz float32) -> assistant.audio.log_mel -> assistant.encoder (CT2/ONNX, real length)
        -> assistant.adaptor (numpy) -> assistant.llm.LlamaLM.decode_embeddings -> sampled tokens

    engine = Engine.load(bundle_dir_or_None)      # loads everything once and warms it up
    engine.new_chat()
    for ev in engine.respond(audio=clip, options=GenerationOptions(max_tokens=128), cancel=event):
        ...                                        # Heard(text) | Token(text) | Done(answer, timings)

KV cache: the conversation is kept as a list of pieces (token-id arrays and embedding arrays) whose prefix
is in llama.cpp's KV cache (`_n_kv` positions). A new turn only prefills what is not there yet (the previous
reply's closing tokens and the new turn). When a turn would overflow the context, the oldest turns are
dropped and the kept ones prefilled again after the system prompt (whose KV stays). Cancelling (the
`cancel` event, or closing the generator) keeps a partial reply, or drops an unanswered turn, and leaves the
engine ready for the next turn.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .adaptor import Adaptor, AdaptorError, load_adaptor
from .audio import AudioError, load_audio, log_mel, quiet_cuts
from .bundle import Bundle, BundleError
from .chatllm import adaptor_mismatch, chat_prompt
from .ctcbeam import choose, log_softmax, prefix_beam_search, sentence_forms, spoken_words
from .devices import choose_devices
from .encoder import CT2Encoder, load_encoder
from .hearing import HearingError, HearingOptions, StreamingHearing, WhisperHearing
from .llm import LlamaLM, LLMError, physical_cores
from .ngram import HearingLM, NgramError
from .prompt import AUDIO, Message, Text

SAMPLE_RATE = 16000
_PIECE_JOIN = re.compile(r"([.?!,;:])(?=[^\W\d_])")  # punctuation a letter follows, with no space between
MIN_AUDIO_S = 0.1
CLOSE_MARGIN = 8  # positions reserved for the closing tokens of a reply
# A transcript cannot be much longer than its speech: fast English runs near 5 tokens a second (6.7 at most in
# our training clips). `transcribe` turns stop at this rate (plus a margin), so a small LLM that falls into a
# loop ("a circuit that under is a circuit that under is ...") stops near the speech's length; `looping` stops
# it at the third or fourth repeat.
TRANSCRIPT_TOKENS_PER_S = 8.0
TRANSCRIPT_MARGIN_TOKENS = 16


def looping(ids: Sequence[int], max_block: int = 8) -> bool:
    """True when `ids` ends with one block of tokens said over and over: a block of 1-2 tokens 4 times, or of
    3-`max_block` tokens 3 times ("a business that is a business that is a business that is"). Speech
    rarely does that; a small LLM that lost track of a transcript does."""
    for size in range(1, max_block + 1):
        times = 4 if size <= 2 else 3
        if len(ids) < size * times:
            break
        tail = list(ids[-size:])
        if all(list(ids[len(ids) - size * (k + 1): len(ids) - size * k]) == tail for k in range(1, times)):
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
class Heard:
    """What was heard (Whisper's or the ctc adaptor's transcript; empty: no speech), before the answer starts."""

    text: str


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    answer: str
    timings: dict[str, float]
    heard: str | None = None
    # eos | stop | length | loop (a transcript repeating itself) | cancelled | silence (no speech heard: no turn) |
    # transcript (a --transcribe turn whose reply is Whisper's transcript)
    stop_reason: str = "eos"
    cancelled: bool = False


Event = Heard | Token | Done


@dataclass
class _Turn:
    role_text: str  # the user's text (typed, or the instruction for audio)
    spoken: bool
    pieces: list[np.ndarray] = field(default_factory=list)  # int32 [n] tokens or float32 [n, n_embd]
    answer: str = ""
    heard: str | None = None

    @property
    def n(self) -> int:
        return sum(len(p) for p in self.pieces)


def _sample(logits: np.ndarray, opts: GenerationOptions, rng: np.random.Generator) -> int:
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


class _StopScanner:
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


class Engine:
    """Bundle -> streamed answers. Load once (`Engine.load`), then `new_chat` / `respond` many times."""

    def __init__(self, bundle: Bundle, *, n_threads: int | None = None, warmup: bool = True,
                 n_best: int | None = None, fusion: float | None = None, ngram_fusion: float | None = None,
                 expect_transcribe: bool = False, mode: str | None = None, language: str | None = None,
                 llm: str | os.PathLike[str] | None = None, device: str | None = None) -> None:
        """n_best: transcripts the LLM rescores when a ctc adaptor hears (overrides bundle.json's
        hearing.n_best; 1 = the greedy path alone); fusion: the LLM's weight inside the beam search that finds
        them (overrides hearing.fusion; 0 = off); ngram_fusion: the bundle's hearing n-gram's weight there
        (overrides hearing.ngram_fusion; 0 = off). See assistant/ctcbeam.py and assistant/ngram.py.
        mode, language: how the audio is heard and in which language (override bundle.json's hearing.mode and
        hearing.language; assistant/hearing.py `HearingOptions`).
        expect_transcribe: idle time prepares the next turn as a `--transcribe` turn (under the bundle's LoRA
        when only those turns run it), as a one-shot transcription wants; other turns then switch back.
        llm: answer with this chat GGUF instead of the bundle's LLM (assistant/chatllm.py: its own chat template
        and stops, no LoRA; the bundle's adaptor only if it was trained for an LLM of the same vocabulary).
        device: auto, cpu or cuda (assistant/devices.py; None: auto)."""
        self.bundle = bundle
        self.expect_transcribe = expect_transcribe
        try:
            self.hearing = HearingOptions.from_dict(bundle.manifest.get("hearing")).with_overrides(
                mode=mode, language=language)
        except (TypeError, ValueError) as e:
            raise BundleError(f"{bundle.root / 'bundle.json'}: {e}") from None
        self.n_threads = n_threads or physical_cores()
        self.template = bundle.prompt
        self.stops = tuple(dict.fromkeys(bundle.stop))
        self._lock = threading.Lock()
        enc_part = "ct2" if bundle.encoder.format == "ct2" else "onnx"
        self.devices = choose_devices(device, ("llm", enc_part))
        t0 = time.perf_counter()
        self.encoder = load_encoder(bundle.encoder, n_threads=self.n_threads, device=getattr(self.devices, enc_part))
        enc_mels = getattr(self.encoder, "n_mels", 0)
        if enc_mels and enc_mels != bundle.n_mels:
            raise BundleError(f"{bundle.encoder.path} takes {enc_mels} mel bins but bundle.json says "
                              f"audio.n_mels = {bundle.n_mels}: fix the manifest or re-export")
        llm_path, lora = bundle.llm.path, bundle.llm.lora
        # --llm naming the bundle's own GGUF changes nothing; another GGUF answers without the bundle's LoRA
        # (trained on the bundle's weights)
        self.foreign_llm = llm is not None and Path(llm).expanduser().resolve() != bundle.llm.path.resolve()
        if self.foreign_llm:
            llm_path, lora = Path(llm).expanduser(), None  # type: ignore[arg-type]
            if not llm_path.is_file():
                raise LLMError(f"--llm {llm_path}: no such file; pass a chat GGUF")
        try:
            self.lm = LlamaLM(llm_path, n_ctx=bundle.llm.n_ctx, n_threads=self.n_threads, lora=lora,
                              device=self.devices.llm)
        except LLMError as e:
            if self.foreign_llm:
                raise
            raise BundleError(str(e)) from None
        self.llm_name = self.lm.name  # which LLM answers (the TUI's header, --json's "llm")
        # why the bundle's adaptor cannot serve this LLM (None: it can); the adaptor hearing modes then refuse
        self.adaptor_unusable: str | None = None
        if self.foreign_llm:
            try:
                self.template = chat_prompt(self.lm, bundle.prompt)
            except LLMError:
                self.lm.close()
                raise
            self.stops = tuple(dict.fromkeys(self.template.stop))
            self.adaptor_unusable = adaptor_mismatch(dict(bundle.manifest.get("llm") or {}), self.lm,
                                                     adaptor_type=str(bundle.adaptor.get("type", "")))
        self.adaptor: Adaptor | None = None if self.adaptor_unusable else self._load_adaptor()
        self.whisper: WhisperHearing | None = None
        self._stream: StreamingHearing | None = None  # the utterance being spoken (hear_partial)
        self._hear_lock = threading.Lock()
        self.set_mode(self.hearing.mode, self.hearing.language)
        self.set_n_best(self.hearing.n_best if n_best is None else n_best)
        self.set_fusion(self.hearing.fusion if fusion is None else fusion)
        self.ngram = self._load_ngram()
        self.set_ngram_fusion(self.hearing.ngram_fusion if ngram_fusion is None else ngram_fusion)
        self._blas = _blas_controller()
        self.load_s = time.perf_counter() - t0
        self._close_ids = np.asarray(self.lm.tokenize(self.template.assistant_parts()[1]), np.int32)
        # What every user turn starts with ("<|im_start|>user\n"): prefilled in idle time (see _prime).
        self._user_open = np.asarray(self.lm.tokenize(self.template.user.split("{content}")[0]), np.int32)
        # KV positions past _n_kv prefilled ahead of the next turn (see _prime and _speculate): they hold
        # _primed_pieces, and _primed_logits are the last one's logits when those pieces are a whole turn
        self._primed = 0
        self._primed_pieces: list[np.ndarray] = []
        self._primed_logits: np.ndarray | None = None
        self._prep_lock = threading.Lock()
        # What the LLM reads before and after each transcript it scores (_hear_with_lm): a user turn after the
        # default system prompt
        system = "" if self.template.default_system is None else \
            self.template.system.format(content=self.template.default_system)
        user_open, user_close = self.template.user.split("{content}")
        self._hear_prefix = self.lm.tokenize(self.template.prefix + system + user_open)
        # up to the end-of-turn token: the whitespace after it is the same for every transcript (log P about 0),
        # and leaving it out spares a scoring row per transcript (a fifth of the scoring time for 32 transcripts)
        self._hear_close = self.lm.tokenize(user_close.rstrip() or user_close)
        self.speculate = True  # prepare() also prefills the spoken turn (False: encoder and adaptor only)
        self._prepared: tuple[np.ndarray, tuple[np.ndarray, str | None, dict[str, float]]] | None = None
        self._prefix: list[np.ndarray] = []
        self._turns: list[_Turn] = []
        self._n_kv = 0
        self._system: str | None = None
        if warmup:
            self.warmup()
        self.new_chat()

    @classmethod
    def load(cls, bundle: Bundle | str | os.PathLike[str] | None = None, *, n_threads: int | None = None,
             warmup: bool = True, n_best: int | None = None, fusion: float | None = None,
             ngram_fusion: float | None = None, expect_transcribe: bool = False, mode: str | None = None,
             language: str | None = None, llm: str | os.PathLike[str] | None = None,
             device: str | None = None) -> Engine:
        """Load a bundle (a directory, a loaded Bundle, or None for the default bundle) and warm it up."""
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        return cls(bundle, n_threads=n_threads, warmup=warmup, n_best=n_best, fusion=fusion, ngram_fusion=ngram_fusion,
                   expect_transcribe=expect_transcribe, mode=mode, language=language, llm=llm, device=device)

    def set_mode(self, mode: str, language: str | None = None) -> None:
        """Hear from now on with `mode` (whisper, adaptor or embeddings; see `HearingOptions`) and, for whisper,
        in `language` (a code or auto)."""
        try:
            opts = self.hearing.with_overrides(mode=mode, language=language)
        except ValueError as e:
            raise BundleError(str(e)) from None
        if opts.mode == "whisper":
            if not isinstance(self.encoder, CT2Encoder):
                raise BundleError(f"hearing with Whisper's decoder needs a CTranslate2 Whisper encoder, and this bundle's "
                                  f"is {self.bundle.encoder.format} ({self.bundle.encoder.path}): use --hearing adaptor")
            try:
                if self.whisper is None:
                    self.whisper = WhisperHearing(self.encoder.model, self.encoder.path, language=opts.language,
                                                  pad_s=opts.pad_s, beam_size=opts.whisper_beam)
                    self._stream = StreamingHearing(self.whisper)
                self.whisper.language = self.whisper.check_language(opts.language)
            except HearingError as e:
                raise BundleError(str(e)) from None
        elif self.adaptor is None:
            raise BundleError(f"hearing mode {opts.mode}: {self.adaptor_unusable}")
        elif opts.language not in ("en", self.hearing.language):
            raise BundleError(f"--language applies to the whisper hearing; the bundle's adaptor hears as it was trained "
                              f"(hearing mode {opts.mode}): use --hearing whisper")
        self.hearing = opts

    def _load_adaptor(self) -> Adaptor:
        cfg = dict(self.bundle.adaptor)
        path = self.bundle.adaptor_path
        if int(cfg.get("n_embd", self.lm.n_embd)) != self.lm.n_embd:
            raise BundleError(f"{path}: the adaptor outputs n_embd {cfg.get('n_embd')} but the LLM "
                              f"{self.bundle.llm.path} takes {self.lm.n_embd}: re-export the bundle")
        table = None
        if cfg.get("type") == "ctc":
            try:
                table = self.lm.token_embeddings()
            except LLMError as e:
                raise BundleError(str(e)) from None
        try:
            return load_adaptor(path, cfg, token_embeddings=table)
        except AdaptorError as e:
            raise BundleError(f"{path}: {e}") from None

    # ---- conversation state ------------------------------------------------------------------------
    def _truncate_kv(self) -> None:
        """Drop every KV position from _n_kv on (primed ones included)."""
        self.lm.truncate(self._n_kv)
        self._primed = 0
        self._primed_pieces = []
        self._primed_logits = None

    def _prime(self) -> None:
        """Idle-time work for the next turn: prefill what is pending (the last reply's closing tokens) and the
        text every user turn starts with, so a question only waits for its own positions. The primed
        positions count once a turn that starts with them arrives; any other turn drops them first."""
        k = len(self._user_open)
        if self._primed or not k or self.n_positions + k + CLOSE_MARGIN >= self.lm.n_ctx:
            return
        try:
            self._use_lora(self._lora_for(self.expect_transcribe))
            self._sync(None)
            self.lm.decode_tokens(self._user_open, self._n_kv, logits=False)
            self._primed, self._primed_pieces = k, [self._user_open]
        except LLMError:
            self._truncate_kv()

    @property
    def answers_with_lora(self) -> bool:
        """Whether answers (every turn but `--transcribe`) run with the bundle's LoRA."""
        return self._lora_for(False)

    def _lora_for(self, transcribe: bool) -> bool:
        """Whether a turn runs with the bundle's LoRA (bundle.json llm.lora_turns)."""
        return self.lm.has_lora and (transcribe or self.bundle.llm.lora_turns == "all")

    def _use_lora(self, on: bool) -> None:
        """Switch the LLM's LoRA for the coming positions. A switch drops the whole KV cache, so the
        conversation is prefilled again under one set of weights (a one-shot turn: just the system prompt)."""
        if self.lm.lora_on != on:
            self._n_kv = 0
            self._truncate_kv()
            self.lm.set_lora(on)

    def _speculate(self, emb: np.ndarray) -> None:
        """Prefill the spoken turn `emb` would start (what `respond(audio)` sends) past the conversation, so
        that turn's first token needs no prefill. Hands-free mode runs it while the VAD waits out the
        end-of-speech silence; a turn with other content (more speech, typed text, `--transcribe`) drops it."""
        turn = _Turn("", True)
        turn.pieces = self._turn_pieces("", emb)
        if self.n_positions + turn.n + CLOSE_MARGIN >= self.lm.n_ctx:
            return  # the turn will first make room by dropping old turns
        try:
            self._use_lora(self._lora_for(False))
            if self._primed:
                self._truncate_kv()  # "<|im_start|>user\n" alone, or another candidate's turn
            self._sync(None)  # the last reply's closing tokens belong to the conversation
            start = self._n_kv
            self._turns.append(turn)
            try:
                logits = self._sync(None)
            finally:
                self._turns.pop()
            self._primed, self._n_kv = self._n_kv - start, start
            self._primed_pieces, self._primed_logits = turn.pieces, logits
        except LLMError:
            self._truncate_kv()

    def _use_primed(self, turn: _Turn, start: int) -> np.ndarray | None:
        """Count the primed positions as the start of `turn` (which begins at position `start`), or drop them.
        Returns the last position's logits when the primed positions were the whole turn."""
        if not self._primed:
            return None
        # the primed pieces must be the turn's first pieces, the last of them possibly a prefix of its piece
        primed, pieces = self._primed_pieces, turn.pieces
        k = len(primed) - 1
        fits = (self._n_kv == start and 0 <= k < len(pieces)
                and all(np.array_equal(a, b) for a, b in zip(primed[:k], pieces[:k], strict=True))
                and primed[k].ndim == pieces[k].ndim and np.array_equal(primed[k], pieces[k][: len(primed[k])]))
        if not fits:
            self._truncate_kv()
            return None
        whole = self._primed == turn.n
        logits = self._primed_logits if whole else None
        self._n_kv += self._primed
        self._primed, self._primed_pieces, self._primed_logits = 0, [], None
        return logits

    def _turn_pieces(self, instruction: str, emb: np.ndarray | None) -> list[np.ndarray]:
        """A user turn's positions: typed text, or audio with an optional typed instruction after it."""
        msg = Message("user", instruction, audio=emb is not None, audio_first=emb is not None)
        return self._render(self.template.render_parts([msg], add_generation=True, include_prefix=False), emb)

    def new_chat(self, system: str | None = None) -> None:
        """Forget the conversation (the system prompt's KV is kept when it does not change)."""
        with self._lock:
            msgs = [Message("system", system)] if system is not None else []
            prefix = self._render(self.template.render_parts(msgs, add_generation=False, include_prefix=True),
                                  None)
            same = (len(prefix) == len(self._prefix)
                    and all(np.array_equal(a, b) for a, b in zip(prefix, self._prefix, strict=True)))
            n_prefix = sum(len(p) for p in prefix)
            if not same:
                self._n_kv = 0
            self._prefix = prefix
            self._turns = []
            self._system = system
            self._n_kv = min(self._n_kv, n_prefix)
            self._truncate_kv()
            self._sync(None)
            self._prime()

    @property
    def history(self) -> list[tuple[str, str, bool]]:
        """[(role, text, spoken)] of the conversation so far (oldest trimmed turns are gone)."""
        out: list[tuple[str, str, bool]] = []
        for t in self._turns:
            out.append(("user", t.role_text if not t.spoken else (t.heard or t.role_text), t.spoken))
            out.append(("assistant", t.answer, False))
        return out

    @property
    def n_positions(self) -> int:
        return sum(len(p) for p in self._all_pieces())

    def _all_pieces(self) -> list[np.ndarray]:
        out = list(self._prefix)
        for t in self._turns:
            out.extend(t.pieces)
        return out

    def _render(self, segments: Sequence[str | object], audio_emb: np.ndarray | None) -> list[np.ndarray]:
        """Segments (`PromptTemplate.render_parts`) -> pieces: token ids, or `audio_emb` for the audio slot.
        A turn's content (`Text`: typed, heard, a system prompt, an instruction) is tokenized with special
        tokens off, so "<|im_end|>" typed stays text; only the template's own strings make control tokens.
        Adjacent token runs join into one piece, one prefill batch, as when the text was one string."""
        pieces: list[np.ndarray] = []
        for seg in segments:
            if seg is AUDIO:
                assert audio_emb is not None
                if audio_emb.ndim == 2:
                    pieces.append(audio_emb)
                    continue
                ids = audio_emb  # a heard transcript's token ids: the same pieces as the question typed
            else:
                ids = np.asarray(self.lm.tokenize(str(seg), special=not isinstance(seg, Text)), np.int32)
            if not len(ids):
                continue
            if pieces and pieces[-1].ndim == 1:
                pieces[-1] = np.concatenate([pieces[-1], ids])
            else:
                pieces.append(ids)
        return pieces

    def _sync(self, cancel: threading.Event | None) -> np.ndarray | None:
        """Prefill every position not yet in the KV cache; returns the last position's logits (or None
        when nothing was decoded). Stops early (returning None) when `cancel` is set."""
        n_prefix = sum(len(p) for p in self._prefix)
        first = None
        if self._n_kv < n_prefix:
            # The system prompt is decoded in a batch of its own. llama.cpp multiplies a batch of 64 rows or
            # more with other kernels than a smaller one, and their results differ (logits by up to ~1 on the
            # default bundle): decoded together with a whole conversation (a re-prefill after a LoRA switch),
            # the system prompt's KV, and every answer after it, would depend on what came with it.
            first = self._decode_pieces(self._prefix, cancel)
            if self._n_kv < n_prefix:
                return None  # cancelled
        logits = self._decode_pieces(self._all_pieces(), cancel)
        if logits is None and self._n_kv == self.n_positions:
            return first  # the system prompt was all there was to prefill
        return logits

    def _decode_pieces(self, pieces: list[np.ndarray], cancel: threading.Event | None) -> np.ndarray | None:
        """Prefill the positions of `pieces` (positions 0..) from _n_kv on; the last one's logits."""
        logits = None
        offset = 0
        total = sum(len(p) for p in pieces)
        step = self.lm.n_batch
        table = self.adaptor.token_embeddings if self.adaptor is not None else None
        if table is not None and any(p.ndim == 2 for p in pieces):
            # One llama_decode for text and audio together: each call costs a pass over the weights, so
            # three calls (text, audio, text) cost ~3x one. Token rows of the GGUF's own table give the
            # same logits as the token ids (tests/test_engine.py).
            pending: list[np.ndarray] = []
            for p in pieces:
                end = offset + len(p)
                if self._n_kv < end:
                    rest = p[max(self._n_kv - offset, 0):]
                    pending.append(rest if rest.ndim == 2 else table[rest])
                offset = end
            if not pending:
                return None  # every position is in the KV cache already
            pieces, offset = [np.concatenate(pending)], self._n_kv
        for p in pieces:
            end = offset + len(p)
            while self._n_kv < end:
                if cancel is not None and cancel.is_set():
                    return None
                lo = self._n_kv - offset
                hi = min(len(p), lo + step)
                chunk = p[lo:hi]
                last = offset + hi == total
                if chunk.ndim == 2:
                    logits = self.lm.decode_embeddings(chunk, self._n_kv, logits=last)
                else:
                    logits = self.lm.decode_tokens(chunk, self._n_kv, logits=last)
                self._n_kv += len(chunk)
            offset = end
        return logits

    def _fit(self, max_tokens: int) -> int:
        """Drop the oldest turns until the conversation plus `max_tokens` fits; returns the max tokens to use."""
        n_ctx = self.lm.n_ctx
        n_prefix = sum(len(p) for p in self._prefix)
        dropped = False
        while len(self._turns) > 1 and self.n_positions + max_tokens + CLOSE_MARGIN > n_ctx:
            self._turns.pop(0)
            dropped = True
        if dropped:
            self._n_kv = min(self._n_kv, n_prefix)
            self._truncate_kv()
        room = n_ctx - self.n_positions - CLOSE_MARGIN
        if room < 1:
            n_turn = self._turns[-1].n if self._turns else 0
            self._turns.pop()
            raise EngineError(f"the turn needs {n_turn} positions but the context holds {n_ctx} "
                              f"(system prompt {n_prefix}): use a shorter clip or text, or a bundle with a "
                              f"larger llm.n_ctx")
        return min(max_tokens, room)

    # ---- the hot path ----------------------------------------------------------------------------------
    def encode_audio(self, audio: np.ndarray) -> tuple[np.ndarray, str | None, dict[str, float]]:
        """Audio -> (what the LLM reads: input embeddings [n, n_embd] or a transcript's token ids [n], the
        transcript or None, timings). An empty transcript means no speech was heard."""
        if self.hearing.mode == "whisper":
            return self._hear_whisper(audio)
        t0 = time.perf_counter()
        assert self.adaptor is not None  # set_mode admits no adaptor hearing without it
        chunk = self.hearing.chunk_s if self.adaptor.config.type == "ctc" else 0.0
        pieces = quiet_cuts(audio, chunk) if chunk > 0 else [(0, len(audio))]
        with self._one_blas_thread():  # the mel filterbank matmul: 7 ms on one thread, 20 ms on two when busy
            mels = [log_mel(audio[a:b], n_mels=self.bundle.n_mels) for a, b in pieces]
        t1 = time.perf_counter()
        states = np.concatenate([self.encoder.encode(m) for m in mels]) if len(mels) > 1 else self.encoder.encode(mels[0])
        t2 = time.perf_counter()
        try:
            with self._one_blas_thread():  # small matmuls: BLAS threads only cost wake-ups (50 ms+ when busy)
                out = self.adaptor.run(states)
        except AdaptorError as e:
            raise BundleError(f"{self.bundle.adaptor_path}: {e}") from None
        t3 = time.perf_counter()
        heard = self._detok(out.heard, len(pieces)) if out.heard is not None else None
        timings = {"features_ms": (t1 - t0) * 1e3, "encoder_ms": (t2 - t1) * 1e3, "adaptor_ms": (t3 - t2) * 1e3}
        emb = np.asarray(out.embeddings, np.float32)
        if heard and self.can_rescore and self.hearing.mode == "adaptor":
            if self.hearing.n_best > 1 or self.hearing.sentence:
                heard = self._hear_with_lm(out.logits, heard, seconds=audio.shape[0] / SAMPLE_RATE,
                                           pieces=len(pieces))
                timings["rescore_ms"] = (time.perf_counter() - t3) * 1e3
            # The LLM reads the transcript as its tokenizer writes it, as it reads the typed question: the ctc
            # head's own segmentation can differ (' What' for 'What' at the start, 'gr'+'ass'), and the LLM
            # then answers a question it heard word for word differently from the typed one.
            emb = self._text_rows(heard)
        return emb, heard, timings

    def _hear_whisper(self, audio: np.ndarray) -> tuple[np.ndarray, str, dict[str, float]]:
        """Whisper's own decoder hears (assistant/hearing.py); the LLM reads the transcript's tokens, as it
        reads the same question typed."""
        assert self._stream is not None
        with self._hear_lock, self._one_blas_thread():
            heard = self._stream.hear(audio, commit=False)
        ids = self.lm.tokenize(heard.text, special=False) if heard.text else []
        timings = {"features_ms": 0.0, "encoder_ms": 0.0, "adaptor_ms": 0.0} | heard.timings
        timings["no_speech_prob"] = heard.no_speech_prob
        return np.asarray(ids, np.int32), heard.text, timings

    def hear_partial(self, audio: np.ndarray) -> str:
        """What is heard so far of an utterance still being spoken (hands-free shows it as the user speaks). With
        Whisper's decoder, the pieces before a pause are heard once and kept, so each call, and the turn when the
        utterance ends, decodes only what follows them (assistant/hearing.py `StreamingHearing`)."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1 or audio.shape[0] < MIN_AUDIO_S * SAMPLE_RATE:
            return ""
        if self.hearing.mode == "whisper":
            assert self._stream is not None
            # the turn's own hearing (prepare, respond) comes first: a partial view is skipped, never waited for
            if not self._hear_lock.acquire(blocking=False):
                return ""
            try:
                with self._one_blas_thread():
                    return self._stream.hear(audio).text
            finally:
                self._hear_lock.release()
        return self.encode_audio(audio)[1] or ""

    def _detok(self, tokens: Sequence[int], pieces: int = 1) -> str:
        """A transcript's text. Heard in pieces, each piece's first word comes as a sentence's first token, with
        no space before it ("France?How"): a space goes back after punctuation that a letter follows."""
        text = self.lm.detokenize(tokens).strip()
        return _PIECE_JOIN.sub(r"\1 ", text) if pieces > 1 else text

    def _text_rows(self, text: str) -> np.ndarray:
        """The LLM's own embedding rows of `text` (what a top-1 ctc adaptor feeds for a transcript)."""
        return self.adaptor.token_embeddings[self.lm.tokenize(text, special=False)].astype(np.float32)  # type: ignore[index]

    def _lm_scores(self, texts: list[str]) -> list[float]:
        """log P(text as the user turn after the default system prompt) under the plain LLM, for each text."""
        try:
            return self.lm.score(self._hear_prefix, [self.lm.tokenize(t, special=False) + self._hear_close
                                                     for t in texts])
        except LLMError as e:
            raise BundleError(str(e)) from None

    @property
    def can_rescore(self) -> bool:
        """Whether the LLM can pick among the adaptor's transcripts (n_best > 1) and how the pick ends
        (`sentence`): a ctc adaptor with topk 1, whose rows are the transcript's own token rows."""
        return self.adaptor is not None and self.adaptor.config.type == "ctc" and self.adaptor.config.topk == 1

    def set_n_best(self, n_best: int) -> None:
        """How many transcripts the LLM rescores from now on (1 = the greedy path alone)."""
        if n_best < 1:
            raise BundleError(f"n_best must be at least 1, got {n_best}")
        if n_best > 1 and not self.can_rescore and self.adaptor is not None:
            raise BundleError("hearing with n_best > 1 needs a ctc adaptor with topk 1; this bundle's adaptor is "
                              f"{self.bundle.adaptor.get('type')} (topk {self.bundle.adaptor.get('topk', '-')}): "
                              "use n_best 1")
        self.hearing = dataclasses.replace(self.hearing, n_best=n_best, beam=max(self.hearing.beam, n_best))

    def set_fusion(self, weight: float) -> None:
        """The LLM's weight inside the beam search from now on (shallow fusion; 0 = off). It shapes which
        transcripts the beam keeps, so it acts only when n_best > 1."""
        if not weight >= 0:
            raise BundleError(f"the fusion weight must be 0 or more, got {weight}")
        if weight > 0 and not self.can_rescore and self.adaptor is not None:
            raise BundleError("hearing with fusion needs a ctc adaptor with topk 1; this bundle's adaptor is "
                              f"{self.bundle.adaptor.get('type')} (topk {self.bundle.adaptor.get('topk', '-')}): "
                              "use fusion 0")
        self.hearing = dataclasses.replace(self.hearing, fusion=float(weight))

    def _load_ngram(self) -> HearingLM | None:
        """The bundle's hearing n-gram (bundle.json's hearing.ngram), checked against the adaptor's labels."""
        if not self.hearing.ngram or self.adaptor is None:
            return None
        if not self.can_rescore:
            raise BundleError(f"{self.bundle.root / 'bundle.json'}: a hearing n-gram needs a ctc adaptor with topk 1")
        path = self.bundle.root / self.hearing.ngram
        if not path.is_file():
            raise BundleError(f"{path} is missing (bundle.json's hearing.ngram): re-export the bundle")
        ids = self.adaptor.ids if self.adaptor.ids is not None else np.arange(int(self.bundle.adaptor["vocab_size"]))
        try:
            return HearingLM.load(path, ids)
        except NgramError as e:
            raise BundleError(str(e)) from None

    def set_ngram_fusion(self, weight: float) -> None:
        """The hearing n-gram's weight inside the beam search from now on (0 = off). Like `fusion`, it shapes
        which transcripts the beam keeps, so it acts only when n_best > 1."""
        if not weight >= 0:
            raise BundleError(f"the n-gram fusion weight must be 0 or more, got {weight}")
        if weight > 0 and self.ngram is None and self.adaptor is not None:
            raise BundleError("hearing with the n-gram needs a bundle with a hearing n-gram (bundle.json's "
                              "hearing.ngram, `llasm-export bundle --hearing-ngram`): use ngram fusion 0")
        self.hearing = dataclasses.replace(self.hearing, ngram_fusion=float(weight))

    def _hear_with_lm(self, logits: np.ndarray | None, heard: str, seconds: float = 0.0, pieces: int = 1) -> str:
        """What the plain LLM makes of the ctc head's hearing (assistant/ctcbeam.py): with n_best > 1 it picks
        among the beam's n_best distinct transcripts (with `merge_spellings`, transcripts that say the same words
        are one, spelt as the ctc head likes best; with `fusion` > 0 it also ranks the beam's prefixes, for
        utterances up to `fusion_max_s` seconds; where it does not, the hearing n-gram does with `ngram_fusion`
        > 0, a cheap stand-in: with both, free questions were heard worse); with `sentence` it then
        capitalises the pick and chooses how it ends. Returns the chosen transcript (the greedy one when it wins)."""
        cfg = self.hearing
        best = heard
        texts: dict[str, float] = {}  # text -> log P (its paths' summed)
        if cfg.n_best > 1 and logits is not None:
            lm = None
            if cfg.fusion > 0 and seconds <= cfg.fusion_max_s:
                try:
                    lm = self.lm.beam_lm(self._hear_prefix, self.adaptor.ids, 3 * cfg.beam)
                except LLMError as e:
                    raise BundleError(str(e)) from None
            with self._one_blas_thread():
                beams = prefix_beam_search(log_softmax(logits), cfg.beam, cfg.per_frame, lm=lm,
                                           lm_weight=cfg.fusion, label_bonus=cfg.fusion_bonus,
                                           ngram=self.ngram if cfg.ngram_fusion > 0 and lm is None else None,
                                           ngram_weight=cfg.ngram_fusion)
            ids = self.adaptor.ids
            said: dict[str, dict[str, float]] = {}  # what a transcript says -> its spellings' log P
            for labels, logp in beams:
                toks = list(labels) if ids is None else ids[list(labels)].tolist()
                text = self._detok(toks, pieces)
                key = " ".join(spoken_words(text)) if cfg.merge_spellings else text
                if key not in said:
                    if len(said) >= cfg.n_best:
                        continue
                    said[key] = {}
                spellings = said[key]
                spellings[text] = float(np.logaddexp(spellings[text], logp)) if text in spellings else logp
            for spellings in said.values():  # one hypothesis, spelt as the ctc head likes best
                texts[max(spellings, key=spellings.__getitem__)] = float(np.logaddexp.reduce(list(spellings.values())))
        order = list(texts) if len(texts) >= 2 else [best]
        forms = {t: sentence_forms(t) if cfg.sentence and t else [t] for t in order}
        # The transcripts and, of those already capitalised, the sentences they make, in one scoring batch: such a
        # sentence differs from its transcript in the end mark only, a leaf never decoded, so it costs no row where
        # a second scoring after the pick cost a decode of its own (a third of the pick's time among 3 transcripts).
        # The sentences of a transcript that starts in lower case would cost a
        # branch of rows each, so the chosen one's are scored after the pick.
        todo = (order if len(order) >= 2 else []) + [f for t in order if t[:1] == t[:1].upper() and len(forms[t]) > 1
                                                     for f in forms[t]]
        lm = self._scored(todo, {})
        if len(order) >= 2:
            best = order[choose([texts[t] for t in order], [lm[t] for t in order], [len(t.split()) for t in order],
                                cfg)]
        if not (cfg.sentence and best):
            return best
        fs = forms[best]
        if len(fs) == 1:
            return fs[0]
        lm = self._scored(fs, lm)
        return fs[max(range(len(fs)), key=lambda i: (lm[fs[i]], -i))]  # ties keep the end the ctc head heard

    def _scored(self, texts: list[str], known: dict[str, float]) -> dict[str, float]:
        """`known` and the LM scores (`_lm_scores`) of the texts it lacks, in one batch."""
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        return known | dict(zip(todo, self._lm_scores(todo), strict=True)) if todo else known

    def prepare(self, audio: np.ndarray) -> None:
        """Work a clip's turn ahead: features, encoder and adaptor, then (when no turn is running) the prefill
        of the spoken turn past the conversation. Hands-free mode calls it once the VAD has the utterance's
        final audio but is still waiting out the end-of-speech silence; a later `respond` with the same samples
        starts at its first token. Anything else said or typed first drops the prefilled positions."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] < MIN_AUDIO_S * SAMPLE_RATE:
            return
        with self._prep_lock:
            encoded = self.encode_audio(audio)
            self._prepared = (audio.copy(), encoded)
            if self.speculate and self._lock.acquire(blocking=False):  # a running turn owns the KV cache
                try:
                    self._speculate(encoded[0])
                finally:
                    self._lock.release()

    def _take_prepared(self, audio: np.ndarray) -> tuple[np.ndarray, str | None, dict[str, float]] | None:
        with self._prep_lock:  # waits for a prepare still running
            prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0].shape == audio.shape and np.array_equal(prepared[0], audio):
            return prepared[1]
        return None

    def _one_blas_thread(self) -> contextlib.AbstractContextManager[Any]:
        return self._blas.limit(limits=1, user_api="blas") if self._blas is not None else contextlib.nullcontext()

    def respond(self, audio: np.ndarray | str | os.PathLike[str] | None = None, text: str | None = None, *,
                transcribe: bool = False, options: GenerationOptions | None = None,
                cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answer one user turn (spoken, typed, or audio with a typed instruction) and stream the reply.

        `transcribe=True` asks for a transcription of the audio (the stage-1 instruction). The turn and
        its reply join the conversation. Yields Heard (ctc adaptors), then Token..., then one Done."""
        opts = options or GenerationOptions()
        if audio is None and not (text and text.strip()):
            raise EngineError("nothing to answer: pass audio or non-empty text")
        if transcribe and audio is None:
            raise EngineError("transcribe needs audio: pass a clip")
        if opts.max_tokens < 1:
            raise EngineError(f"max_tokens must be >= 1, not {opts.max_tokens}")
        if isinstance(audio, (str, Path, os.PathLike)):
            audio = load_audio(audio, sample_rate=SAMPLE_RATE)
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise AudioError(f"audio must be mono 1-D samples at 16 kHz, not shape {audio.shape}; use "
                                 f"llasm.assistant.audio.load_audio")
            if audio.shape[0] < MIN_AUDIO_S * SAMPLE_RATE:
                raise AudioError(f"the clip is {audio.shape[0] / SAMPLE_RATE:.3f} s long; speak for at least "
                                 f"{MIN_AUDIO_S} s")
        return self._respond(audio, text, transcribe, opts, cancel)

    def _respond(self, audio: np.ndarray | None, text: str | None, transcribe: bool, opts: GenerationOptions,
                 cancel: threading.Event | None) -> Iterator[Event]:
        with self._lock:
            yield from self._respond_locked(audio, text, transcribe, opts, cancel)

    def _respond_locked(self, audio: np.ndarray | None, text: str | None, transcribe: bool,
                        opts: GenerationOptions, cancel: threading.Event | None) -> Iterator[Event]:
        t0 = time.perf_counter()
        timings: dict[str, float] = {"audio_s": 0.0, "features_ms": 0.0, "encoder_ms": 0.0, "adaptor_ms": 0.0}
        heard = None
        emb = None
        if audio is not None:
            timings["audio_s"] = audio.shape[0] / SAMPLE_RATE
            prepared = self._take_prepared(audio)
            emb, heard, enc_t = prepared if prepared is not None else self.encode_audio(audio)
            timings.update(enc_t)
            timings["prepared"] = float(prepared is not None)  # encoded before the turn (Engine.prepare)
            if heard is not None:
                yield Heard(heard)
            if heard is not None and not heard.strip():  # silence or noise: no turn, nothing made up
                yield self._finish_unheard(timings, t0)
                return
            if transcribe and self.hearing.mode == "whisper":  # the transcript is the answer
                yield from self._transcript_turn(str(heard), emb, timings, t0)
                return
            instruction = self.template.transcribe if transcribe else (text or "").strip()
        else:
            instruction = (text or "").strip()

        turn = _Turn(instruction, audio is not None, heard=heard)
        turn.pieces = self._turn_pieces(instruction, emb)
        turn_start = self.n_positions
        self._turns.append(turn)
        self._use_lora(self._lora_for(transcribe))
        primed_logits = self._use_primed(turn, turn_start)
        timings["speculative"] = float(primed_logits is not None)  # the whole turn was prefilled ahead
        n_kv_before = self._n_kv
        timings["prompt_positions"] = float(turn.n)
        timings["audio_positions"] = float(len(emb) if emb is not None else 0)

        reply: list[int] = []
        # a transcript is one line: the LLM's commentary after it ("\n\nThis sentence is ...") is not
        scanner = _StopScanner(self.stops + tuple(opts.stop), one_line=transcribe)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        rng = np.random.default_rng(opts.seed)
        stop_reason = "cancelled"
        answered = False
        t_first = t_last = None
        try:
            want = opts.max_tokens
            if transcribe and audio is not None:
                want = min(want, transcript_token_cap(timings["audio_s"]))
            max_tokens = self._fit(want)
            turn_start = self.n_positions - turn.n
            tp = time.perf_counter()
            logits = self._sync(cancel)
            if logits is None and primed_logits is not None and self._n_kv == self.n_positions:
                logits = primed_logits  # nothing left to prefill: the turn was prefilled ahead
            timings["prefill_ms"] = (time.perf_counter() - tp) * 1e3
            timings["prefill_positions"] = float(self._n_kv - min(n_kv_before, self._n_kv))
            if logits is None:  # cancelled during the prefill
                raise _Cancelled
            answered = True
            stop_reason = "length"
            while len(reply) < max_tokens:
                if cancel is not None and cancel.is_set():
                    stop_reason = "cancelled"
                    break
                tok = _sample(logits, opts, rng)
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                    timings["ttft_ms"] = (now - t0) * 1e3
                t_last = now
                if self.lm.is_eog(tok):
                    stop_reason = "eos"
                    break
                reply.append(tok)
                out = scanner.feed(utf8.decode(self.lm.piece(tok)))
                if out:
                    yield Token(out)
                if scanner.stopped:
                    stop_reason = "stop"
                    break
                if transcribe and looping(reply):
                    stop_reason = "loop"
                    break
                if len(reply) >= max_tokens:
                    break
                logits = self.lm.decode_tokens([tok], self._n_kv)
                self._n_kv += 1
        except _Cancelled:
            stop_reason = "cancelled"
        finally:
            # Leave the conversation consistent whatever happened (done, cancelled, generator closed,
            # error): an unanswered turn is dropped, an answered one keeps its (partial) reply + close.
            if not answered:
                if self._turns and self._turns[-1] is turn:
                    self._turns.pop()
                if self._n_kv > turn_start:
                    self._n_kv = turn_start
                    self._truncate_kv()
            else:
                if reply:
                    turn.pieces.append(np.asarray(reply, np.int32))
                if len(self._close_ids):
                    turn.pieces.append(self._close_ids)
        tail = utf8.decode(b"", final=True)
        rest = scanner.feed(tail) if tail else ""
        if not scanner.stopped:
            rest += scanner.flush()
        if rest:
            yield Token(rest)
        turn.answer = scanner.text
        n_gen = len(reply)
        timings["n_tokens"] = n_gen  # a count: an int in every JSON record (hands-free's too)
        timings.setdefault("ttft_ms", (time.perf_counter() - t0) * 1e3)
        timings.setdefault("prefill_ms", 0.0)
        span = (t_last - t_first) if (t_first is not None and t_last is not None) else 0.0
        timings["decode_tokens_per_s"] = (n_gen - 1) / span if n_gen > 1 and span > 0 else 0.0
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        if answered:
            self._prime()
        yield Done(scanner.text, timings, heard, stop_reason, stop_reason == "cancelled")

    @staticmethod
    def _finish_unheard(timings: dict[str, float], t0: float) -> Done:
        timings.update(n_tokens=0, ttft_ms=(time.perf_counter() - t0) * 1e3, prefill_ms=0.0, decode_tokens_per_s=0.0,
                       total_ms=(time.perf_counter() - t0) * 1e3)
        return Done("", timings, "", "silence")

    def _transcript_turn(self, heard: str, ids: np.ndarray, timings: dict[str, float], t0: float) -> Iterator[Event]:
        """A `--transcribe` turn heard by Whisper's decoder: the transcript is the reply, with no LLM call. The
        turn joins the conversation (its positions are prefilled with the next turn)."""
        turn = _Turn(self.template.transcribe, True, heard=heard, answer=heard)
        turn.pieces = self._turn_pieces(self.template.transcribe, ids)
        turn.pieces += [np.asarray(self.lm.tokenize(heard, special=False), np.int32), self._close_ids]
        self._turns.append(turn)
        try:
            self._fit(1)
        except EngineError:
            pass  # a turn longer than the context: answered, but not kept (_fit has dropped it)
        now = time.perf_counter()
        yield Token(heard)
        timings.update(n_tokens=len(turn.pieces[-2]), ttft_ms=(now - t0) * 1e3, prefill_ms=0.0,
                       decode_tokens_per_s=0.0, total_ms=(time.perf_counter() - t0) * 1e3)
        yield Done(heard, timings, heard, "transcript")

    def ask(self, audio: np.ndarray | str | os.PathLike[str] | None = None, text: str | None = None,
            **kwargs: Any) -> Done:
        """respond() to completion; returns the Done event."""
        done = None
        for ev in self.respond(audio, text, **kwargs):
            if isinstance(ev, Done):
                done = ev
        assert done is not None
        return done

    # ---- start-up ------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Run every stage once on a throw-away input so the first real question is as fast as the tenth
        (thread pools, allocations, graph caches). Leaves the conversation empty."""
        rng = np.random.default_rng(0)
        clip = (0.01 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
        for ev in self.respond(clip, options=GenerationOptions(max_tokens=4)):
            del ev
        for ev in self.respond(text="Hi", options=GenerationOptions(max_tokens=2)):
            del ev
        if self.expect_transcribe and self._lora_for(True) != self._lora_for(False):
            for ev in self.respond(clip, transcribe=True, options=GenerationOptions(max_tokens=2)):
                del ev
        self._turns = []
        self._n_kv = min(self._n_kv, sum(len(p) for p in self._prefix))
        self._truncate_kv()

    def close(self) -> None:
        self.lm.close()


class _Cancelled(Exception):
    pass


def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
