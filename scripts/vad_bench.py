"""Benchmark (not a test): VAD boundary accuracy per frame size and mode, and docs/tui-vad-boundaries.png.

    .venv/bin/python scripts/vad_bench.py
"""

from __future__ import annotations


def bench() -> None:
    import sys
    import tempfile
    import time
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from llasm.assistant.vad import Segmenter, Utterance, VadOptions
    from test_handsfree_fakes import SILENCES, SR, conversation

    audio, truth = conversation(Path(tempfile.mkdtemp()))
    print(f"stream {audio.size / SR:.1f} s, {len(truth)} utterances, silences {SILENCES}")
    print("| frame ms | mode | found | start err mean/max ms | end err mean/max ms | VAD CPU per audio s |")
    print("|---|---|---|---|---|---|")
    best: list[Utterance] = []
    for frame in (10, 20, 30):
        for mode in (1, 2, 3):
            seg = Segmenter(VadOptions(frame_ms=frame, aggressiveness=mode))
            t0 = time.perf_counter()
            ev = []
            for i in range(0, audio.size, 480):
                ev += seg.feed(audio[i : i + 480])
            ev += seg.flush()
            cpu = (time.perf_counter() - t0) / (audio.size / SR) * 1000
            u = [e for e in ev if isinstance(e, Utterance)]
            if len(u) == len(truth):
                se = [abs(x.start_s - a) * 1000 for x, (a, _) in zip(u, truth, strict=True)]
                ee = [abs(x.end_s - b) * 1000 for x, (_, b) in zip(u, truth, strict=True)]
                errs = f"{np.mean(se):.0f} / {max(se):.0f} | {np.mean(ee):.0f} / {max(ee):.0f}"
            else:
                errs = "- | -"
            print(f"| {frame} | {mode} | {len(u)}/{len(truth)} | {errs} | {cpu:.2f} ms |")
            if frame == 30 and mode == 2:
                best = u
    t = np.arange(audio.size) / SR
    fig, ax = plt.subplots(figsize=(11, 3))
    ax.plot(t, audio, lw=0.3, color="0.5")
    for i, (a, b) in enumerate(truth):
        ax.axvspan(a, b, color="tab:green", alpha=0.2, label="speech (truth)" if i == 0 else None)
    for i, u in enumerate(best):
        ax.axvline(u.start_s, color="tab:blue", lw=1, label="VAD start" if i == 0 else None)
        ax.axvline(u.end_s, color="tab:red", lw=1, label="VAD end" if i == 0 else None)
    ax.set_xlabel("seconds")
    ax.set_title("webrtcvad segmenter (30 ms frames, mode 2) on espeak-ng questions with known silences")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(__file__).parent.parent / "docs" / "tui-vad-boundaries.png", dpi=110)


if __name__ == "__main__":
    bench()
