"""Compare the adaptors under the same training-time budget on the real small models.

Each adaptor trains stage 1 for `--minutes` of training time (evaluation excluded) on the same cached
encoder states, evaluating held-out loss and greedy-transcription WER along the way. Writes
`adaptor-comparison.json` and `adaptor-comparison.png` (WER and held-out loss against training minutes).

    python scripts/compare_adaptors.py --data asr/train.jsonl --eval-data asr/eval.jsonl \\
        --state-cache states/ --out runs/compare --minutes 4

Held-out losses are not comparable across objectives (CTC loss per token vs the LLM's cross-entropy per
transcript token); WER is: the ctc head's own greedy transcript, the LLM's greedy transcription otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = {  # name: (adaptor settings, batch size, evaluate every N steps)
    "ctc (no LLM in the loop)": ({"adaptor": "ctc", "objective": "ctc", "stack": 4}, 16, 60),
    "ultravox (stack 8)": ({"adaptor": "ultravox", "objective": "llm", "stack": 8, "hidden": 2048}, 8, 15),
    "linear (stack 4)": ({"adaptor": "linear", "objective": "llm", "stack": 4}, 8, 15),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--eval-data", required=True)
    ap.add_argument("--state-cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--docs", default="docs", help="where the JSON and PNG go")
    args = ap.parse_args()

    from llasm.training.train import TrainConfig, train

    out, results = Path(args.out), {}
    for name, (settings, batch, every) in RUNS.items():
        run = out / settings["adaptor"]
        cfg = TrainConfig.from_recipe("cpu", data=args.data, eval_data=args.eval_data, state_cache=args.state_cache,
                                      out=str(run), max_steps=100_000, max_minutes=args.minutes, batch_size=batch,
                                      lr=1e-3, warmup_steps=10, eval_every=every, eval_max=48, eval_generate=8,
                                      log_every=5, save_every=100_000, seed=0, **settings)
        train(cfg)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        results[name] = [{"minutes": r["train_s"] / 60, "step": r["step"], "eval_loss": r["eval_loss"],
                          "wer": r.get("wer")} for r in rows if "eval_loss" in r]
        print(name, json.dumps(results[name][-1]), flush=True)

    docs = Path(args.docs)
    (docs / "adaptor-comparison.json").write_text(json.dumps({"minutes": args.minutes, "runs": results}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, pts in results.items():
        a.plot([p["minutes"] for p in pts], [p["wer"] for p in pts], "o-", label=name)
        b.plot([p["minutes"] for p in pts], [p["eval_loss"] for p in pts], "o-", label=name)
    a.set(xlabel="training minutes (2-core CPU, float32)", ylabel="held-out WER", title="greedy transcription WER")
    b.set(xlabel="training minutes", ylabel="held-out loss", title="held-out loss (ctc: CTC/token; others: CE)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "adaptor-comparison.png", dpi=110)


if __name__ == "__main__":
    main()
