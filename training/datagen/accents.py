"""Generated English accents for espeak-ng (`--voice-set random`): more accents than espeak-ng's five training ones.

espeak-ng speaks an accent with two parts: its pronunciation rules (which phonemes a word gets) and its phoneme
table (how each phoneme sounds). A generated accent `xaNNN` crosses them: one training accent's rules write the
phonemes (`espeak-ng -x`), some pronunciation changes common across English accents rewrite them consistently,
and another training accent's table speaks them (`[[...]]` phoneme input, the clause punctuation kept, so
questions still rise). The changes, each drawn or not per accent: TH-stopping or TH-fronting, h-dropping,
full vowels for schwa, vowel shifts between neighbouring vowels, word-final devoicing of z, w/v merging, and
final t/d dropped after a consonant. The held-out accents (`tts.EVAL_ACCENTS`) are never used, neither as rules
nor as table. The same index always gives the same accent.

A foreign accent `xfNNN` (`--voice-set foreign`) is English as a speaker of another language says it: a training
accent's rules write the phonemes and another language's phoneme table (`FOREIGN_TABLES`) speaks them. Its
English vowels go to the nearest vowels that table has (`_VOWEL_CHAINS`; each accent keeps a drawn share of the
English vowels the table knows), and some consonants are drawn (TH as t, s or f; h dropped; r trilled...).
espeak-ng silently drops a vowel its table does not know, so which vowels a table has is asked of espeak-ng
itself (`known_vowels`).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

RANDOM_ACCENTS = 60  # generated accents `--voice-set random` adds to the training accents
# espeak-ng's English accents that training may use for rules and tables (the held-out en-029 and
# en-gb-x-gbcwmd never)
SOURCE_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-us-nyc")
NAME = re.compile(r"xa(\d{3})")
FOREIGN_ACCENTS = 60  # foreign accents `--voice-set foreign` adds to the random set
# the languages whose phoneme tables speak them: broad, Latin-mnemonic tables without tones (espeak-ng's nl and
# vi echo no vowel back, so their inventories cannot be asked; ru's names its a-vowels A)
FOREIGN_TABLES = ("es", "fr", "de", "it", "pt", "pl", "hi", "tr", "id", "sw", "ro", "cs", "hu", "sv", "ja",
                  "ko", "ar", "fa", "el", "fi", "da", "bn", "ta")
FOREIGN_NAME = re.compile(r"xf(\d{3})")

# espeak-ng's English phoneme mnemonics, longest first (what `-x` writes); other characters (stress, pauses,
# word breaks) pass through untouched
_PHONEMES = sorted("""a a# aa A: A@ aI aI@ aI3 aU aU@ @ @2 @5 @L 3 3: e e@ eI E i i: i@ I I# I2 0 0# O: O@ o@ OI oU
u: U U@ V p b t t# d d# k g f v T D s z S Z h m n N l r r- j w tS dZ n- l- ?""".split(), key=len, reverse=True)
_TOKEN = re.compile("|".join(re.escape(p) for p in _PHONEMES) + r"|.", re.S)
_PHONE_SET = set(_PHONEMES)
_CONSONANTS = set("p b t d k g f v T D s z S Z h m n N l r j w tS dZ".split())

# vowel shifts an accent may draw (each a consistent substitution, as accents differ)
_VOWEL_SHIFTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("V", ("U", "@", "0")), ("a", ("aa", "E", "A:")), ("aa", ("A:", "a")), ("0", ("A:", "O:")),
    ("eI", ("E", "e")), ("oU", ("O:", "0")), ("I", ("i:", "i")), ("i:", ("I",)), ("U", ("u:",)), ("u:", ("U",)),
    ("aI", ("A:", "OI")), ("aU", ("a", "U")), ("3:", ("e@", "V")), ("E", ("e", "a")), ("O:", ("0", "oU")),
)


# each English vowel (espeak-ng's mnemonic) and what a foreign table may say instead, nearest first: the English
# vowel itself when the table has it (kept with the accent's drawn probability), else the first candidate the
# table says as written (`known_vowels`); the glides (j, w) in the last candidates keep two vowels apart, which
# every table in FOREIGN_TABLES says
_VOWEL_CHAINS: dict[str, tuple[str, ...]] = {
    "a": ("a", "E", "e"), "a#": ("a#", "a", "@"), "aa": ("aa", "a:", "a"), "A:": ("A:", "a:", "a"),
    "A@": ("A@", "A:r", "a:r", "ar"), "@": ("@", "e", "a"), "@2": ("@2", "@", "e"), "@5": ("@5", "@", "u"),
    "@L": ("@L", "@l", "el"), "3": ("3", "@r", "er"), "3:": ("3:", "@:r", "Er", "er"), "e": ("e",),
    "e@": ("e@", "E:r", "Er", "er"), "eI": ("eI", "ei", "e:", "e"), "E": ("E", "e"), "i": ("i",), "i:": ("i:", "i"),
    "i@": ("i@", "ija"), "I": ("I", "i"), "I#": ("I#", "I", "i"), "I2": ("I2", "I", "i"), "0": ("0", "O", "o"),
    "0#": ("0#", "O", "o"), "O:": ("O:", "O", "o:", "o"), "O@": ("O@", "Or", "or"), "o@": ("o@", "Or", "or"),
    "OI": ("OI", "Oi", "oi", "oj"), "oU": ("oU", "ou", "o:", "o"), "u:": ("u:", "u"), "U": ("U", "u"),
    "U@": ("U@", "uwa"), "V": ("V", "a", "@", "o"), "aI": ("aI", "ai", "aj"), "aI@": ("aI@", "aja"),
    "aI3": ("aI3", "aI@", "aja"), "aU": ("aU", "au", "aw"), "aU@": ("aU@", "awa"),
}
_ENGLISH_ONLY = {"t#": "t", "d#": "d", "r-": "r", "l-": "l", "n-": "n"}  # English-table consonant forms
_SAYINGS = sorted({o for c in _VOWEL_CHAINS.values() for o in c})  # what `known_vowels` probes


@dataclass(frozen=True)
class Accent:
    index: int
    rules: str  # the espeak-ng accent whose pronunciation rules write the phonemes
    table: str  # the espeak-ng accent whose phoneme table speaks them
    subs: tuple[tuple[str, str], ...]  # phoneme -> phoneme (or "" to drop), applied everywhere
    drop_final_stop: bool  # t/d dropped at the end of a word after another consonant
    devoice_final_z: bool

    def rewrite(self, phonemes: str) -> str:
        """One clause's `espeak-ng -x` phonemes, spoken with this accent's changes."""
        out, subs = [], dict(self.subs)
        for word in phonemes.split(" "):
            toks = [subs.get(t, t) for t in _TOKEN.findall(word)]
            phones = [i for i, t in enumerate(toks) if t in _PHONE_SET]
            if phones:
                last = phones[-1]
                if self.devoice_final_z and toks[last] == "z":
                    toks[last] = "s"
                if (self.drop_final_stop and toks[last] in ("t", "d") and len(phones) > 2
                        and toks[phones[-2]] in _CONSONANTS):
                    toks[last] = ""
            out.append("".join(toks))
        return " ".join(w for w in out if w)


def random_accent(index: int) -> Accent:
    """Generated accent `index` (0-999): a fixed draw per index."""
    if not 0 <= index < 1000:
        raise ValueError(f"generated accents are numbered 0-999, not {index}")
    rng = random.Random(f"llasm-xa1-{index}")
    rules, table = rng.choice(SOURCE_ACCENTS), rng.choice(SOURCE_ACCENTS)
    subs: dict[str, str] = {}
    th = rng.random()
    if th < 0.3:
        subs |= {"T": "t", "D": "d"}
    elif th < 0.45:
        subs |= {"T": "f", "D": "v"}
    if rng.random() < 0.25:
        subs["h"] = ""
    if rng.random() < 0.25:
        subs |= {"@": rng.choice(("a#", "V", "E")), "@2": "a#"}
    for vowel, options in rng.sample(_VOWEL_SHIFTS, rng.randint(0, 4)):
        if vowel not in subs:
            subs[vowel] = rng.choice(options)
    wv = rng.random()
    if wv < 0.08:
        subs["v"] = "w"
    elif wv < 0.16:
        subs["w"] = "v"
    return Accent(index, rules, table, tuple(sorted(subs.items())), rng.random() < 0.2, rng.random() < 0.2)


@cache
def known_vowels(table: str) -> frozenset[str]:
    """Which of the vowel sayings in `_VOWEL_CHAINS` espeak-ng's `table` speaks as written: it echoes `[[b'Vb]]`
    back unchanged when its table has the vowels V and drops or splits them otherwise (its own marks aside: ";"
    between vowels, "*" for a flapped r)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    probe = " ".join(f"b'{v}b" for v in _SAYINGS)
    out = subprocess.run([exe, "-v", table, "-q", "-x", f"[[{probe}]]"], capture_output=True, text=True,
                         timeout=60).stdout.split()
    if len(out) != len(_SAYINGS):
        raise RuntimeError(f"espeak-ng's {table!r} table echoed {len(out)} words for {len(_SAYINGS)} probed vowels")
    said = [w.replace(";", "").replace("*", "r") for w in out]
    return frozenset(v for v, w in zip(_SAYINGS, said, strict=True) if re.fullmatch(rf"[bBp]'{re.escape(v)}[bpB]", w))


def foreign_accent(index: int) -> Accent:
    """Foreign accent `index` (0-999): a training accent's rules, a `FOREIGN_TABLES` table, a fixed draw."""
    if not 0 <= index < 1000:
        raise ValueError(f"foreign accents are numbered 0-999, not {index}")
    rng = random.Random(f"llasm-xf1-{index}")
    rules, table = rng.choice(SOURCE_ACCENTS), FOREIGN_TABLES[index % len(FOREIGN_TABLES)]
    known = known_vowels(table)
    keep = rng.uniform(0.0, 0.6)  # the share of English vowels the table has that the accent keeps
    subs: dict[str, str] = dict(_ENGLISH_ONLY)
    for vowel, chain in _VOWEL_CHAINS.items():
        english_ok = vowel in known and rng.random() < keep
        subs[vowel] = vowel if english_ok else next(o for o in chain[1:] or chain if o in known)
    for phone, options, weights in (("T", ("T", "t", "s", "f"), (3, 4, 2, 1)), ("D", ("D", "d", "z"), (3, 5, 2)),
                                    ("h", ("h", "", "x"), (6, 3, 1)), ("r", ("r", "R"), (6, 4)),
                                    ("w", ("w", "v"), (9, 1)), ("v", ("v", "w", "b"), (8, 1, 1)),
                                    ("N", ("N", "Ng"), (7, 3))):
        subs[phone] = rng.choices(options, weights)[0]
    return Accent(index, rules, table, tuple(sorted((k, v) for k, v in subs.items() if k != v)),
                  rng.random() < 0.3, rng.random() < 0.3)


_CLAUSE = re.compile(r"[^,.;:?!]+[,.;:?!]*")


def phoneme_input(accent: Accent, text: str, clauses: list[str]) -> str:
    """espeak-ng input that speaks `text` in `accent`: each clause's rewritten phonemes (`clauses`, the lines
    `espeak-ng -v RULES -q -x` wrote) in `[[...]]` followed by the text's own punctuation, so intonation stays.
    When the clauses do not line up with the text's punctuation, one phrase with the text's final mark."""
    parts = [p.strip() for p in _CLAUSE.findall(text) if p.strip(" ,.;:?!")]
    lines = [accent.rewrite(c.strip()) for c in clauses if c.strip()]
    if len(parts) == len(lines):
        marks = [re.sub(r"[^,.;:?!]", "", p)[-1:] or ("," if i < len(parts) - 1 else ".")
                 for i, p in enumerate(parts)]
        return " ".join(f"[[{line}]]{mark}" for line, mark in zip(lines, marks, strict=True))
    end = text.strip()[-1:] if text.strip()[-1:] in "?!." else "."
    return "[[" + " ".join(lines) + "]]" + end
