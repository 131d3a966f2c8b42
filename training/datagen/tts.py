"""Text-to-speech backends for the dataset builder: espeak-ng (many voices, English and Mandarin) and hibari.

A voice is a string `backend:name`: `espeak:en-us+f3` (espeak-ng language + variant), `espeak:cmn+m2`,
`hibari:heart`. `synthesize(voice, text, rate=..., pitch=...)` returns float32 samples at the backend's own
rate; the builder resamples with `assistant.audio.load_audio`.

Held-out voices: a voice belongs to the eval split when its accent is in `EVAL_ACCENTS` or its variant in
`EVAL_VARIANTS`; training never hears those accents or variants.

`--voice-set random` adds `accents.RANDOM_ACCENTS` generated accents (`xa000` ...; `accents.py`) and
`RANDOM_VARIANTS` generated speakers (`rv000`, `rv001`, ...) to the wide set: espeak-ng variant files drawn from a
seed per index (pitch, vocal-tract length through the formant frequencies, formant heights and widths, breath,
roughness, flutter, echo, and one of espeak-ng's Klatt modes other than the held-out `klatt3`). They live in a
private espeak-ng data folder (`espeak_data_dir`: links to the system's data, its English and Mandarin languages
and the foreign accents' tables only, and the generated files), built once in the user's cache; the same index always gives the same speaker.
`--voice-set foreign` adds `accents.FOREIGN_ACCENTS` foreign accents (`xf000` ...: English spoken through other
languages' phoneme tables) to the random set.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from llasm.assistant.audio import load_audio
from llasm.training.datagen import accents
from llasm.training.datagen.accents import FOREIGN_ACCENTS, FOREIGN_TABLES, RANDOM_ACCENTS

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
VOICE_SETS = ("base", "wide", "random", "foreign")
RANDOM_VARIANTS = 300  # generated speakers `--voice-set random` adds to the wide set
RANDOM_VERSION = 1  # bump when `random_variant` changes: the cache folder is named after it
_RANDOM_NAME = re.compile(r"rv\d{3}")
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
    adds `ESPEAK_VARIANTS_WIDE` to the espeak-ng variants, "random" those, `RANDOM_VARIANTS` generated ones and
    `RANDOM_ACCENTS` generated English accents, "foreign" those and `FOREIGN_ACCENTS` foreign accents."""
    if voice_set not in VOICE_SETS:
        raise TtsError(f"unknown voice set {voice_set!r}: use {' or '.join(VOICE_SETS)}")
    variants = ESPEAK_VARIANTS + (ESPEAK_VARIANTS_WIDE if voice_set != "base" else ())
    if voice_set in ("random", "foreign"):
        variants += tuple(f"rv{i:03d}" for i in range(RANDOM_VARIANTS))
    out = []
    if "espeak" in backends:
        accents = ESPEAK_EN_ACCENTS if language == "en" else ESPEAK_ZH_ACCENTS
        if voice_set in ("random", "foreign") and language == "en":
            accents += tuple(f"xa{i:03d}" for i in range(RANDOM_ACCENTS))
        if voice_set == "foreign" and language == "en":
            accents += tuple(f"xf{i:03d}" for i in range(FOREIGN_ACCENTS))
        out += [Voice("espeak", f"{a}+{v}", language) for a in accents for v in variants]
    if "hibari" in backends and language == "en":
        out += [Voice("hibari", v, "en") for v in HIBARI_VOICES]
    return out


def espeak(voice: Voice, text: str, *, rate: float = 1.0, pitch: int = 50) -> tuple[np.ndarray, int]:
    """espeak-ng speech: `rate` scales its default 175 words a minute, `pitch` is 0-99."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TtsError("espeak-ng is not installed: apt-get install espeak-ng")
    accent, _, variant = voice.name.partition("+")
    private = [f"--path={espeak_data_dir()}"] if _RANDOM_NAME.fullmatch(variant) else []
    m, f = accents.NAME.fullmatch(accent), accents.FOREIGN_NAME.fullmatch(accent)
    if m or f:  # a generated accent: one accent's rules write the phonemes, rewritten, another's table speaks them
        try:
            acc = accents.random_accent(int(m.group(1))) if m else accents.foreign_accent(int(f.group(1)))
        except RuntimeError as e:  # espeak-ng could not say which vowels a foreign table has
            raise TtsError(str(e)) from None
        proc = subprocess.run([exe, "-v", acc.rules, "-q", "-x", "--", text], capture_output=True, timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise TtsError(f"espeak-ng could not write phonemes for {text!r} in {acc.rules!r}")
        text = accents.phoneme_input(acc, text, proc.stdout.decode(errors="replace").splitlines())
        name = acc.table + (f"+{variant}" if variant else "")
    else:
        name = voice.name
    cmd = [exe, *private, "-v", name, "-s", str(int(round(175 * rate))), "-p", str(int(pitch)), "--stdout", "--",
           text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TtsError(f"espeak-ng failed for voice {voice.name!r}: {err[-1] if err else 'no audio'}")
    audio = load_audio(proc.stdout, max_seconds=None)
    return audio, 16000


def random_variant(index: int) -> str:
    """The espeak-ng variant file of generated speaker `index` (`rv000` ...): a fixed draw per index."""
    if not 0 <= index < 1000:
        raise TtsError(f"generated speakers are numbered 0-999, not {index}")
    rng = random.Random(f"llasm-rv{RANDOM_VERSION}-{index}")
    female = rng.random() < 0.5
    # vocal-tract length: formant frequencies scale together (shorter tract, higher formants), with a little
    # independent jitter a formant; heights and widths change the timbre
    tract = rng.uniform(1.02, 1.22) if female else rng.uniform(0.86, 1.04)
    base = rng.uniform(150, 215) if female else rng.uniform(72, 125)
    lines = ["language variant", f"name rv{index:03d}", f"gender {'female' if female else 'male'}",
             f"pitch {base:.0f} {base * rng.uniform(1.3, 1.9):.0f}"]
    for k in range(9):
        freq = 100 * tract * rng.uniform(0.95, 1.05) if 1 <= k <= 5 else 100.0
        lines.append(f"formant {k} {freq:.0f} {rng.uniform(70, 130):.0f} {rng.uniform(75, 150):.0f}")
    if rng.random() < 0.4:
        lines.append(f"flutter {rng.randint(0, 30)}")
    if rng.random() < 0.3:
        lines.append(f"roughness {rng.randint(1, 5)}")
    if rng.random() < 0.25:
        lines.append("breath " + " ".join(str(rng.randint(0, 6)) for _ in range(8)))
    if rng.random() < 0.2:
        lines.append(f"echo {rng.randint(40, 160)} {rng.randint(5, 15)}")
    lines.append(f"consonants {rng.randint(80, 120)}")
    if rng.random() < 0.25:
        lines.append(f"klatt {rng.choice((1, 2, 4))}")  # klatt 3 is the held-out variant's synthesizer
    return "\n".join(lines) + "\n"


def _system_espeak_data() -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TtsError("espeak-ng is not installed: apt-get install espeak-ng")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    if not m or not (Path(m.group(1)) / "voices" / "!v").is_dir():
        raise TtsError(f"cannot find espeak-ng's data folder (espeak-ng --version said {out.strip()!r})")
    return Path(m.group(1))


@lru_cache(maxsize=1)
def espeak_data_dir() -> Path:
    """A private espeak-ng data folder holding the generated speakers: the folder `--path` takes (its
    `espeak-ng-data` links to the system's data, English, Mandarin and `FOREIGN_TABLES` only, with `voices/!v`
    holding `rv000` ...).
    Built once, atomically."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llasm"
    root = cache / f"espeak-random-v{RANDOM_VERSION}-{RANDOM_VARIANTS}-f{len(FOREIGN_TABLES)}"
    if (root / "espeak-ng-data" / "voices" / "!v" / f"rv{RANDOM_VARIANTS - 1:03d}").is_file():
        return root
    system = _system_espeak_data()
    tmp = cache / f".tmp-{root.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    data = tmp / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True)
    # espeak-ng lists at most 349 voices and silently speaks the plain language past that: the private folder
    # lists the English and Mandarin languages, the foreign accents' tables and the generated variants only
    for entry in system.iterdir():
        if entry.name not in ("voices", "lang"):
            (data / entry.name).symlink_to(entry)
    for lang in [*system.glob("lang/*"), *system.glob("lang/*/*")]:
        if lang.is_file() and (lang.name.lower().startswith(("en", "cmn")) or lang.name in FOREIGN_TABLES):
            (data / lang.relative_to(system)).parent.mkdir(parents=True, exist_ok=True)
            (data / lang.relative_to(system)).symlink_to(lang)
    for i in range(RANDOM_VARIANTS):
        (data / "voices" / "!v" / f"rv{i:03d}").write_text(random_variant(i))
    _check_variants(tmp)
    try:
        tmp.rename(root)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_variants(root: Path) -> None:
    """espeak-ng speaks an unknown variant as the plain language, silently: ask it which variants it lists, and
    whether it lists the foreign accents' languages."""
    exe = shutil.which("espeak-ng") or "espeak-ng"
    out = subprocess.run([exe, f"--path={root}", "--voices=variant"], capture_output=True, text=True,
                         timeout=60).stdout
    listed = set(re.findall(r"\brv\d{3}\b", out))
    if len(listed) != RANDOM_VARIANTS:
        raise TtsError(f"espeak-ng lists {len(listed)} of the {RANDOM_VARIANTS} generated speakers in {root}: "
                       "remove that folder and retry")
    langs = subprocess.run([exe, f"--path={root}", "--voices"], capture_output=True, text=True, timeout=60).stdout
    missing = set(FOREIGN_TABLES) - {line.split()[4].rpartition("/")[2] for line in langs.splitlines()[1:]
                                     if len(line.split()) > 4}
    if missing:
        raise TtsError(f"espeak-ng does not list the foreign accents' languages {', '.join(sorted(missing))} in "
                       f"{root}: remove that folder and retry")


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
