"""Whisper's decoder in ONNX Runtime against CTranslate2's, clip by clip in one run (`hearing.whisper_decoder`).

Both hear every clip with the default hearing (the same CTranslate2 encoder, pad, short window, greedy then
beam 5 where unsure), in alternating order, so the machine's drift falls on both. Prints, for clips under 2 s, of
2-6 s and all: the median hearing and decoder milliseconds of each, the median per-clip ratio of the decoder
times, the decoder calls a clip, and the WER of each against the manifest's transcripts; `--out` keeps every
clip's record.

    .venv/bin/python scripts/decoder_ab.py data/real/test.jsonl --threads 2 --out decoder-ab.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from llasm.assistant.audio import load_audio
from llasm.assistant.basemodels import resolve
from llasm.assistant.evaluate import read_asr, wer
from llasm.assistant.hearing import HearingOptions, WhisperHearing

DECODERS = ("onnx", "ct2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path, help="ASR manifest (JSON lines: audio, text)")
    ap.add_argument("--whisper", default="default:whisper-base", help="a CTranslate2 Whisper folder or default:")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="clips to use")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for every clip's record")
    args = ap.parse_args()
    import ctranslate2

    path = resolve(args.whisper)
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=args.threads)
    options = HearingOptions(mode="whisper")
    hearing = {d: WhisperHearing.from_options(model, path, options.with_overrides(whisper_decoder=d),
                                              n_threads=args.threads) for d in DECODERS}
    rows = []
    for i, clip in enumerate(read_asr(args.manifest, args.n)):
        audio = load_audio(clip.audio)
        row = {"audio": str(clip.audio), "text": clip.text, "seconds": len(audio) / 16000}
        for d in DECODERS if i % 2 == 0 else DECODERS[::-1]:
            t0 = time.perf_counter()
            heard = hearing[d].transcribe(audio)
            row[d] = {"ms": (time.perf_counter() - t0) * 1e3, "decoder_ms": heard.timings.get("decoder_ms", 0.0),
                      "calls": heard.decode_calls, "text": heard.text}
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    for name, keep in (("under 2 s", lambda r: r["seconds"] < 2), ("2-6 s", lambda r: 2 <= r["seconds"] <= 6),
                       ("all", lambda r: True)):
        sel = [r for r in rows if keep(r)]
        if not sel:
            continue
        med = {d: (np.median([r[d]["ms"] for r in sel]), np.median([r[d]["decoder_ms"] for r in sel])) for d in DECODERS}
        ratio = np.median([r["onnx"]["decoder_ms"] / max(r["ct2"]["decoder_ms"], 1e-6) for r in sel])
        errs = {d: wer([r["text"] for r in sel], [r[d]["text"] for r in sel]) for d in DECODERS}
        print(f"{name} ({len(sel)} clips): " + "; ".join(
            f"{d} hearing {med[d][0]:.0f} ms, decoder {med[d][1]:.0f} ms, "
            f"{np.mean([r[d]['calls'] for r in sel]):.2f} calls, WER {errs[d]:.3f}" for d in DECODERS)
            + f"; decoder onnx/ct2 per clip {ratio:.2f}x")


if __name__ == "__main__":
    main()
