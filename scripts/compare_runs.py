"""Plot the training loss (and held-out loss) of several runs on one figure, and print where they differ.

    python scripts/compare_runs.py RUN_DIR[=LABEL] ... --out compare.png

Each RUN_DIR holds the `metrics.jsonl` a training run writes. Printed: per run, the steps logged, the mean of
the last 10 logged losses and the training time; per run after the first, the largest difference of its
logged losses from the first run's at the same steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_rows(run: Path) -> tuple[dict[int, float], dict[int, float], float]:
    """(step -> train loss, step -> held-out loss, last train_s) of a run's metrics.jsonl."""
    loss: dict[int, float] = {}
    ev: dict[int, float] = {}
    train_s = 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            loss[int(r["step"])] = float(r["loss"])
        if "eval_loss" in r:
            ev[int(r["step"])] = float(r["eval_loss"])
        train_s = float(r.get("train_s", train_s))
    return loss, ev, train_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR=LABEL")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    first: dict[int, float] | None = None
    for spec in a.runs:
        path, _, label = spec.partition("=")
        run = Path(path)
        try:
            loss, ev, train_s = read_rows(run)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {run}/metrics.jsonl unreadable ({e})", file=sys.stderr)
            return 2
        if not loss:
            print(f"error: {run}/metrics.jsonl has no training loss", file=sys.stderr)
            return 2
        label = label or run.name
        steps = sorted(loss)
        tail = [loss[s] for s in steps[-10:]]
        line = ax.plot(steps, [loss[s] for s in steps], label=f"{label} ({train_s:,.0f} s)")[0]
        if ev:
            ax.plot(sorted(ev), [ev[s] for s in sorted(ev)], "o--", color=line.get_color(), alpha=0.6)
        msg = f"{label}: {len(steps)} logged steps, last-10 mean loss {sum(tail) / len(tail):.4f}, train {train_s:,.1f} s"
        if first is None:
            first = loss
        else:
            common = sorted(set(first) & set(loss))
            if common:
                msg += f", max |loss - first run's| {max(abs(loss[s] - first[s]) for s in common):.4f} over {len(common)} steps"
        print(msg)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (line: training; dashed: held-out)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
