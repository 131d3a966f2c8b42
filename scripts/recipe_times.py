"""Wall time of each step and phase of a default-model recipe run, from the `steps.tsv` the recipe writes.

    python scripts/recipe_times.py runs/default-model [--plot runs/default-model/times.png]

`scripts/default_model.sh` writes one line per step as it starts (unix time, tab, the command as written in
the script) between "# run starts" and "# run ends"; a resumed run appends a new run. A step lasts until the next
line; a run killed mid-step has no end, so its last step is counted up to the last line written and marked cut off.
Steps sent to the background (`&`, the side-by-side evaluations) show the time until the next step started.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PHASES = ("data", "states", "stage 1", "stage 2", "bundle", "evaluation")


@dataclass
class Step:
    label: str
    phase: str
    start: int
    seconds: int
    cut_off: bool = False


def _label(command: str) -> tuple[str, str]:
    """(step label, phase) of one recipe command as written in the script."""
    out = re.search(r'--out "?\$work/([^"\s]+)"?', command)
    name = out.group(1).removesuffix(".jsonl") if out else ""
    if command.startswith("cat "):
        return "asr/all.jsonl", "data"
    if command.startswith("wait "):
        return "wait for the evaluation beside", "evaluation"
    if command.startswith("export_bundle"):
        target = re.findall(r'"?\$work/([^"\s]+)"?', command)
        dest = target[1] if len(target) > 1 else "bundle"
        return f"export {dest}", "bundle" if dest == "bundle" else "stage 2"
    words = command.split()
    at = next((i for i, w in enumerate(words) if "/llasm-" in w), None)
    tool = words[at].rsplit("/", 1)[-1] if at is not None else ""
    sub = words[at + 1] if at is not None and at + 1 < len(words) else ""
    if tool == "llasm-assistant":
        asr = re.search(r'--asr "?\$work/([^/"\s]+)', command)
        return f"evaluate {asr.group(1) if asr else ''}".strip(), "evaluation"
    if sub == "stage1":
        return name, "stage 1"
    if sub == "cache-states":
        return "states" + (" (stage-2 questions)" if "questions-train" in command else ""), \
            "stage 2" if "questions-train" in command else "states"
    if sub in ("stage2", "cache-heard") or (sub == "data" and ("mix" in words or "questions-train" in command)):
        return (f"{sub} {name}".strip() if sub != "data" else f"data {name}"), "stage 2"
    if sub == "data":
        return f"data {name}", "data"
    return command[:40], "other"


def read_steps(path: Path) -> list[list[Step]]:
    """The runs in `path` (steps.tsv), each a list of its steps."""
    runs: list[list[tuple[int, str]]] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        stamp, _, command = line.partition("\t")
        if not stamp.isdigit() or not command:
            raise ValueError(f"{path}:{n}: not 'unix-time<TAB>command': {line[:80]!r}")
        if command == "# run starts":
            runs.append([])
        elif not runs:
            raise ValueError(f"{path}:{n}: a step before '# run starts'")
        runs[-1].append((int(stamp), command))
    out: list[list[Step]] = []
    for run in runs:
        steps: list[Step] = []
        ended = run[-1][1] == "# run ends"
        lines = run[1:]
        for i, (t, command) in enumerate(lines):
            if command == "# run ends":
                break
            label, phase = _label(command)
            nxt = lines[i + 1][0] if i + 1 < len(lines) else t
            steps.append(Step(label, phase, t, nxt - t, cut_off=not ended and i == len(lines) - 1))
        out.append(steps)
    return out


def _fmt(seconds: float) -> str:
    return f"{seconds / 60:6.1f} min"


def report(runs: list[list[Step]]) -> str:
    rows = []
    total = 0
    per_phase: dict[str, int] = {}
    for r, steps in enumerate(runs, 1):
        if len(runs) > 1:
            rows.append(f"run {r}")
        for s in steps:
            rows.append(f"  {s.phase:<11} {s.label:<34} {_fmt(s.seconds)}{'  (cut off)' if s.cut_off else ''}")
            per_phase[s.phase] = per_phase.get(s.phase, 0) + s.seconds
            total += s.seconds
    rows.append("")
    for phase in (*PHASES, "other"):
        if phase in per_phase:
            rows.append(f"  {phase:<46} {_fmt(per_phase[phase])}")
    rows.append(f"  {'total':<46} {_fmt(total)}")
    return "\n".join(rows)


def plot(runs: list[list[Step]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for run in runs for s in run]
    colours = dict(zip((*PHASES, "other"), plt.get_cmap("tab10").colors, strict=False))
    fig, ax = plt.subplots(figsize=(9, 0.25 * len(steps) + 1.5))
    left = 0.0
    for i, s in enumerate(steps):
        ax.barh(i, s.seconds / 60, left=left, color=colours[s.phase], label=s.phase)
        left += s.seconds / 60
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), loc="upper right")
    ax.set_yticks(range(len(steps)), [s.label for s in steps], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("minutes since the recipe started (runs back to back)")
    ax.set_title(f"default-model recipe: {left:.0f} min")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="the recipe's work folder (holds steps.tsv)")
    ap.add_argument("--plot", type=Path, default=None, help="PNG to draw the steps in (default WORK/times.png)")
    a = ap.parse_args(argv)
    tsv = a.work / "steps.tsv"
    try:
        runs = read_steps(tsv)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: {tsv} records no run", file=sys.stderr)
        return 2
    print(report(runs))
    plot(runs, a.plot or a.work / "times.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
