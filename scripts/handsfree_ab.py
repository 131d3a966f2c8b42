"""Hands-free latency with and without `Engine.prepare`, in one run: a recording is replayed in real time
through the capture -> VAD -> engine path (as `--mic-file`), and each utterance's time to first token after
the VAD closes it is printed. Three modes, in turns: no prepare; prepare with the encoder and adaptor only
(`Engine.speculate = False`); prepare that also prefills the spoken turn, all while the VAD waits out the
end-of-speech silence.

    .venv/bin/python scripts/handsfree_ab.py talk.wav [--bundle DIR] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

from llasm.assistant.capture import FileSource
from llasm.assistant.engine import Engine
from llasm.assistant.handsfree import run_headless
from llasm.assistant.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wav", type=Path, help="a recording with several spoken questions and pauses between them")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-best", type=int, default=None, help="transcripts the LLM rescores (assistant/ctcbeam.py)")
    ap.add_argument("--fusion", type=float, default=None, help="the LLM's weight inside the beam search")
    ap.add_argument("--ngram-fusion", type=float, default=None, help="the hearing n-gram's weight there")
    ap.add_argument("--hearing", default=None, help="whisper, adaptor or embeddings (default: the bundle's)")
    ap.add_argument("--only", default=None, help="run only this mode, e.g. 'encode + prefill ahead' (what --mic does)")
    args = ap.parse_args()
    engine = Engine.load(args.bundle, n_threads=args.threads,
                         hearing={"mode": args.hearing, "n_best": args.n_best, "fusion": args.fusion,
                                  "ngram_fusion": args.ngram_fusion})
    runs: dict[str, list[float]] = {"no prepare": [], "encode ahead": [], "encode + prefill ahead": []}
    if args.only:
        runs = {args.only: []}
    for _ in range(args.repeats):
        for mode, ttfts in runs.items():
            if mode == "no prepare":
                engine.prepare = None  # type: ignore[method-assign,assignment]  # the listener then skips it
            else:
                engine.__dict__.pop("prepare", None)
                engine.speculate = mode == "encode + prefill ahead"
            out = io.StringIO()
            run_headless(engine, FileSource(str(args.wav), realtime=True), Settings(json=True, max_tokens=8),
                         out=out, err=io.StringIO())
            recs = [json.loads(line) for line in out.getvalue().splitlines()]
            # from the turn's start (the VAD has closed the utterance) to its first streamed token, waits for
            # a prepare still running included (the engine's own ttft_ms starts once it holds the engine)
            ttfts += [r["turn_first_token_ms"] for r in recs]
            print(f"{mode}: time to first token after the VAD closes each utterance "
                  f"{[round(r['turn_first_token_ms']) for r in recs]} ms (engine: {[round(r['ttft_ms']) for r in recs]}) (prepared: {[r.get('prepared') for r in recs]}, "
                  f"prefilled: {[r.get('speculative') for r in recs]})")
    for mode, ttfts in runs.items():
        print(f"{mode}: median {statistics.median(ttfts):.0f} ms over {len(ttfts)} utterances")
    engine.close()


if __name__ == "__main__":
    main()
