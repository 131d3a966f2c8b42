"""Offline text for the speech datasets: natural English and Chinese sentences from Debian packages.

Sources (all read from the local file system, nothing downloads):
- `fortunes` (Debian `fortunes`, `fortunes-min`): quotations and jokes, split into sentences;
- `wordnet` (Debian `wordnet-base`): the usage examples in WordNet's glosses ("he ran quickly to the station");
- `templates`: generated sentences with numbers, times, dates, names, places, questions and commands
  (`sentences_from_templates`), because the other sources are short on the things people say to an assistant;
- Chinese: `fortunes-zh` (`chinese`, `tang300`, `song100`), split at Chinese sentence punctuation.

Filtering keeps natural sentences: printable ASCII after normalising quotes and dashes, 4-20 words, starts
with a capital and ends with . ! or ?, balanced quotes and brackets, no markup, URLs, code or shouting,
and at least 85 % of the words known to WordNet or a list of function words (which drops Unix jargon and
word salad). Duplicates are removed case- and punctuation-insensitively.
"""

from __future__ import annotations

import random
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
# fortune files that are not prose, not English, or offensive
_SKIP_FORTUNES = {"art", "ascii-art", "chinese", "tang300", "song100", "translate-me", "perl", "zippy", "off"}
ZH_FORTUNES = ("chinese", "tang300", "song100")

FUNCTION_WORDS = set(
    """a an the and or but nor so yet for of to in on at by with from into onto upon about above below over
    under between among through during before after since until while as than then there here where when why
    how what which who whom whose that this these those i me my mine myself you your yours yourself yourselves
    he him his himself she her hers herself it its itself we us our ours ourselves they them their theirs
    themselves is am are was were be been being have has had having do does did doing done will would shall
    should can could may might must ought not no nor never always also too very just only even ever again once
    all any both each few more most other some such own same every either neither none nothing something
    anything everything someone anyone everyone somebody anybody everybody nobody one ones if unless because
    although though whether whatever whoever whenever wherever let lets ok okay yes oh hey hello please thanks
    mr mrs ms dr st vs etc don't doesn't didn't isn't aren't wasn't weren't won't wouldn't can't couldn't
    shouldn't haven't hasn't hadn't i'm you're he's she's it's we're they're i've you've we've they've i'll
    you'll he'll she'll we'll they'll i'd you'd he'd she'd we'd they'd that's there's what's who's let's
    here's where's how's ain't""".split()
)

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ",
                         "\u2013": " - ", "\u2026": "...", "`": "'", "\t": " "})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9 .,;:!?'\"()\-$%&]")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]?[A-Z])")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_ZH_SPLIT = re.compile(r"(?<=[。！？；])")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def norm_key(text: str) -> str:
    """Key for duplicate detection: lower case letters and digits only."""
    return re.sub(r"[^0-9a-z\u4e00-\u9fff]+", "", text.lower())


def text_is_eval(text: str) -> bool:
    """Stable text split: about 1 text in 20 is held out, whatever the seed or the builder."""
    return zlib.crc32(norm_key(text).encode()) % 20 == 0


def dedupe(texts: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in texts:
        k = norm_key(t)
        if k and k not in seen:
            seen.add(k)
            out.append(t)
    return out


# --------------------------------------------------------------------------------------------------
# vocabulary for the naturalness filter


@lru_cache(maxsize=1)
def vocabulary(wordnet_dir: Path = WORDNET_DIR) -> frozenset[str]:
    words: set[str] = set(FUNCTION_WORDS)
    for pos in ("noun", "verb", "adj", "adv"):
        index = wordnet_dir / f"index.{pos}"
        if index.exists():
            for line in index.read_text(encoding="latin-1").splitlines():
                if line and not line.startswith(" "):
                    lemma = line.split(" ", 1)[0]
                    if "_" not in lemma:
                        words.add(lemma.lower())
        exc = wordnet_dir / f"{pos[:3] if pos != 'adj' else 'adj'}.exc"
        if exc.exists():
            for line in exc.read_text(encoding="latin-1").splitlines():
                if line:
                    words.add(line.split(" ", 1)[0].lower())
    return frozenset(words)


def _known(word: str, vocab: frozenset[str]) -> bool:
    w = word.lower()
    if w in vocab:
        return True
    if "'" in w:
        base, _, suffix = w.partition("'")
        return base in vocab and suffix in {"s", "t", "re", "ve", "ll", "d", "m"}
    for suffix, repl in (("s", ""), ("es", ""), ("ies", "y"), ("ed", ""), ("ed", "e"), ("ing", ""),
                         ("ing", "e"), ("ly", ""), ("er", ""), ("est", ""), ("ied", "y"), ("ier", "y")):
        if w.endswith(suffix) and w[: -len(suffix)] + repl in vocab:
            return True
    if len(w) > 4 and w[-3] == w[-4] and w.endswith(("ing", "ed")) and w[: -4] in vocab:  # stopped, running
        return True
    return False


def clean_sentence(raw: str, vocab: frozenset[str] | None = None, min_words: int = 4, max_words: int = 20) -> str | None:
    """`raw` as a natural spoken English sentence, or None when it is not one."""
    s = unicodedata.normalize("NFKC", raw).translate(_QUOTES)
    s = re.sub(r"\s+", " ", s).strip()
    s = s.strip("-").strip()
    if s.startswith(('"', "'")) and s.endswith(('"', "'")) and s.count(s[0]) == 2:
        s = s[1:-1].strip()
    if not s or _BAD_CHARS.search(s) or "--" in s or ".." in s.rstrip("."):
        return None
    if s[-1] not in ".!?":
        return None
    if not (s[0].isupper() or s[0].isdigit()):
        return None
    if s.count('"') % 2 or s.count("(") != s.count(")") or re.search(r"\s'|'\s|'$", s.replace("s' ", "s ")):
        return None
    words = _WORD.findall(s)
    n_tokens = len(s.split())
    if not min_words <= n_tokens <= max_words or len(words) < n_tokens * 0.8:
        return None
    if sum(1 for w in words if len(w) > 1 and w.isupper()) > 1:
        return None
    if re.search(r"\d{5,}|[a-z][A-Z]|\b[A-Z]\.[A-Z]|:\S", s):
        return None
    vocab = vocabulary() if vocab is None else vocab
    if vocab:
        lower = [w for w in words if not w[0].isupper()]  # capitalised words may be names
        if lower and sum(_known(w, vocab) for w in lower) < 0.85 * len(lower):
            return None
        if sum(_known(w, vocab) for w in words) < 0.6 * len(words):
            return None
    return s


# --------------------------------------------------------------------------------------------------
# sources


def _fortune_entries(path: Path) -> Iterator[str]:
    text = _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    for entry in text.split("\n%\n"):
        lines = [ln for ln in entry.splitlines() if not re.match(r"^\s*(--|\u2014|\[)", ln)]
        yield " ".join(ln.strip() for ln in lines)


def fortune_sentences(fortune_dir: Path = FORTUNE_DIR) -> list[str]:
    out = []
    if not fortune_dir.is_dir():
        return out
    vocab = vocabulary()
    for path in sorted(fortune_dir.iterdir()):
        if path.suffix or path.name in _SKIP_FORTUNES or not path.is_file():
            continue
        for entry in _fortune_entries(path):
            if re.search(r"[A-Za-z]:\s*$|^[A-Z][a-z]+:\s", entry):  # dialogue scripts, Q: A: jokes
                continue
            for sent in _SENT_SPLIT.split(entry):
                s = clean_sentence(sent, vocab)
                if s:
                    out.append(s)
    return dedupe(out)


def wordnet_sentences(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    out = []
    vocab = vocabulary(wordnet_dir)
    for pos in ("noun", "verb", "adj", "adv"):
        data = wordnet_dir / f"data.{pos}"
        if not data.exists():
            continue
        for line in data.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            for ex in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                ex = ex.strip()
                if len(ex.split()) < 5:
                    continue
                ex = ex[0].upper() + ex[1:]
                if ex[-1] not in ".!?":
                    ex += "?" if ex.split()[0].lower() in {"what", "who", "where", "when", "why", "how", "is", "are", "do", "does", "did", "can", "will"} else "."
                s = clean_sentence(ex, vocab, min_words=5)
                if s:
                    out.append(s)
    return dedupe(out)


def chinese_sentences(fortune_dir: Path = FORTUNE_DIR) -> list[str]:
    out = []
    for name in ZH_FORTUNES:
        path = fortune_dir / name
        if not path.exists():
            continue
        for entry in _fortune_entries(path):
            entry = re.sub(r"\s+", "", entry)
            for sent in _ZH_SPLIT.split(entry):
                sent = sent.strip("，、；：")
                if not sent:
                    continue
                han = len(_HAN.findall(sent))
                if 4 <= han <= 40 and han >= 0.8 * len(re.sub(r"[，。！？；、：“”《》]", "", sent)):
                    if sent[-1] not in "。！？":
                        sent = sent.rstrip("；") + "。"
                    out.append(sent)
    return dedupe(out)


# --------------------------------------------------------------------------------------------------
# templated sentences: numbers, times, names, places, questions, commands

NAMES = ("Anna Ben Carlos Diana Emma Farid Grace Hiro Isabel James Kenji Laura Mohammed Nina Omar Priya Quinn "
         "Rosa Samuel Tara Umar Victor Wendy Xavier Yuki Zoe Daniel Sophie Lucas Mia Noah Olivia Ethan Ava "
         "Leo Chloe Ravi Elena Tom Sarah David Maria Peter Linda").split()
CITIES = ("London Paris Tokyo Berlin Madrid Rome Lisbon Dublin Chicago Boston Seattle Toronto Sydney Mumbai "
          "Cairo Nairobi Lima Oslo Vienna Prague Warsaw Athens Istanbul Seoul Bangkok Denver Austin Miami "
          "Vancouver Melbourne Amsterdam Brussels Stockholm Helsinki Copenhagen Zurich Munich Milan Naples").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()
ITEMS = ("milk eggs bread apples coffee rice butter cheese onions tomatoes bananas yogurt pasta oranges "
         "carrots potatoes chicken flour sugar tea lemons garlic spinach beans").split()
ROOMS = "kitchen bedroom living room bathroom office hallway garage garden".replace("living room", "living_room").split()
APPS = "music player calendar calculator browser camera email settings notes clock weather map".split()
ACTIVITIES = ("the dentist appointment|the team meeting|the piano lesson|the flight to {city}|dinner with {name}|"
              "the yoga class|the parent teacher meeting|the job interview|the football match|the doctor's visit").split("|")

SENTENCE_TEMPLATES = (
    "Set a timer for {n} minutes.",
    "Wake me up at {time} tomorrow.",
    "Remind me to call {name} at {time}.",
    "Remind me about {activity} on {weekday}.",
    "What's the weather like in {city} on {weekday}?",
    "Will it rain in {city} tomorrow afternoon?",
    "How long does it take to drive from {city} to {city2}?",
    "What time is it in {city} right now?",
    "Add {item} and {item2} to my shopping list.",
    "Turn off the lights in the {room}.",
    "Turn the volume down to {pct} percent.",
    "Set the thermostat to {temp} degrees.",
    "Open the {app} app.",
    "Send a message to {name} saying I will be {n} minutes late.",
    "Call {name} on speakerphone.",
    "Play some relaxing music in the {room}.",
    "What is {a} plus {b}?",
    "What is {a} times {b}?",
    "How much is {pct} percent of {big}?",
    "Convert {n} miles to kilometers.",
    "How many days are there until {month} {day}?",
    "My flight leaves at {time} on {weekday}, {month} {day}.",
    "The meeting with {name} was moved to {weekday} at {time}.",
    "I paid {money} dollars for {n} tickets to {city}.",
    "{name} was born on {month} {day}, {year}.",
    "Can you book a table for {small} at {time} on {weekday}?",
    "Is {city} bigger than {city2}?",
    "Tell {name} that dinner is ready.",
    "Schedule {activity} for next {weekday}.",
    "Read me the last message from {name}.",
    "How far is {city} from here?",
    "Please pause the music and turn on the news.",
    "The train to {city} leaves from platform {small} at {time}.",
    "We need {small} more chairs for the party on {weekday}.",
    "There are {big} people living in our town.",
    "{name} and {name2} are meeting in {city} next {month}.",
    "Did {name} send the report on {weekday}?",
    "Remind me to buy {item} when I leave work.",
    "Start a {n} minute workout.",
    "Find a cheap hotel in {city} for {small} nights.",
)


def _time(rng: random.Random) -> str:
    h, m = rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])
    if m:
        return f"{h}:{m:02d} " + rng.choice(["a.m.", "p.m."])
    return f"{h} " + rng.choice(["a.m.", "p.m.", "o'clock"])


def sentences_from_templates(count: int, seed: int = 0) -> list[str]:
    """Up to `count` distinct sentences with numbers, times, names, places, questions and commands."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < count and tries < count * 20:
        tries += 1
        name, name2 = rng.sample(NAMES, 2)
        city, city2 = rng.sample(CITIES, 2)
        item, item2 = rng.sample(ITEMS, 2)
        slots = {
            "name": name, "name2": name2, "city": city, "city2": city2, "item": item, "item2": item2,
            "weekday": rng.choice(WEEKDAYS), "month": rng.choice(MONTHS), "day": rng.randint(1, 28),
            "year": rng.randint(1950, 2024), "time": _time(rng), "n": rng.choice([2, 3, 5, 10, 12, 15, 20, 25, 30, 45, 90]),
            "pct": rng.choice([10, 15, 20, 25, 30, 40, 50, 60, 75, 80]), "temp": rng.randint(16, 25),
            "a": rng.randint(2, 99), "b": rng.randint(2, 99), "big": rng.choice([120, 250, 480, 1200, 3500, 15000, 64000]),
            "money": rng.randint(12, 900), "small": rng.randint(2, 9), "room": rng.choice(ROOMS).replace("_", " "),
            "app": rng.choice(APPS),
        }
        slots["activity"] = rng.choice(ACTIVITIES).format(**slots)
        s = rng.choice(SENTENCE_TEMPLATES).format(**slots)
        s = s[0].upper() + s[1:]
        s = re.sub(r"\.([.?])$", r"\1", s)  # "at 5 p.m.." -> "at 5 p.m."
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def english_sentences(templates: int = 3000, seed: int = 0) -> dict[str, list[str]]:
    """All English sentence sources, each deduplicated, and no sentence in two sources."""
    sources = {"fortunes": fortune_sentences(), "wordnet": wordnet_sentences(),
               "templates": sentences_from_templates(templates, seed)}
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for name, sents in sources.items():
        keep = []
        for s in sents:
            k = norm_key(s)
            if k not in seen:
                seen.add(k)
                keep.append(s)
        out[name] = keep
    return out
