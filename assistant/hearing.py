"""Whisper's own decoder as the assistant's hearing: audio -> transcript, on the clip's real length.

Whisper was trained on 30-s windows; padding every utterance to 30 s costs about ten times the encoder work of
a 2-6 s clip. On the real length alone its decoder hears the words but does not stop (it repeats the sentence
until its length bound): it expects Whisper's 1,500 encoder positions, and after the speech, silence. So:

- the encoder runs on the utterance and a short silence pad (`pad_s`), and the decoder reads those states followed
  by the states of a silent 30-s window from where the utterance's states end (`silence_tail`): 1,500 positions, as in
  training. The silent window's states and their cross-attention keys and values are computed once (the encoder's
  input is then one constant, whatever the utterance; `TAIL_FLOOR`). The decoder then ends the text by itself,
  without timestamp tokens, and hears as on the full window: on the real-speech dev set's clips of 2 s or more,
  fewer edits than Whisper's own 30-s window (docs/model-card.md);
- an utterance of a word or two (`short_s`) is padded to a longer window (`short_window_s`, with the silent
  window after it) and encoded whole, since Whisper hears a word or two without context worse, and the silent
  window alone does not give it that context;
- without the tail (`silence_tail` false), timestamp tokens (no `<|notimestamps|>`) end the transcript: a
  segment's closing timestamp at or past the end of the speech (found from the clip's energy, `speech_end`), or a
  segment that repeats an earlier one;
- a length bound from the speech's duration, so a decoder that loops stops soon after the end.

It decodes greedily first and again with a beam only where the greedy transcript looks unsure (Whisper's own
fallback idea, with a beam where Whisper raises the temperature; `fallback_logprob`), and makes the transcript a
sentence (`sentence_case`): a capital first letter, and a question mark after a question's opening word.

Whisper's no-speech probability (and the words' mean log-probability, as Whisper's own rule) turns silence and
noise into an empty transcript instead of a made-up sentence. Utterances longer than `window_s` are heard in
windows cut at pauses (`assistant.audio.quiet_cuts`), each decoded on its own, in order.

The engine's LLM reads the transcript's tokens, as it reads a typed question (assistant/engine.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import quiet_cuts, steady_sound
from .ct2file import ModelFileError
from .whisperdecoder import OnnxWhisperDecoder, UnsupportedDecoder

SAMPLE_RATE = 16000
TIMESTAMP_S = 0.02  # one timestamp token step
FRAME_S = 0.01  # one mel frame
# When a window holds no speech (the first run's no-speech probability and mean log-probability a token, timestamps
# included). Whisper's own rule (openai/whisper: no-speech > 0.6 and log-probability < -1) at -1.1, and a second one
# for noise: on the real-speech dev set (docs/data.md) no clip scored under -1.42, and those under -1.1 had
# no-speech 0.29 at most, while white, brown and pink noise, hum, clicks and alsa-utils' Noise.wav were heard as
# made-up sentences ("I'm going to use the air gun.") at -1.76 to -2.41 with no-speech 0.50 to 0.91, and digital
# silence as "you" at -1.29 with no-speech 0.91.
NO_SPEECH_RULES = ((0.6, -1.1), (0.45, -1.5))  # (no-speech above, log-probability below): not speech
SILENT_DBFS = -60.0  # a window this quiet at its loudest is not decoded at all
# The silent window behind the utterance (`silence_tail`): every log-mel value at this level. An utterance's silence
# sits at its own loudest frame's level less 8 (Whisper's normalisation), so each clip has its own, most of them
# -1.25 to -0.5 on the real-speech sets; one constant at -0.75 heard the dev set's 66 clips of 2 s or more with the
# same 41 edits as a tail at each clip's own level.
TAIL_FLOOR = -0.75
WHISPER_POSITIONS = 1500  # encoder states of Whisper's 30-s window
WHISPER_DECODERS = ("onnx", "ct2")


HEARING_MODES = ("whisper", "adaptor", "embeddings")
MIN_CHUNK_S = 5.0  # pieces are cut between 2 s and chunk_s into the utterance (assistant.audio.quiet_cuts)


@dataclass(frozen=True)
class HearingOptions:
    """How the assistant hears: bundle.json's "hearing" (every key optional), which flags and settings.toml
    override key by key (`with_overrides`). The one place for the hearing's defaults."""

    # what turns the audio into what the LLM reads:
    #   whisper     Whisper's own decoder writes the transcript and the LLM reads its tokens, as a typed question
    #   adaptor     the bundle's trained adaptor hears (a ctc head's transcript, rescored by the LLM below)
    #   embeddings  the adaptor's output embeddings go into the LLM as they are (LLaSM's continuous path)
    # Bundles without the key keep the adaptor hearing they were exported with.
    mode: str = "adaptor"
    language: str = "en"  # Whisper's language for mode whisper: a code (en, zh, ...) or auto (detected per utterance)
    # after the utterance's encoder states the decoder reads those of a silent 30-s window (module docstring). On
    # the dev / test sets (`scripts/hearing_ab.py --a silence_tail=true --b silence_tail=false,pad_s=2.0`; Whisper's
    # own 30-s window with beam 5: 62 / 20 edits) 62 / 24 edits against 67 / 25 with timestamps on a 2-s pad, the
    # clips of 2-6 s 35 / 17 against 40 / 18 (both sides with the 20-s short window, no tail there)
    silence_tail: bool = True
    # silence after the speech before the encoder; with the tail, 0 / 0.5 / 1 / 2 s heard those 66 clips with 68 /
    # 42 / 42 / 44 edits (encoder 82 / 93 / 109 / 129 ms median). Without it the pad is where the decoder sees the
    # speech end: on the dev set (Whisper's 30-s beam 5: WER 0.076) beam 5 with a 1 / 2 / 3 s pad 0.114 / 0.090 /
    # 0.085, so 2 s there
    pad_s: float = 0.5
    whisper_beam: int = 5
    # a window with less than short_s of audio is padded with silence to short_window_s in all: Whisper, trained on
    # 30-s windows, hears a word or two without context worse ("Agent logged off." as "Agent Logdoth"). On the dev
    # set's 48 clips of 2 s or less (Whisper's 30-s window, beam 5: WER 0.121), greedy then beam 5 with 2 s more /
    # 4 / 6 / 10 / 15 / 20 / 30 s in all: 0.145 / 0.145 / 0.158 / 0.133 / 0.133 / 0.115 / 0.115. 20 s: 30's WER
    # for about 60 % of its time (median hearing of such a clip at 2 threads, CTranslate2's decoder: 10 s 0.54 s,
    # 20 s 0.73 s, 30 s 1.17 s). That was without the silent window; with it behind the short window too (beam 5
    # alone; probes on the dev set's 48 clips under 2 s and 37 more Asterisk prompts under 2 s that neither set
    # uses) 20 s without the tail 20 + 12 edits, with it 19 + 11, 10 s with it 17 + 11 for 0.64x the hearing time
    # (encoder 191 + decoder 110 ms median against 372 + 96), 6 s 19 + 13 (greedy first: 10 s 19 + 11, 6 s 22 + 16)
    short_s: float = 2.0
    short_window_s: float = 10.0
    # ... and decoded without timestamp tokens (`<|notimestamps|>`, as Whisper's 30-s window is), since the long
    # silence lets the decoder end the text by itself. On the dev / test sets' 48 / 37 clips under 2 s (the ONNX
    # decoder, scripts/hearing_ab.py): 21 / 12 edits with timestamps, 20 / 7 without. Longer utterances keep them:
    # on the 2-s pad the decoder then often runs on to its length bound, for an edit or two fewer a set at much more
    # decoding time (docs/model-card.md)
    short_timestamps: bool = False
    # Whisper decodes greedily, and again with whisper_beam only where the greedy transcript looks unsure: its mean
    # log-probability a token (timestamps included) under whisper_fallback_logprob, no end found before the length
    # bound, or words said over (whisper_greedy_first false: the beam alone). On the dev set (113 clips, 2-s pad;
    # Whisper's 30-s beam 5: WER 0.076) greedy alone 0.098, beam 5 alone 0.088 for 5.3x greedy's decoder steps;
    # greedy, then beam 5 under -0.3 / -0.6 / -0.8 / -1.0: 0.085 / 0.085 / 0.086 / 0.086 for 5.3x / 2.3x / 1.5x /
    # 1.2x the steps. -0.6 is the lowest WER for the fewest steps.
    whisper_greedy_first: bool = True
    whisper_fallback_logprob: float = -0.6
    whisper_sentence: bool = True
    # what runs Whisper's decoder: onnx (assistant/whisperdecoder.py: ONNX Runtime, int8, the cross-attention
    # computed once per utterance for the greedy pass and the beam) or ct2 (CTranslate2's generate, a call each).
    # The encoder is CTranslate2's either way. Measured in docs/model-card.md ("Whisper's decoder").
    whisper_decoder: str = "onnx"
    # the adaptor's hearing (mode adaptor; assistant/ctcbeam.py)
    n_best: int = 1  # distinct transcripts the LLM scores (1 = the greedy path alone, no LLM)
    beam: int = 16  # prefixes kept per frame
    per_frame: int = 6  # tokens tried per frame
    lm_weight: float = 0.5
    word_bonus: float = 2.0
    sentence: bool = True  # capitalise the chosen transcript; the LLM picks how it ends (see sentence_forms)
    fusion: float = 0.0  # the LLM's weight inside the beam search (shallow fusion; 0 = the ctc beam alone)
    fusion_bonus: float = 0.0  # ... and a bonus per label there (offsets the LM's preference for short prefixes)
    # longer utterances hear without fusion (the hearing n-gram stands in): its cost grows with the length, and
    # hands-free it runs in the 500 ms the VAD waits for the end of speech
    fusion_max_s: float = 4.5
    # the hearing n-gram (assistant/ngram.py): its file, relative to the bundle ("" = none), and its weight inside
    # the beam search where the LLM is not in it (a cheap stand-in)
    ngram: str = ""
    ngram_fusion: float = 0.0
    # a ctc adaptor hears utterances longer than this in pieces cut at quiet points, each through the encoder on
    # its own (0 = whole): the head, trained on clips of a few seconds, misreads the encoder's later positions
    chunk_s: float = 7.0
    # transcripts with the same words are one hypothesis, spelt as the ctc head likes best (assistant/ctcbeam.py)
    merge_spellings: bool = True
    # hands-free with the adaptor's hearing, the LLM's help runs while the VAD waits out the end of speech
    # (Engine.prepare), so it hears with at least this many transcripts, and with this fusion weight where the
    # bundle has none, unless a flag or settings.toml sets them (measured in docs/model-card.md)
    handsfree_n_best: int = 4
    handsfree_fusion: float = 0.5

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> HearingOptions:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown 'hearing' setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        for k, v in d.items():
            kind = type(getattr(cls, k))
            if kind is bool and not isinstance(v, bool):
                raise ValueError(f"'hearing' setting {k} must be true or false, got {v!r}")
            if kind in (int, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"'hearing' setting {k} must be a number, got {v!r}")
            if kind is str and not isinstance(v, str):
                raise ValueError(f"'hearing' setting {k} must be a string, got {v!r}")
        out = cls(**{k: type(getattr(cls, k))(v) for k, v in d.items()})
        out.check()
        return out

    def check(self) -> None:
        if self.mode not in HEARING_MODES:
            raise ValueError(f"'hearing' mode must be one of {', '.join(HEARING_MODES)}, got {self.mode!r}")
        if self.n_best < 1 or self.beam < self.n_best or self.per_frame < 1 or self.fusion < 0 or self.ngram_fusion < 0:
            raise ValueError("'hearing' needs n_best >= 1, beam >= n_best, per_frame >= 1, fusion >= 0 and "
                             "ngram_fusion >= 0")
        if self.ngram_fusion > 0 and not self.ngram:
            raise ValueError("hearing with the n-gram (ngram_fusion, --ngram-fusion) needs a bundle with a hearing "
                             "n-gram (bundle.json's hearing.ngram, `llasm-export bundle --hearing-ngram`): use "
                             "ngram fusion 0")
        if self.chunk_s != 0 and not self.chunk_s >= MIN_CHUNK_S:
            raise ValueError(f"'hearing' chunk_s must be 0 (whole) or at least {MIN_CHUNK_S:g} s, got {self.chunk_s}")
        if self.handsfree_n_best < 1 or self.handsfree_fusion < 0:
            raise ValueError("'hearing' needs handsfree_n_best >= 1 and handsfree_fusion >= 0")
        if not 0 <= self.pad_s <= 5 or self.whisper_beam < 1 or self.whisper_fallback_logprob > 0:
            raise ValueError("'hearing' needs 0 <= pad_s <= 5, whisper_beam >= 1 and whisper_fallback_logprob <= 0")
        if self.whisper_decoder not in WHISPER_DECODERS:
            raise ValueError(f"'hearing' whisper_decoder must be one of {', '.join(WHISPER_DECODERS)}, got "
                             f"{self.whisper_decoder!r}")
        if not 0 <= self.short_s <= self.short_window_s <= 30:
            raise ValueError("'hearing' needs 0 <= short_s <= short_window_s <= 30 (Whisper's window)")

    def for_handsfree(self, given: Mapping[str, Any]) -> HearingOptions:
        """These options as hands-free hears with the adaptor: n_best and fusion raised to the hands-free ones
        where `given` (the flags and settings.toml) leaves them unset."""
        out = self
        if given.get("n_best") is None:
            out = dataclasses.replace(out, n_best=max(out.n_best, out.handsfree_n_best))
        if given.get("fusion") is None and not out.fusion:
            out = dataclasses.replace(out, fusion=out.handsfree_fusion)
        return dataclasses.replace(out, beam=max(out.beam, out.n_best))

    def with_overrides(self, **given: Any) -> HearingOptions:
        """These options with every given value that is not None replacing its key (flags, settings.toml)."""
        out = dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})
        out.check()
        return out


def not_speech(audio: np.ndarray) -> bool:
    """Audio with nothing to hear, whatever hears it: empty, quieter than SILENT_DBFS at its loudest, or a steady
    sound (noise, hum, a tone; assistant/audio.py STEADY_DB)."""
    return (not len(audio) or 20 * np.log10(float(np.max(np.abs(audio))) + 1e-12) < SILENT_DBFS
            or steady_sound(audio))


class HearingError(RuntimeError):
    """The hearing cannot run (no Whisper decoder, an unknown language); one line naming the fix."""


def byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable stand-in character of each byte (Whisper's tokenizer uses it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def speech_end(audio: np.ndarray, *, floor_db: float = -35.0) -> float:
    """Seconds from the start to the end of the last 20-ms frame within `floor_db` of the clip's loudest frames
    (its 95th-percentile energy): where the speech stops, before any trailing silence."""
    hop = SAMPLE_RATE // 50
    n = len(audio) - len(audio) % hop
    if n < hop:
        return len(audio) / SAMPLE_RATE
    energy = np.mean(np.asarray(audio[:n], np.float64).reshape(-1, hop) ** 2, axis=1) + 1e-12
    loud = np.percentile(energy, 95)
    above = np.nonzero(10 * np.log10(energy / loud) > floor_db)[0]
    return float((above[-1] + 1) * hop / SAMPLE_RATE) if len(above) else len(audio) / SAMPLE_RATE


@dataclass
class Heard:
    """One utterance heard: the text, its language, and how sure Whisper was there was speech at all."""

    text: str
    language: str
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    n_tokens: int = 0
    decode_calls: int = 0
    decoder_steps: int = 0  # tokens the decoder wrote, times the beam: its work, whatever else runs on the machine
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def silent(self) -> bool:
        return not self.text


class WhisperHearing:
    """Transcripts from a CTranslate2 Whisper model's own decoder, on the real length (module docstring)."""

    def __init__(self, model: Any, path: str | os.PathLike[str], *, language: str = "en", pad_s: float = HearingOptions.pad_s,
                 beam_size: int = 1, timestamps: bool = True, window_s: float = 25.0,
                 greedy_first: bool = HearingOptions.whisper_greedy_first,
                 fallback_logprob: float = HearingOptions.whisper_fallback_logprob,
                 sentence: bool = HearingOptions.whisper_sentence, short_s: float = HearingOptions.short_s,
                 short_window_s: float = HearingOptions.short_window_s,
                 short_timestamps: bool = HearingOptions.short_timestamps, decoder: str = "ct2",
                 silence_tail: bool = HearingOptions.silence_tail, n_threads: int = 1) -> None:
        """model: a loaded `ctranslate2.models.Whisper` (shared with the encoder, so one encode serves both);
        path: its folder (for vocabulary.*, and model.bin for the ONNX decoder); language: a Whisper language code
        or "auto" (detected per utterance); beam_size: the beam, used where greedy decoding looks unsure when
        `greedy_first` (HearingOptions.whisper_greedy_first); sentence: transcripts made a sentence
        (`sentence_case`); decoder: what decodes (HearingOptions.whisper_decoder), on `n_threads` threads;
        silence_tail: the decoder reads a silent window's states after the utterance's (module docstring)."""
        self.model = model
        self.path = Path(path)
        self.vocab = _vocabulary(self.path)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        for t in ("<|startoftranscript|>", "<|transcribe|>", "<|endoftext|>", "<|notimestamps|>"):
            if t not in self.index:
                raise HearingError(f"{self.path} is not a Whisper model with its decoder vocabulary ({t} missing): "
                                   "hear with the bundle's adaptor (--hearing adaptor)")
        self.eot = self.index["<|endoftext|>"]
        self.ts0 = self.index["<|notimestamps|>"] + 1
        self.multilingual = bool(getattr(model, "is_multilingual", True))
        self.languages = [t[2:-2] for t in self.vocab[self.eot + 1:self.index["<|transcribe|>"]]
                          if t.startswith("<|") and t.endswith("|>") and t[2:-2].isalpha()] if self.multilingual else ["en"]
        self.language = self.check_language(language)
        self.pad_s = pad_s
        self.beam_size = beam_size
        self.timestamps = timestamps
        self.window_s = window_s
        self.greedy_first = greedy_first
        self.fallback_logprob = fallback_logprob
        self.sentence = sentence
        self.short_s, self.short_window_s, self.short_timestamps = short_s, short_window_s, short_timestamps
        self.silence_tail = silence_tail
        self._tail: np.ndarray | None = None
        self._bytes = byte_decoder()
        self.decoder: OnnxWhisperDecoder | None = None
        if decoder == "onnx":
            try:
                self.decoder = OnnxWhisperDecoder(self.path, eot=self.eot, no_timestamps=self.ts0 - 1,
                                                  no_speech=self.index.get("<|nospeech|>", self.index.get(
                                                      "<|nocaptions|>")), n_threads=n_threads)
            except UnsupportedDecoder:
                self.decoder = None  # a decoder width the graphs do not hold: CTranslate2's decodes
            except ModelFileError as e:
                raise HearingError(str(e)) from None

    @classmethod
    def from_options(cls, model: Any, path: str | os.PathLike[str], options: HearingOptions, *,
                     n_threads: int = 1) -> WhisperHearing:
        """The hearing `options` (bundle.json's hearing with the flags) describe, over a loaded model."""
        return cls(model, path, language=options.language, pad_s=options.pad_s, beam_size=options.whisper_beam,
                   greedy_first=options.whisper_greedy_first, fallback_logprob=options.whisper_fallback_logprob,
                   sentence=options.whisper_sentence, short_s=options.short_s, short_window_s=options.short_window_s,
                   short_timestamps=options.short_timestamps, decoder=options.whisper_decoder,
                   silence_tail=options.silence_tail, n_threads=n_threads)

    def check_language(self, language: str) -> str:
        language = language.strip().lower()
        if language == "auto" or language in self.languages:
            return language
        raise HearingError(f"unknown language {language!r}: use auto or one of {', '.join(self.languages[:12])}, ...")

    def text_of(self, ids: Sequence[int]) -> str:
        pieces = "".join(self.vocab[i] for i in ids if i < self.eot)
        return bytes(self._bytes.get(ch, 32) for ch in pieces).decode("utf-8", "replace").strip()

    def in_short_window(self, audio: np.ndarray, short_window: bool = True) -> bool:
        """Whether `audio` is heard in the short window (`HearingOptions.short_s`): padded to `short_window_s`."""
        return short_window and len(audio) / SAMPLE_RATE < self.short_s

    def _features(self, audio: np.ndarray, short_window: bool = True) -> Any:
        import ctranslate2

        from .audio import log_mel

        seconds = len(audio) / SAMPLE_RATE
        short = self.in_short_window(audio, short_window)
        pad = max(self.pad_s, self.short_window_s - seconds) if short else self.pad_s
        padded = np.concatenate([audio, np.zeros(int(pad * SAMPLE_RATE), np.float32)])
        mel = log_mel(padded, n_mels=int(self.model.n_mels))
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))

    def transcribe(self, audio: np.ndarray, *, sentence: bool | None = None, short_window: bool = True) -> Heard:
        """The words of `audio` (16 kHz mono float32), heard in windows of at most `window_s` seconds, made a
        sentence (`sentence_case`) when `sentence` (None: this hearing's own setting). `short_window` False: an
        utterance under `short_s` gets the plain pad, not the longer window (a provisional view, cheaper)."""
        audio = np.asarray(audio, np.float32)
        pieces = quiet_cuts(audio, self.window_s, min_s=min(5.0, self.window_s / 2.5))
        parts = [self._window(audio[a:b], short_window) for a, b in pieces]
        said = [p for p in parts if p.text]
        timings: dict[str, float] = {}
        for p in parts:
            for k, v in p.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        lang = said[0].language if said else parts[0].language
        text = " ".join(p.text for p in said)
        return Heard(sentence_case(text) if (self.sentence if sentence is None else sentence) else text, lang,
                     no_speech_prob=min(p.no_speech_prob for p in parts),
                     avg_logprob=float(np.mean([p.avg_logprob for p in said])) if said else 0.0,
                     n_tokens=sum(p.n_tokens for p in parts), decode_calls=sum(p.decode_calls for p in parts),
                     decoder_steps=sum(p.decoder_steps for p in parts), timings=timings)

    def tail(self) -> np.ndarray:
        """The silent 30-s window behind every utterance (`silence_tail`): its encoder states [1, 1500, d].
        Computed on first use (one 30-s encode, about 0.6 s at 2 threads; Engine.warmup does it) and kept."""
        if self._tail is None:
            import ctranslate2

            mel = np.full((1, int(self.model.n_mels), 2 * WHISPER_POSITIONS), TAIL_FLOOR, np.float32)
            self._tail = np.array(self.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
        return self._tail

    def _window(self, audio: np.ndarray, short_window: bool = True) -> Heard:
        if not_speech(audio):
            return Heard("", self.language if self.language != "auto" else "en", no_speech_prob=1.0)
        short = self.in_short_window(audio, short_window)
        tail = self.silence_tail
        t0 = time.perf_counter()
        feats = self._features(audio, short_window)
        t1 = time.perf_counter()
        enc = self.model.encode(feats, to_cpu=self.decoder is not None or tail)
        t2 = time.perf_counter()
        lang = self.language
        if lang == "auto":
            lang = self.model.detect_language(enc)[0][0][0][2:-2]
        prompt = [self.index["<|startoftranscript|>"]]
        if self.multilingual:
            prompt += [self.index[f"<|{lang}|>"], self.index["<|transcribe|>"]]
        if not self.timestamps or (short and not self.short_timestamps) or (tail and not short):
            prompt.append(self.ts0 - 1)
        end_s = speech_end(audio)
        d = self._decode(enc, prompt, end_s, tail, short)
        t3 = time.perf_counter()
        n = len(d.ids)
        silent = n == 0 or any(d.no_speech > p and d.avg < lp for p, lp in NO_SPEECH_RULES)
        return Heard("" if silent else d.text, lang, no_speech_prob=d.no_speech, avg_logprob=d.avg,
                     n_tokens=n, decode_calls=d.calls, decoder_steps=d.steps,
                     timings={"features_ms": (t1 - t0) * 1e3, "encoder_ms": (t2 - t1) * 1e3,
                              "decoder_ms": (t3 - t2) * 1e3})

    def _decode(self, enc: Any, prompt: list[int], end_s: float, tail: bool = False, short: bool = False) -> _Decoded:
        """Decoding until the transcript ends (module docstring): greedily, and again with the beam where the
        greedy transcript looks unsure (`greedy_first`, HearingOptions.whisper_fallback_logprob). `tail`: the
        silent window's states follow `enc`'s; `short`: the short window's."""
        cap = int(12 + 8 * end_s)  # fast English runs near 5 tokens a second; timestamps add two a segment
        timestamps = prompt[-1] != self.ts0 - 1
        # without timestamps and without the tail no closing timestamp or end token shows that greedy decoding found
        # the end of the speech, so it would always look unsure; in the short window without timestamps the beam
        # hears a word or two better (HearingOptions.short_window_s). There the beam alone decodes.
        greedy_first = self.greedy_first and (timestamps or (tail and not short))
        beams = [1, self.beam_size] if greedy_first and self.beam_size > 1 else [self.beam_size]
        calls = steps = 0
        chosen: _Decoded | None = None
        utterance = None
        states = self._with_tail(enc) if tail and self.decoder is None else enc
        for beam in beams:
            if self.decoder is not None:  # the cross-attention and the prompt's pass serve every decoding
                utterance = utterance or self.decoder.utterance(np.asarray(enc), prompt,
                                                                tail=self.tail() if tail else None)
                r = utterance.greedy(cap) if beam == 1 else utterance.beam(beam, cap)
                ids, score, no_speech, n_steps, eot = r.ids, r.score, utterance.no_speech_prob, r.steps, r.ended
            else:
                # CTranslate2 counts Whisper's max_length in steps of which each new token takes two
                g = self.model.generate(states, [prompt], beam_size=beam, max_length=2 * cap, return_scores=True,
                                        return_no_speech_prob=True)[0]
                ids = list(g.sequences_ids[0])
                score, no_speech = float(g.scores[0]) if g.scores else 0.0, float(g.no_speech_prob)
                n_steps = len(ids) * beam
                eot = len(ids) < cap  # its sequences leave out <|endoftext|>: ended before the length bound
            calls += 1
            steps += n_steps
            text_ids, ended = self.cut_ended(ids, end_s)
            if not timestamps:
                ended = eot
            text = self.text_of(text_ids)
            said = unrepeat(text)
            d = _Decoded(text_ids, said, score, no_speech, ended=ended, unsure=not ended or said != text)
            if chosen is None:
                chosen = d
                if not (d.unsure or d.avg < self.fallback_logprob):
                    break
            elif d.ended or not chosen.ended:
                # the beam can loop where greedy decoding ended (seen on 1-2 s dev clips: "Agent logged in, agent
                # logged in, ..." to the length bound); then the greedy transcript is kept
                chosen = d
        assert chosen is not None
        chosen.calls, chosen.steps = calls, steps
        return chosen

    def _with_tail(self, enc: Any) -> Any:
        """CTranslate2's input for the decoder: the utterance's states `enc` followed by the silent window's from
        where they end (1,500 positions in all)."""
        import ctranslate2

        states = np.asarray(enc)
        silent = self.tail()
        if states.shape[1] < silent.shape[1]:
            states = np.concatenate([states, silent[:, states.shape[1]:]], axis=1)
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(states, np.float32))

    def cut(self, ids: Sequence[int], end_s: float) -> list[int]:
        """The text tokens of a decoded sequence, up to where the speech ends: the end of text, a closing
        timestamp at or past `end_s` - 0.4 s, a segment that repeats an earlier one, or a block of words said
        over and over within a segment (kept once)."""
        return self.cut_ended(ids, end_s)[0]

    def cut_ended(self, ids: Sequence[int], end_s: float) -> tuple[list[int], bool]:
        """`cut`, and whether the sequence ended there (False: it ran on to the length bound, or a segment said
        its words over and over)."""
        segments: list[tuple[int, ...]] = []
        current: list[int] = []
        ended = False
        for t in ids:
            if t == self.eot:
                ended = True
                break
            if t >= self.ts0:
                if current:  # a closing timestamp: the segment is complete
                    seg = tuple(_unloop(current))
                    current = []
                    if seg in segments:  # the decoder started over
                        ended = True
                        break
                    segments.append(seg)
                    if (t - self.ts0) * TIMESTAMP_S >= end_s - 0.4:
                        ended = True
                        break
            elif t < self.eot:
                current.append(t)
        if current:
            segments.append(tuple(_unloop(current)))
        return [t for seg in segments for t in seg], ended


@dataclass
class _Decoded:
    """One decoding of a window: the text tokens up to the end of the speech, their text with repeats dropped,
    the mean log-probability a token, the no-speech probability, whether the decoder ended by itself, whether the
    transcript looks unsure (no end found, or words said over), and the decoder calls and steps it took."""

    ids: list[int]
    text: str
    avg: float
    no_speech: float
    ended: bool
    unsure: bool
    calls: int = 0
    steps: int = 0


# a question's opening words: a transcript whose last sentence starts with one ends with a question mark
_ASKS = frozenset("what which who whom whose when where why how is are am was were do does did can could will would "
                  "should shall may might must have has had".split())
_PREPOSITIONS = frozenset("on in at for from to with by of about into during after before".split())


def sentence_case(text: str) -> str:
    """`text` as a sentence: a capital first letter, no trailing comma, and a question mark where its last sentence
    opens as a question ("which is heavier, a or b." -> "Which is heavier, a or b?", also after a preposition: "On
    which day ...?"), else a full stop where it has no end mark. Words and digits stay as heard. Whisper writes a
    question's first letter in lower case or ends it with "," or "." often enough on short clips, and the LLM
    answers "which month comes after June?" otherwise than the same question typed."""
    t = re.sub(r"[\s,;:]+$", "", text.strip())
    if not t:
        return t
    t = t[0].upper() + t[1:]
    last = re.split(r"(?<=[.!?])\s+", t)[-1]
    w = [re.sub(r"\W", "", x.lower()) for x in last.split()[:2]]
    asks = w[0] in _ASKS or (len(w) > 1 and w[0] in _PREPOSITIONS and w[1] in ("which", "what", "whom", "whose"))
    if asks and not t.endswith("?"):
        return t.rstrip(".!") + "?"
    # a full stop after a Latin letter or digit only: Mandarin ends with its own mark or none
    return t + "." if t[-1].isascii() and t[-1].isalnum() else t


def unrepeat(text: str, min_words: int = 3) -> str:
    """`text` up to the end of the first run of `min_words` or more words said again right after itself (case and
    punctuation aside): "how many days are there in a week, how many days are there in a week, how many" -> "how
    many days are there in a week". A decoder past the end of its speech starts the sentence over; a person rarely
    says three words twice in a row."""
    words = text.split()
    norm = [re.sub(r"\W", "", w.lower()) for w in words]
    for k in range(min_words, len(words) // 2 + 1):
        for i in range(len(words) - 2 * k + 1):
            if all(norm[i:i + k]) and norm[i:i + k] == norm[i + k:i + 2 * k]:
                return " ".join(words[:i + k]).rstrip(",;:")
    return text


def _unloop(ids: list[int], max_block: int = 8) -> list[int]:
    """`ids` with a trailing block of tokens that repeats (three times or more, or twice for blocks of 4+
    tokens) kept once: a decoder past the end of its speech says the last words again ("5 5 5 5 ...")."""
    for size in range(1, max_block + 1):
        need = 3 if size < 4 else 2
        for start in range(0, len(ids) - need * size + 1):
            block = ids[start:start + size]
            k = 1
            while ids[start + k * size:start + (k + 1) * size] == block:
                k += 1
            if k >= need and start + k * size >= len(ids) - size:
                return ids[:start + size]
    return ids


def _vocabulary(path: Path) -> list[str]:
    import json

    if (path / "vocabulary.json").is_file():
        return list(json.loads((path / "vocabulary.json").read_text(encoding="utf-8")))
    if (path / "vocabulary.txt").is_file():
        return (path / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1] or []
    raise HearingError(f"{path} has no vocabulary.txt or vocabulary.json: it is not a CTranslate2 Whisper model "
                       "with its decoder; hear with the bundle's adaptor (--hearing adaptor)")


class StreamingHearing:
    """Hearing an utterance while it is spoken: the audio so far arrives again and again, each time longer.

    Whenever the unheard rest is longer than `min_piece_s` + `keep_s` and has a pause (100 ms at least
    `pause_db` under its loud frames) between its first `min_piece_s` / 2 and its last `keep_s` seconds, the
    audio up to the quietest point is heard once and kept ("committed"); each call then decodes only what
    follows. When the utterance ends, what remains to hear is its last piece, not the whole of it."""

    def __init__(self, hearing: WhisperHearing, *, min_piece_s: float = 3.0, keep_s: float = 1.0,
                 pause_db: float = -30.0) -> None:
        self.hearing = hearing
        self.min_piece_s = min_piece_s
        self.keep_s = keep_s
        self.pause_db = pause_db
        self._audio = np.zeros(0, np.float32)  # the committed audio
        self._texts: list[str] = []

    def reset(self) -> None:
        self._audio = np.zeros(0, np.float32)
        self._texts = []

    def hear(self, audio: np.ndarray, *, commit: bool = True, partial: bool = False) -> Heard:
        """The transcript of `audio`, reusing the committed pieces when `audio` starts with them; with `commit`,
        long enough unheard audio with a pause in it is committed first (the class docstring). `partial`: a view
        of an utterance still being spoken, whose uncommitted rest is heard without the short-utterance window
        (HearingOptions.short_window_s): the turn hears it again when the utterance ends, and the long window's
        encode every half second while the first seconds are spoken would hold the engine the turn waits for."""
        audio = np.asarray(audio, np.float32)
        n = len(self._audio)
        if not (n and len(audio) >= n and np.array_equal(audio[:n], self._audio)):
            self.reset()
            n = 0
        t0 = time.perf_counter()
        while commit:
            cut = self._pause(audio[n:])
            if cut is None:
                break
            piece = self.hearing.transcribe(audio[n:n + cut], sentence=False)
            self._audio = audio[:n + cut].copy()
            self._texts.append(piece.text)
            n += cut
        rest = audio[n:]
        if len(rest) >= 0.1 * SAMPLE_RATE:
            heard = self.hearing.transcribe(rest, sentence=False, short_window=not partial)
        else:
            heard = Heard("", self.hearing.language)
        text = " ".join(t for t in [*self._texts, heard.text] if t)
        if self.hearing.sentence:  # the utterance is one sentence or more, not each piece cut at a pause
            text = sentence_case(text)
        heard.timings["hearing_ms"] = (time.perf_counter() - t0) * 1e3
        heard.timings["committed_s"] = n / SAMPLE_RATE
        return dataclasses.replace(heard, text=text)

    def _pause(self, rest: np.ndarray) -> int | None:
        """Where to cut `rest` (samples from its start), or None when it is short or has no pause."""
        if len(rest) < (self.min_piece_s + self.keep_s) * SAMPLE_RATE:
            return None
        hop = SAMPLE_RATE // 100
        frames = np.asarray(rest[: len(rest) - len(rest) % hop], np.float64).reshape(-1, hop)
        energy = np.convolve(np.mean(frames**2, axis=1), np.ones(10) / 10, mode="same") + 1e-12
        lo, hi = int(self.min_piece_s / 2 * 100), len(energy) - int(self.keep_s * 100)
        if hi <= lo:
            return None
        i = lo + int(np.argmin(energy[lo:hi]))
        loud = np.percentile(energy, 90)
        return i * hop if 10 * np.log10(energy[i] / loud) < self.pause_db else None
