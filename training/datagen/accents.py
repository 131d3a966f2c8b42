"""Generated English accents for espeak-ng (`--voice-set random`): more accents than espeak-ng's five training ones.

espeak-ng speaks an accent with two parts: its pronunciation rules (which phonemes a word gets) and its phoneme
table (how each phoneme sounds). A generated accent `xaNNN` crosses them: one training accent's rules write the
phonemes (`espeak-ng -x`), some pronunciation changes common across English accents rewrite them consistently,
and another training accent's table speaks them (`[[...]]` phoneme input, the clause punctuation kept, so
questions still rise). The changes, each drawn or not per accent: TH-stopping or TH-fronting, h-dropping,
full vowels for schwa, vowel shifts between neighbouring vowels, word-final devoicing of z, w/v merging, and
final t/d dropped after a consonant. The held-out accents (`tts.EVAL_ACCENTS`) are never used, neither as rules
nor as table. The same index always gives the same accent.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

RANDOM_ACCENTS = 60  # generated accents `--voice-set random` adds to the training accents
# espeak-ng's English accents that training may use for rules and tables (the held-out en-029 and
# en-gb-x-gbcwmd never)
SOURCE_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-us-nyc")
NAME = re.compile(r"xa(\d{3})")

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
