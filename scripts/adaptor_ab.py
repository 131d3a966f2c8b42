"""Two bundles' adaptors on the same encoder states, interleaved in one run: time per clip and whether the
ctc transcripts agree (e.g. a ctc head with and without `export --ctc-vocab`).

    .venv/bin/python scripts/adaptor_ab.py BUNDLE_A BUNDLE_B --questions q/eval.jsonl [--n 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from llasm.assistant.adaptor import load_adaptor
from llasm.assistant.audio import load_audio, log_mel
from llasm.assistant.bundle import Bundle
from llasm.assistant.encoder import load_encoder
from llasm.assistant.evaluate import read_questions
from llasm.assistant.llm import read_token_embeddings
from threadpoolctl import threadpool_limits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--questions", type=Path, required=True, help="spoken questions (conversations JSON lines)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bundles = [Bundle.load(args.a), Bundle.load(args.b)]
    if bundles[0].encoder != bundles[1].encoder:
        raise SystemExit("the two bundles use different encoders: compare adaptors on one encoder")
    tables = {}
    adaptors = []
    for b in bundles:
        key = str(b.llm.path)
        if b.adaptor.get("type") == "ctc" and key not in tables:
            tables[key] = read_token_embeddings(b.llm.path)
        adaptors.append(load_adaptor(b.adaptor_path, b.adaptor, token_embeddings=tables.get(key)))
    enc = load_encoder(bundles[0].encoder, n_threads=1)
    states = [enc.encode(log_mel(load_audio(c.audio))) for c in read_questions(args.questions, args.n)]
    times: list[list[float]] = [[], []]
    same = 0
    with threadpool_limits(1, "blas"):
        for _ in range(args.repeats):
            for s in states:
                outs = []
                for i, ad in enumerate(adaptors):
                    t0 = time.perf_counter()
                    outs.append(ad.run(s))
                    times[i].append(time.perf_counter() - t0)
                same += outs[0].heard == outs[1].heard
    for name, t in zip((args.a, args.b), times, strict=True):
        print(f"{name}: adaptor median {statistics.median(t) * 1e3:.1f} ms a clip")
    print(f"identical ctc transcripts: {same} of {args.repeats * len(states)}")


if __name__ == "__main__":
    main()
