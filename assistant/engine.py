"""The runtime engine: bundle -> streamed answers, spoken or typed, in one multi-turn conversation.

    engine = Engine.load(bundle_dir_or_None)      # loads everything once and warms it up
    engine.new_chat()
    for ev in engine.respond(audio=clip, options=GenerationOptions(max_tokens=128), cancel=event):
        ...                                        # Heard(text) | Token(text) | Done(answer, timings, stop_reason)

`Engine` is the facade every caller uses (the CLI, bench, evaluate, hands-free, the TUI). It owns two parts and
the lock that makes one turn at a time:

- `Listening` (assistant/listening.py): audio -> what the LLM reads (Whisper's transcript ids, or the
  adaptor's transcript or embeddings), the hearing settings and the partial view of an utterance;
- `Conversation` (assistant/conversation.py): turns, the KV cache, prefill, speculative prefill, LoRA switching,
  decoding with stop strings and the repetition guard.

The hot path from the end of the audio to the first token reads top to bottom in three files: `respond` here,
`Listening.hear`, then `Conversation.answer`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .adaptor import Adaptor
from .audio import AudioError, load_audio
from .bundle import Bundle, BundleError
from .chatllm import adaptor_mismatch, chat_prompt
from .conversation import (
    TRANSCRIPT_MARGIN_TOKENS,
    TRANSCRIPT_TOKENS_PER_S,
    Conversation,
    Done,
    EngineError,
    GenerationOptions,
    StopScanner,
    Token,
    looping,
    sample,
    transcript_token_cap,
)
from .devices import choose_devices
from .encoder import load_encoder
from .hearing import HearingOptions, WhisperHearing
from .listening import MIN_AUDIO_S, SAMPLE_RATE, Heard, Listening, Read
from .llm import LlamaLM, LLMError, physical_cores
from .ngram import HearingLM
from .prompt import PromptTemplate

__all__ = ["MIN_AUDIO_S", "SAMPLE_RATE", "TRANSCRIPT_MARGIN_TOKENS", "TRANSCRIPT_TOKENS_PER_S", "Done", "Engine",
           "EngineError", "Event", "GenerationOptions", "Heard", "StopScanner", "Token", "looping", "sample",
           "transcript_token_cap"]

Event = Heard | Token | Done


class Engine:
    """Bundle -> streamed answers. Load once (`Engine.load`), then `new_chat` / `respond` many times."""

    def __init__(self, bundle: Bundle, *, n_threads: int | None = None, warmup: bool = True,
                 hearing: Mapping[str, Any] | None = None, expect_transcribe: bool = False,
                 llm: str | os.PathLike[str] | None = None, device: str | None = None) -> None:
        """hearing: what overrides bundle.json's "hearing", by `HearingOptions` key (None values are not given),
        e.g. {"mode": "adaptor", "n_best": 4} from the flags and settings.toml (assistant/hearing.py).
        expect_transcribe: idle time prepares the next turn as a `--transcribe` turn (under the bundle's LoRA
        when only those turns run it), as a one-shot transcription wants; other turns then switch back.
        llm: answer with this chat GGUF instead of the bundle's LLM (assistant/chatllm.py: its own chat template
        and stops, no LoRA; the bundle's adaptor only if it was trained for an LLM of the same vocabulary).
        device: auto, cpu or cuda (assistant/devices.py; None: auto)."""
        self.bundle = bundle
        self.expect_transcribe = expect_transcribe
        try:
            options = HearingOptions.from_dict(bundle.manifest.get("hearing")).with_overrides(**(hearing or {}))
        except (TypeError, ValueError) as e:
            raise BundleError(f"{bundle.root / 'bundle.json'}: {e}") from None
        self.n_threads = n_threads or physical_cores()
        self._lock = threading.Lock()  # one turn at a time: it owns the KV cache
        enc_part = "ct2" if bundle.encoder.format == "ct2" else "onnx"
        self.devices = choose_devices(device, ("llm", enc_part))
        t0 = time.perf_counter()
        self.encoder = load_encoder(bundle.encoder, n_threads=self.n_threads, device=getattr(self.devices, enc_part))
        enc_mels = getattr(self.encoder, "n_mels", 0)
        if enc_mels and enc_mels != bundle.n_mels:
            raise BundleError(f"{bundle.encoder.path} takes {enc_mels} mel bins but bundle.json says "
                              f"audio.n_mels = {bundle.n_mels}: fix the manifest or re-export")
        self.lm, self.foreign_llm = self._load_llm(llm)
        self.llm_name = self.lm.name  # which LLM answers (the TUI's header, --json's "llm")
        template, stops, self.adaptor_unusable = self._chat_format()
        self.listening = Listening(bundle, self.encoder, self.lm, template, options=options,
                                   adaptor_unusable=self.adaptor_unusable)
        self.load_s = time.perf_counter() - t0
        adaptor = self.listening.adaptor
        self.chat = Conversation(self.lm, template, stops, lora_turns=bundle.llm.lora_turns,
                                 token_table=adaptor.token_embeddings if adaptor is not None else None,
                                 expect_transcribe=expect_transcribe)
        self.speculate = True  # prepare() also prefills the spoken turn (False: encoder and adaptor only)
        self._prepared: tuple[np.ndarray, Read] | None = None
        self._prep_lock = threading.Lock()
        if warmup:
            self.warmup()
        self.new_chat()

    @classmethod
    def load(cls, bundle: Bundle | str | os.PathLike[str] | None = None, *, n_threads: int | None = None,
             warmup: bool = True, hearing: Mapping[str, Any] | None = None, expect_transcribe: bool = False,
             llm: str | os.PathLike[str] | None = None, device: str | None = None) -> Engine:
        """Load a bundle (a directory, a loaded Bundle, or None for the default bundle) and warm it up."""
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        return cls(bundle, n_threads=n_threads, warmup=warmup, hearing=hearing, expect_transcribe=expect_transcribe,
                   llm=llm, device=device)

    def _load_llm(self, llm: str | os.PathLike[str] | None) -> tuple[LlamaLM, bool]:
        """The LLM that answers, and whether it is another than the bundle's (`--llm`)."""
        bundle = self.bundle
        llm_path, lora = bundle.llm.path, bundle.llm.lora
        # --llm naming the bundle's own GGUF changes nothing; another GGUF answers without the bundle's LoRA
        # (trained on the bundle's weights)
        foreign = llm is not None and Path(llm).expanduser().resolve() != bundle.llm.path.resolve()
        if foreign:
            llm_path, lora = Path(llm).expanduser(), None  # type: ignore[arg-type]
            if not llm_path.is_file():
                raise LLMError(f"--llm {llm_path}: no such file; pass a chat GGUF")
        try:
            return LlamaLM(llm_path, n_ctx=bundle.llm.n_ctx, n_threads=self.n_threads, lora=lora,
                           device=self.devices.llm), foreign
        except LLMError as e:
            if foreign:
                raise
            raise BundleError(str(e)) from None

    def _chat_format(self) -> tuple[PromptTemplate, tuple[str, ...], str | None]:
        """The chat template and stop strings the LLM answers in, and why the bundle's adaptor cannot serve this
        LLM (None: it can; the adaptor hearing modes then refuse)."""
        bundle = self.bundle
        if not self.foreign_llm:
            return bundle.prompt, tuple(dict.fromkeys(bundle.stop)), None
        try:
            template = chat_prompt(self.lm, bundle.prompt)
        except LLMError:
            self.lm.close()
            raise
        unusable = adaptor_mismatch(dict(bundle.manifest.get("llm") or {}), self.lm,
                                    adaptor_type=str(bundle.adaptor.get("type", "")))
        return template, tuple(dict.fromkeys(template.stop)), unusable

    # ---- the hot path ----------------------------------------------------------------------------------
    def respond(self, audio: np.ndarray | str | os.PathLike[str] | None = None, text: str | None = None, *,
                transcribe: bool = False, options: GenerationOptions | None = None,
                cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answer one user turn (spoken, typed, or audio with a typed instruction) and stream the reply.

        `transcribe=True` asks for a transcription of the audio (the stage-1 instruction). The turn and
        its reply join the conversation. Yields Heard (a transcript was heard), then Token..., then one Done."""
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
        """Hear the audio (or take what `prepare` heard), then the conversation answers."""
        with self._lock:
            t0 = time.perf_counter()
            timings: dict[str, float] = {"audio_s": 0.0, "features_ms": 0.0, "encoder_ms": 0.0, "adaptor_ms": 0.0}
            instruction, read, heard = (text or "").strip(), None, None
            if audio is not None:
                timings["audio_s"] = audio.shape[0] / SAMPLE_RATE
                prepared = self._take_prepared(audio)
                read, heard, hear_t = prepared if prepared is not None else self.encode_audio(audio)
                timings.update(hear_t)
                timings["prepared"] = float(prepared is not None)  # heard before the turn (Engine.prepare)
                if heard is not None:
                    yield Heard(heard)
                if heard is not None and not heard.strip():  # silence or noise: no turn, nothing made up
                    yield _unheard(timings, t0)
                    return
                if transcribe and self.hearing.mode == "whisper":  # the transcript is the answer
                    yield from self.chat.transcript_turn(str(heard), read, timings, t0)
                    return
                if transcribe:
                    instruction = self.template.transcribe
            yield from self.chat.answer(instruction, read, heard, transcribe=transcribe, options=opts,
                                        cancel=cancel, timings=timings, t0=t0)

    def encode_audio(self, audio: np.ndarray) -> Read:
        """Audio -> (what the LLM reads, the transcript or None, timings): `Listening.hear`."""
        return self.listening.hear(audio)

    def ask(self, audio: np.ndarray | str | os.PathLike[str] | None = None, text: str | None = None,
            **kwargs: Any) -> Done:
        """respond() to completion; returns the Done event."""
        done = None
        for ev in self.respond(audio, text, **kwargs):
            if isinstance(ev, Done):
                done = ev
        assert done is not None
        return done

    # ---- work ahead of a turn ------------------------------------------------------------------------------
    def prepare(self, audio: np.ndarray) -> None:
        """Work a clip's turn ahead: the hearing, then (when no turn is running) the prefill of the spoken turn
        past the conversation. Hands-free mode calls it once the VAD has the utterance's final audio but is still
        waiting out the end-of-speech silence; a later `respond` with the same samples starts at its first
        token. Anything else said or typed first drops the prefilled positions."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] < MIN_AUDIO_S * SAMPLE_RATE:
            return
        with self._prep_lock:
            read = self.encode_audio(audio)
            self._prepared = (audio.copy(), read)
            if self.speculate and self._lock.acquire(blocking=False):  # a running turn owns the KV cache
                try:
                    self.chat.speculate(read[0])
                finally:
                    self._lock.release()

    def _take_prepared(self, audio: np.ndarray) -> Read | None:
        with self._prep_lock:  # waits for a prepare still running
            prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0].shape == audio.shape and np.array_equal(prepared[0], audio):
            return prepared[1]
        return None

    def hear_partial(self, audio: np.ndarray) -> str:
        """What is heard so far of an utterance still being spoken (`Listening.hear_partial`)."""
        return self.listening.hear_partial(audio)

    # ---- the conversation ------------------------------------------------------------------------------
    def new_chat(self, system: str | None = None) -> None:
        """Forget the conversation (the system prompt's KV is kept when it does not change)."""
        with self._lock:
            self.chat.new_chat(system)

    @property
    def history(self) -> list[tuple[str, str, bool]]:
        """[(role, text, spoken)] of the conversation so far (oldest trimmed turns are gone)."""
        return self.chat.history

    @property
    def n_positions(self) -> int:
        """Positions the conversation holds (system prompt and turns)."""
        return self.chat.n_positions

    @property
    def template(self) -> PromptTemplate:
        """The chat template the LLM answers in (the bundle's, or `--llm`'s own)."""
        return self.chat.template

    @template.setter
    def template(self, template: PromptTemplate) -> None:
        self.chat.template = template

    @property
    def stops(self) -> tuple[str, ...]:
        return self.chat.stops

    @property
    def answers_with_lora(self) -> bool:
        """Whether answers (every turn but `--transcribe`) run with the bundle's LoRA."""
        return self.chat.lora_for(False)

    # ---- the hearing's settings ------------------------------------------------------------------------
    @property
    def hearing(self) -> HearingOptions:
        """How the audio is heard now (bundle.json's hearing with the flags and the set_* calls applied)."""
        return self.listening.options

    @hearing.setter
    def hearing(self, options: HearingOptions) -> None:
        self.listening.options = options

    @property
    def adaptor(self) -> Adaptor | None:
        return self.listening.adaptor

    @property
    def whisper(self) -> WhisperHearing | None:
        return self.listening.whisper

    @property
    def ngram(self) -> HearingLM | None:
        return self.listening.ngram

    @property
    def can_rescore(self) -> bool:
        return self.listening.can_rescore

    def set_mode(self, mode: str, language: str | None = None) -> None:
        """Hear from now on with `mode` (whisper, adaptor or embeddings) and, for whisper, in `language`."""
        self.listening.set_mode(mode, language)

    def set_n_best(self, n_best: int) -> None:
        """How many transcripts the LLM rescores from now on (1 = the greedy path alone)."""
        self.listening.set_n_best(n_best)

    def set_fusion(self, weight: float) -> None:
        """The LLM's weight inside the ctc beam search from now on (0 = off)."""
        self.listening.set_fusion(weight)

    def set_ngram_fusion(self, weight: float) -> None:
        """The hearing n-gram's weight inside the ctc beam search from now on (0 = off)."""
        self.listening.set_ngram_fusion(weight)

    # ---- start-up and shut-down ------------------------------------------------------------------------
    def warmup(self) -> None:
        """Run every stage once on a throw-away input so the first real question is as fast as the tenth
        (thread pools, allocations, graph caches). Leaves the conversation empty."""
        whisper = self.listening.whisper
        if whisper is not None and whisper.silence_tail:
            whisper.tail()  # the silent window behind every utterance: one 30-s encode
        rng = np.random.default_rng(0)
        clip = (0.01 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
        for ev in self.respond(clip, options=GenerationOptions(max_tokens=4)):
            del ev
        for ev in self.respond(text="Hi", options=GenerationOptions(max_tokens=2)):
            del ev
        if self.expect_transcribe and self.chat.lora_for(True) != self.chat.lora_for(False):
            for ev in self.respond(clip, transcribe=True, options=GenerationOptions(max_tokens=2)):
                del ev
        self.chat.clear()

    def close(self) -> None:
        self.lm.close()


def _unheard(timings: dict[str, float], t0: float) -> Done:
    """The Done of a clip with no speech in it: no turn."""
    timings.update(n_tokens=0, ttft_ms=(time.perf_counter() - t0) * 1e3, prefill_ms=0.0, decode_tokens_per_s=0.0,
                   total_ms=(time.perf_counter() - t0) * 1e3)
    return Done("", timings, "", "silence")
