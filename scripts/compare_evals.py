"""Compare bundles' spoken-question agreement on the same held-out questions, paired question by question.

    python scripts/compare_evals.py LABEL=EVAL_JSON[,EVAL_JSON...] LABEL=... --out compare.png

Each LABEL names one bundle; its EVAL_JSONs (one per split, written by `llasm-assistant evaluate`) are pooled.
Questions are matched across bundles by their manifest and clip, so every bundle must have answered the same
ones. Printed: per bundle, agreement k/n with its 95 % Wilson interval, the questions heard word for word and
their WER as heard; per bundle after the first, the questions only it or only the first agrees on, and the
exact two-sided McNemar p-value of that difference (how likely a split this uneven is if both agree equally
often). The figure shows each split's agreement with its interval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llasm.assistant.evaluate import AGREE_SIMILARITY, normalize, wer, wilson_interval  # noqa: E402


def read_split(path: Path) -> tuple[str, dict[tuple[str, str], dict]]:
    """(split name, (clip, question) -> question row) of one eval.json. The split is named by its manifest's
    folder, so a set rebuilt elsewhere from the same seed (same folder name, clips and texts) pairs up."""
    r = json.loads(path.read_text())
    name = Path(r["questions_manifest"]).parent.name
    return name, {(q["audio"], q["question"]): q for q in r["question_rows"]}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the binomial(n, 1/2) tail of the discordant pairs."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def agrees(q: dict) -> bool:
    return q["similarity"] >= AGREE_SIMILARITY


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", help="LABEL=EVAL_JSON[,EVAL_JSON...]")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    a = ap.parse_args(argv)

    runs: dict[str, dict[str, dict[tuple[str, str], dict]]] = {}
    for spec in a.bundles:
        label, sep, files = spec.partition("=")
        if not sep or not files:
            ap.error(f"{spec!r}: give LABEL=EVAL_JSON[,EVAL_JSON...]")
        splits: dict[str, dict[tuple[str, str], dict]] = {}
        for f in files.split(","):
            try:
                name, rows = read_split(Path(f))
            except (OSError, json.JSONDecodeError, KeyError) as e:
                print(f"error: {f}: not an eval.json ({e})", file=sys.stderr)
                return 2
            splits[name] = rows
        runs[label] = splits
    labels = list(runs)
    first = runs[labels[0]]
    for label in labels[1:]:
        if {s: set(r) for s, r in runs[label].items()} != {s: set(r) for s, r in first.items()}:
            print(f"error: {label} and {labels[0]} did not answer the same questions", file=sys.stderr)
            return 2

    def pooled(label: str) -> dict[tuple[str, str, str], dict]:
        return {(split, *k): q for split, rows in runs[label].items() for k, q in rows.items()}

    base = pooled(labels[0])
    for label in labels:
        rows = pooled(label)
        k, n = sum(map(agrees, rows.values())), len(rows)
        lo, hi = wilson_interval(k, n)
        exact = sum(normalize(q["heard"] or "") == normalize(q["question"]) for q in rows.values())
        qwer = wer([q["question"] for q in rows.values()], [q["heard"] or "" for q in rows.values()])
        per = ", ".join(f"{s} {sum(map(agrees, r.values()))}/{len(r)}" for s, r in runs[label].items())
        line = (f"{label}: agreement {k}/{n} = {k / n:.1%} (95 % {lo:.1%}-{hi:.1%}; {per}); "
                f"heard word for word {exact}/{n}; question WER as heard {qwer:.3f}")
        if label != labels[0]:
            only_b = sum(agrees(q) and not agrees(base[key]) for key, q in rows.items())
            only_a = sum(agrees(base[key]) and not agrees(q) for key, q in rows.items())
            line += (f"; vs {labels[0]}: {only_b} questions only it agrees on, {only_a} only {labels[0]}, "
                     f"McNemar p = {mcnemar_p(only_a, only_b):.2f}")
        print(line)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*first, "pooled"]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(names), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        groups = [*runs[label].values(), pooled(label)]
        ks = [sum(map(agrees, g.values())) for g in groups]
        ns = [len(g) for g in groups]
        rates = [k / n for k, n in zip(ks, ns, strict=True)]
        cis = [wilson_interval(k, n) for k, n in zip(ks, ns, strict=True)]
        err = [[r - lo for r, (lo, _) in zip(rates, cis, strict=True)], [hi - r for r, (_, hi) in zip(rates, cis, strict=True)]]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [100 * r for r in rates], width, yerr=[[100 * e for e in side] for side in err], capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("spoken = typed answer (%)")
    ax.set_title("agreement with 95 % intervals")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
