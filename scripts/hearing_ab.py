"""Two settings of Whisper's hearing against each other, clip by clip in one run (any `HearingOptions` keys).

Both hear every clip with the default hearing (the same CTranslate2 encoder, pad, short window, greedy then
beam 5 where unsure) but for the keys `--a` and `--b` set, in alternating order, so the machine's drift falls on
both. By default `a` is Whisper's decoder in ONNX Runtime and `b` CTranslate2's (`hearing.whisper_decoder`).
Prints, for clips under 2 s, of 2-6 s and all: the median hearing and decoder milliseconds of each, the median
per-clip ratio of the decoder times (a over b), the decoder calls a clip, and the edits and WER of each against
the manifest's transcripts; `--out` keeps every clip's record.

    .venv/bin/python scripts/hearing_ab.py data/real/test.jsonl --threads 2 --out decoder-ab.json
    .venv/bin/python scripts/hearing_ab.py data/real/dev.jsonl --a short_timestamps=false --b short_timestamps=true
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.audio import load_audio
from llasm.assistant.basemodels import resolve
from llasm.assistant.evaluate import read_asr, wer
from llasm.assistant.hearing import HearingOptions, WhisperHearing
from llasm.assistant.textmetrics import edit_distance, normalize

SIDES = ("a", "b")


def overrides(text: str) -> dict[str, Any]:
    """"key=value,key=value" -> HearingOptions overrides; values read as JSON (true, 2.0) or else as strings."""
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"hearing_ab: {item!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path, help="ASR manifest (JSON lines: audio, text)")
    ap.add_argument("--a", default="whisper_decoder=onnx", help="hearing keys of side a (key=value,...)")
    ap.add_argument("--b", default="whisper_decoder=ct2", help="hearing keys of side b (key=value,...)")
    ap.add_argument("--whisper", default="default:whisper-base", help="a CTranslate2 Whisper folder or default:")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="clips to use")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for every clip's record")
    args = ap.parse_args()
    import ctranslate2

    path = resolve(args.whisper)
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=args.threads)
    base = HearingOptions(mode="whisper")
    try:
        options = {s: base.with_overrides(**overrides(getattr(args, s))) for s in SIDES}
    except (TypeError, ValueError) as e:
        raise SystemExit(f"hearing_ab: {e}") from None
    hearing = {s: WhisperHearing.from_options(model, path, options[s], n_threads=args.threads) for s in SIDES}
    print("a: " + args.a + "; b: " + args.b)
    rows = []
    for i, clip in enumerate(read_asr(args.manifest, args.n)):
        audio = load_audio(clip.audio)
        row = {"audio": str(clip.audio), "text": clip.text, "seconds": len(audio) / 16000}
        for s in SIDES if i % 2 == 0 else SIDES[::-1]:
            t0 = time.perf_counter()
            heard = hearing[s].transcribe(audio)
            row[s] = {"ms": (time.perf_counter() - t0) * 1e3, "decoder_ms": heard.timings.get("decoder_ms", 0.0),
                      "calls": heard.decode_calls, "text": heard.text,
                      "edits": edit_distance(normalize(clip.text), normalize(heard.text))}
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    for name, keep in (("under 2 s", lambda r: r["seconds"] < 2), ("2-6 s", lambda r: 2 <= r["seconds"] <= 6),
                       ("all", lambda r: True)):
        sel = [r for r in rows if keep(r)]
        if not sel:
            continue
        med = {s: (np.median([r[s]["ms"] for r in sel]), np.median([r[s]["decoder_ms"] for r in sel])) for s in SIDES}
        ratio = np.median([r["a"]["decoder_ms"] / max(r["b"]["decoder_ms"], 1e-6) for r in sel])
        errs = {s: wer([r["text"] for r in sel], [r[s]["text"] for r in sel]) for s in SIDES}
        print(f"{name} ({len(sel)} clips): " + "; ".join(
            f"{s} hearing {med[s][0]:.0f} ms, decoder {med[s][1]:.0f} ms, "
            f"{np.mean([r[s]['calls'] for r in sel]):.2f} calls, {sum(r[s]['edits'] for r in sel)} edits, "
            f"WER {errs[s]:.3f}" for s in SIDES) + f"; decoder a/b per clip {ratio:.2f}x")


if __name__ == "__main__":
    main()
