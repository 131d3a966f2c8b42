"""Hearing: audio -> what the LLM reads, in the mode `HearingOptions.mode` names (assistant/hearing.py).

    ears = Listening(bundle, encoder, lm, template, options=HearingOptions.from_dict(...))
    read, heard, timings = ears.hear(audio)     # 16 kHz float32 mono
    partial = ears.hear_partial(audio_so_far)   # what is heard of an utterance still being spoken

`read` is what the conversation (assistant/conversation.py) puts in the prompt's audio slot:

    whisper     Whisper's own decoder writes the transcript (assistant/hearing.py) -> its token ids [n] (int32)
    adaptor     the ctc adaptor's transcript (greedy, or the plain LLM's pick among the beam's n-best, with the
                hearing n-gram in the beam, assistant/ctcbeam.py, assistant/ngram.py) -> its embedding rows
    embeddings  the adaptor's output rows as they are [n, n_embd] (float32), LLaSM's continuous path

`heard` is the transcript (None: the embeddings mode, which has none); an empty one means no speech was heard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .adaptor import Adaptor, AdaptorError, load_adaptor
from .audio import log_mel, quiet_cuts
from .bundle import Bundle, BundleError
from .ctcbeam import choose, log_softmax, prefix_beam_search, sentence_forms, spoken_words
from .encoder import CT2Encoder
from .hearing import HearingError, HearingOptions, StreamingHearing, WhisperHearing, not_speech
from .llm import LlamaLM, LLMError
from .ngram import HearingLM, NgramError
from .prompt import PromptTemplate

SAMPLE_RATE = 16000
MIN_AUDIO_S = 0.1
_PIECE_JOIN = re.compile(r"([.?!,;:])(?=[^\W\d_])")  # punctuation a letter follows, with no space between
Read = tuple[np.ndarray, str | None, dict[str, float]]  # what the LLM reads, the transcript, timings


@dataclass(frozen=True)
class Heard:
    """What was heard (Whisper's or the ctc adaptor's transcript; empty: no speech), before the answer starts."""

    text: str


class Listening:
    """The engine's ears: one encoder, the bundle's adaptor and Whisper's decoder, and the hearing settings."""

    def __init__(self, bundle: Bundle, encoder: Any, lm: LlamaLM, template: PromptTemplate, *,
                 options: HearingOptions, adaptor_unusable: str | None = None) -> None:
        """options: the bundle's hearing with the flags' overrides. adaptor_unusable: why the bundle's adaptor
        cannot serve `lm` (None: it can); the adaptor modes then refuse. `template` is the chat the LLM rescores
        transcripts in."""
        self.bundle, self.encoder, self.lm = bundle, encoder, lm
        self.options = options
        self.adaptor_unusable = adaptor_unusable
        self.adaptor: Adaptor | None = None if adaptor_unusable else load_bundle_adaptor(bundle, lm)
        self.whisper: WhisperHearing | None = None
        self.stream: StreamingHearing | None = None  # the utterance being spoken (hear_partial)
        self.lock = threading.Lock()  # one Whisper decoder: a turn's hearing, or a partial view
        self.set_mode(options.mode, options.language)
        self.set_n_best(options.n_best)
        self.set_fusion(options.fusion)
        self.ngram = self._load_ngram()
        self.set_ngram_fusion(options.ngram_fusion)
        self._blas = _blas_controller()
        # What the LLM reads before and after each transcript it scores (_hear_with_lm): a user turn after the
        # default system prompt; only the template's own control tokens are special, never the prompt's text
        user_open, user_close = template.user.split("{content}")
        if template.default_system is None:
            self._hear_prefix = lm.tokenize(template.prefix + user_open)
        else:
            sys_open, sys_close = template.system.split("{content}")
            self._hear_prefix = (lm.tokenize(template.prefix + sys_open)
                                 + lm.tokenize(template.default_system, special=False)
                                 + lm.tokenize(sys_close + user_open))
        # up to the end-of-turn token: the whitespace after it is the same for every transcript (log P about 0),
        # and leaving it out spares a scoring row per transcript (a fifth of the scoring time for 32 transcripts)
        self._hear_close = lm.tokenize(user_close.rstrip() or user_close)

    # ---- the hot path ----------------------------------------------------------------------------------
    def hear(self, audio: np.ndarray) -> Read:
        """Audio -> (what the LLM reads: input embeddings [n, n_embd] or a transcript's token ids [n], the
        transcript or None, timings). An empty transcript means no speech was heard."""
        if self.options.mode == "whisper":
            return self._hear_whisper(audio)
        if not_speech(audio):  # the adaptor would hear "Hello." in silence and a made-up sentence in noise
            return np.zeros(0, np.int32), "", {"features_ms": 0.0, "encoder_ms": 0.0, "adaptor_ms": 0.0}
        t0 = time.perf_counter()
        assert self.adaptor is not None  # set_mode admits no adaptor hearing without it
        chunk = self.options.chunk_s if self.adaptor.config.type == "ctc" else 0.0
        pieces = quiet_cuts(audio, chunk) if chunk > 0 else [(0, len(audio))]
        with self.one_blas_thread():  # the mel filterbank matmul: 7 ms on one thread, 20 ms on two when busy
            mels = [log_mel(audio[a:b], n_mels=self.bundle.n_mels) for a, b in pieces]
        t1 = time.perf_counter()
        states = np.concatenate([self.encoder.encode(m) for m in mels]) if len(mels) > 1 else self.encoder.encode(mels[0])
        t2 = time.perf_counter()
        try:
            with self.one_blas_thread():  # small matmuls: BLAS threads only cost wake-ups (50 ms+ when busy)
                out = self.adaptor.run(states)
        except AdaptorError as e:
            raise BundleError(f"{self.bundle.adaptor_path}: {e}") from None
        t3 = time.perf_counter()
        heard = self._detok(out.heard, len(pieces)) if out.heard is not None else None
        timings = {"features_ms": (t1 - t0) * 1e3, "encoder_ms": (t2 - t1) * 1e3, "adaptor_ms": (t3 - t2) * 1e3}
        emb = np.asarray(out.embeddings, np.float32)
        if heard and self.can_rescore and self.options.mode == "adaptor":
            if self.options.n_best > 1 or self.options.sentence:
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
        assert self.stream is not None
        with self.lock, self.one_blas_thread():
            heard = self.stream.hear(audio, commit=False)
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
        if self.options.mode == "whisper":
            assert self.stream is not None
            # the turn's own hearing (prepare, respond) comes first: a partial view is skipped, never waited for
            if not self.lock.acquire(blocking=False):
                return ""
            try:
                with self.one_blas_thread():
                    return self.stream.hear(audio, partial=True).text
            finally:
                self.lock.release()
        return self.hear(audio)[1] or ""

    def one_blas_thread(self) -> contextlib.AbstractContextManager[Any]:
        return self._blas.limit(limits=1, user_api="blas") if self._blas is not None else contextlib.nullcontext()

    # ---- settings ----------------------------------------------------------------------------------------
    def set_mode(self, mode: str, language: str | None = None) -> None:
        """Hear from now on with `mode` (whisper, adaptor or embeddings; see `HearingOptions`) and, for whisper,
        in `language` (a code or auto)."""
        try:
            opts = self.options.with_overrides(mode=mode, language=language)
        except ValueError as e:
            raise BundleError(str(e)) from None
        if opts.mode == "whisper":
            if not isinstance(self.encoder, CT2Encoder):
                raise BundleError(f"hearing with Whisper's decoder needs a CTranslate2 Whisper encoder, and this bundle's "
                                  f"is {self.bundle.encoder.format} ({self.bundle.encoder.path}): use --hearing adaptor")
            try:
                if self.whisper is None:
                    self.whisper = WhisperHearing.from_options(self.encoder.model, self.encoder.path, opts,
                                                              n_threads=self.encoder.n_threads)
                    self.stream = StreamingHearing(self.whisper)
                self.whisper.language = self.whisper.check_language(opts.language)
            except HearingError as e:
                raise BundleError(str(e)) from None
        elif self.adaptor is None:
            raise BundleError(f"hearing mode {opts.mode}: {self.adaptor_unusable}")
        elif opts.language not in ("en", self.options.language):
            raise BundleError(f"--language applies to the whisper hearing; the bundle's adaptor hears as it was trained "
                              f"(hearing mode {opts.mode}): use --hearing whisper")
        self.options = opts

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
        self.options = dataclasses.replace(self.options, n_best=n_best, beam=max(self.options.beam, n_best))

    def set_fusion(self, weight: float) -> None:
        """The LLM's weight inside the beam search from now on (shallow fusion; 0 = off). It shapes which
        transcripts the beam keeps, so it acts only when n_best > 1."""
        if not weight >= 0:
            raise BundleError(f"the fusion weight must be 0 or more, got {weight}")
        if weight > 0 and not self.can_rescore and self.adaptor is not None:
            raise BundleError("hearing with fusion needs a ctc adaptor with topk 1; this bundle's adaptor is "
                              f"{self.bundle.adaptor.get('type')} (topk {self.bundle.adaptor.get('topk', '-')}): "
                              "use fusion 0")
        self.options = dataclasses.replace(self.options, fusion=float(weight))

    def set_ngram_fusion(self, weight: float) -> None:
        """The hearing n-gram's weight inside the beam search from now on (0 = off). Like `fusion`, it shapes
        which transcripts the beam keeps, so it acts only when n_best > 1."""
        if not weight >= 0:
            raise BundleError(f"the n-gram fusion weight must be 0 or more, got {weight}")
        if weight > 0 and self.ngram is None and self.adaptor is not None:
            raise BundleError("hearing with the n-gram needs a bundle with a hearing n-gram (bundle.json's "
                              "hearing.ngram, `llasm-export bundle --hearing-ngram`): use ngram fusion 0")
        self.options = dataclasses.replace(self.options, ngram_fusion=float(weight))

    def _load_ngram(self) -> HearingLM | None:
        """The bundle's hearing n-gram (bundle.json's hearing.ngram), checked against the adaptor's labels."""
        if not self.options.ngram or self.adaptor is None:
            return None
        if not self.can_rescore:
            raise BundleError(f"{self.bundle.root / 'bundle.json'}: a hearing n-gram needs a ctc adaptor with topk 1")
        path = self.bundle.root / self.options.ngram
        if not path.is_file():
            raise BundleError(f"{path} is missing (bundle.json's hearing.ngram): re-export the bundle")
        ids = self.adaptor.ids if self.adaptor.ids is not None else np.arange(int(self.bundle.adaptor["vocab_size"]))
        try:
            return HearingLM.load(path, ids)
        except NgramError as e:
            raise BundleError(str(e)) from None

    # ---- the adaptor's transcript --------------------------------------------------------------------
    def _detok(self, tokens: Sequence[int], pieces: int = 1) -> str:
        """A transcript's text. Heard in pieces, each piece's first word comes as a sentence's first token, with
        no space before it ("France?How"): a space goes back after punctuation that a letter follows."""
        text = self.lm.detokenize(tokens).strip()
        return _PIECE_JOIN.sub(r"\1 ", text) if pieces > 1 else text

    def _text_rows(self, text: str) -> np.ndarray:
        """The LLM's own embedding rows of `text` (what a top-1 ctc adaptor feeds for a transcript)."""
        return self.adaptor.token_embeddings[self.lm.tokenize(text, special=False)].astype(np.float32)  # type: ignore[index, union-attr]

    def _lm_scores(self, texts: list[str]) -> list[float]:
        """log P(text as the user turn after the default system prompt) under the plain LLM, for each text."""
        try:
            return self.lm.score(self._hear_prefix, [self.lm.tokenize(t, special=False) + self._hear_close
                                                     for t in texts])
        except LLMError as e:
            raise BundleError(str(e)) from None

    def _scored(self, texts: list[str], known: dict[str, float]) -> dict[str, float]:
        """`known` and the LM scores (`_lm_scores`) of the texts it lacks, in one batch."""
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        return known | dict(zip(todo, self._lm_scores(todo), strict=True)) if todo else known

    def _hear_with_lm(self, logits: np.ndarray | None, heard: str, seconds: float = 0.0, pieces: int = 1) -> str:
        """What the plain LLM makes of the ctc head's hearing (assistant/ctcbeam.py): with n_best > 1 it picks
        among the beam's n_best distinct transcripts (`_n_best`); with `sentence` it then capitalises the pick and
        chooses how it ends. Returns the chosen transcript (the greedy one when it wins)."""
        cfg = self.options
        best = heard
        texts = self._n_best(logits, seconds, pieces) if cfg.n_best > 1 and logits is not None else {}
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

    def _n_best(self, logits: np.ndarray, seconds: float, pieces: int) -> dict[str, float]:
        """The beam's n_best distinct transcripts -> log P (their paths' summed). With `merge_spellings`,
        transcripts that say the same words are one, spelt as the ctc head likes best; with `fusion` > 0 the LLM
        also ranks the beam's prefixes, for utterances up to `fusion_max_s` seconds; where it does not, the
        hearing n-gram does with `ngram_fusion` > 0, a cheap stand-in (with both, free questions were heard
        worse)."""
        cfg = self.options
        lm = None
        if cfg.fusion > 0 and seconds <= cfg.fusion_max_s:
            try:
                lm = self.lm.beam_lm(self._hear_prefix, self.adaptor.ids, 3 * cfg.beam)  # type: ignore[union-attr]
            except LLMError as e:
                raise BundleError(str(e)) from None
        with self.one_blas_thread():
            beams = prefix_beam_search(log_softmax(logits), cfg.beam, cfg.per_frame, lm=lm,
                                       lm_weight=cfg.fusion, label_bonus=cfg.fusion_bonus,
                                       ngram=self.ngram if cfg.ngram_fusion > 0 and lm is None else None,
                                       ngram_weight=cfg.ngram_fusion)
        ids = self.adaptor.ids  # type: ignore[union-attr]
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
        texts: dict[str, float] = {}
        for spellings in said.values():  # one hypothesis, spelt as the ctc head likes best
            texts[max(spellings, key=spellings.__getitem__)] = float(np.logaddexp.reduce(list(spellings.values())))
        return texts


def load_bundle_adaptor(bundle: Bundle, lm: LlamaLM) -> Adaptor:
    """The bundle's adaptor, checked against the LLM it writes into (a ctc head takes the LLM's token rows)."""
    cfg = dict(bundle.adaptor)
    path = bundle.adaptor_path
    if int(cfg.get("n_embd", lm.n_embd)) != lm.n_embd:
        raise BundleError(f"{path}: the adaptor outputs n_embd {cfg.get('n_embd')} but the LLM "
                          f"{bundle.llm.path} takes {lm.n_embd}: re-export the bundle")
    table = None
    if cfg.get("type") == "ctc":
        try:
            table = lm.token_embeddings()
        except LLMError as e:
            raise BundleError(str(e)) from None
    try:
        return load_adaptor(path, cfg, token_embeddings=table)
    except AdaptorError as e:
        raise BundleError(f"{path}: {e}") from None


def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
