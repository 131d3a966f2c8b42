"""Text-to-speech backends for the dataset builder: espeak-ng (many voices, English and Mandarin) and hibari.

A voice is a string `backend:name`: `espeak:en-us+f3` (espeak-ng language + variant), `espeak:cmn+m2`,
`hibari:heart`. `synthesize(voice, text, rate=..., pitch=...)` returns float32 samples at the backend's own
rate; the builder resamples with `assistant.audio.load_audio`.

Held-out voices: a voice belongs to the eval split when its accent is in `EVAL_ACCENTS` or its variant in
`EVAL_VARIANTS`; training never hears those accents or variants.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assistant.audio import load_audio

ESPEAK_EN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
ESPEAK_ZH_ACCENTS = ("cmn",)
# variants that sound like a person (the robot and novelty variants are left out)
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "Andy", "Annie", "Michael", "Mike", "linda", "steph", "adam", "paul", "john", "max")
# `--voice-set wide` adds these: espeak-ng's other human-sounding variants (robots, whispers, croaks and
# "fast" left out), about three times the training voices of the base set
ESPEAK_VARIANTS_WIDE = ("Alex", "Alicia", "Andrea", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
                        "Hugo", "Jacky", "Lee", "Marco", "Mario", "Nguyen", "RicishayMax", "RicishayMax2",
                        "RicishayMax3", "Storm", "announcer", "aunty", "belinda", "benjamin", "boris", "caleb",
                        "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3",
                        "iven4", "kaukovalta", "klatt4", "klatt5", "klatt6", "m8", "marcelo", "michel", "miguel",
                        "norbert", "pablo", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph2",
                        "steph3", "travis", "victor", "zac")
VOICE_SETS = ("base", "wide")
EVAL_ACCENTS = ("en-029", "en-gb-x-gbcwmd")
EVAL_VARIANTS = ("f5", "m7", "Annie", "Mike", "klatt3")
HIBARI_VOICES = ("heart",)


class TtsError(RuntimeError):
    """A TTS backend is missing or failed; the message names the fix."""


@dataclass(frozen=True)
class Voice:
    backend: str  # "espeak" | "hibari"
    name: str  # "en-us+f3" | "heart"
    language: str  # "en" | "zh"

    @property
    def id(self) -> str:
        return f"{self.backend}:{self.name}"

    @property
    def held_out(self) -> bool:
        if self.backend != "espeak":
            return False
        accent, _, variant = self.name.partition("+")
        return accent in EVAL_ACCENTS or variant in EVAL_VARIANTS

    @classmethod
    def parse(cls, voice_id: str) -> Voice:
        backend, _, name = voice_id.partition(":")
        if backend == "espeak" and name:
            return cls("espeak", name, "zh" if name.split("+")[0] in ESPEAK_ZH_ACCENTS else "en")
        if backend == "hibari" and name:
            return cls("hibari", name, "en")
        raise TtsError(f"unknown voice {voice_id!r}: use espeak:<lang>+<variant> or hibari:<voice>")


def available_backends() -> list[str]:
    out = []
    if shutil.which("espeak-ng"):
        out.append("espeak")
    try:
        import hibari  # noqa: F401

        out.append("hibari")
    except ImportError:
        pass
    return out


def voices(backends: tuple[str, ...] = ("espeak", "hibari"), language: str = "en",
           voice_set: str = "base") -> list[Voice]:
    """All voices of `backends` for `language` ("en" or "zh"), train and held-out alike. `voice_set` "wide"
    adds `ESPEAK_VARIANTS_WIDE` to the espeak-ng variants."""
    if voice_set not in VOICE_SETS:
        raise TtsError(f"unknown voice set {voice_set!r}: use {' or '.join(VOICE_SETS)}")
    variants = ESPEAK_VARIANTS + (ESPEAK_VARIANTS_WIDE if voice_set == "wide" else ())
    out = []
    if "espeak" in backends:
        accents = ESPEAK_EN_ACCENTS if language == "en" else ESPEAK_ZH_ACCENTS
        out += [Voice("espeak", f"{a}+{v}", language) for a in accents for v in variants]
    if "hibari" in backends and language == "en":
        out += [Voice("hibari", v, "en") for v in HIBARI_VOICES]
    return out


def espeak(voice: Voice, text: str, *, rate: float = 1.0, pitch: int = 50) -> tuple[np.ndarray, int]:
    """espeak-ng speech: `rate` scales its default 175 words a minute, `pitch` is 0-99."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TtsError("espeak-ng is not installed: apt-get install espeak-ng")
    cmd = [exe, "-v", voice.name, "-s", str(int(round(175 * rate))), "-p", str(int(pitch)), "--stdout", "--", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TtsError(f"espeak-ng failed for voice {voice.name!r}: {err[-1] if err else 'no audio'}")
    audio = load_audio(proc.stdout, max_seconds=None)
    return audio, 16000


@lru_cache(maxsize=2)
def _hibari(name: str):  # noqa: ANN202 -- the hibari object, loaded once per process
    try:
        import hibari
        from hibari.voices import voice_path
    except ImportError as e:
        raise TtsError(f"hibari voices need the hibari-tts package ({e}): pip install hibari-tts") from None
    path = voice_path(name, download_missing=False)
    if not path:
        raise TtsError(f"hibari voice {name!r} is not installed offline; use hibari:heart")
    return hibari.Hibari(voice=name, model=str(path), threads=1), int(hibari.SAMPLE_RATE)


def hibari_tts(voice: Voice, text: str, *, rate: float = 1.0, seed: int = 0) -> tuple[np.ndarray, int]:
    tts, sr = _hibari(voice.name)
    return np.asarray(tts(text, speed=rate, seed=seed), dtype=np.float32), sr


def synthesize(voice: Voice, text: str, *, rate: float = 1.0, pitch: int = 50, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speech for `text` in `voice`: (float32 samples, sample rate)."""
    if voice.backend == "espeak":
        return espeak(voice, text, rate=rate, pitch=pitch)
    if voice.backend == "hibari":
        return hibari_tts(voice, text, rate=rate, seed=seed)
    raise TtsError(f"unknown TTS backend {voice.backend!r}")
