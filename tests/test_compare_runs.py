"""scripts/compare_runs.py: loss curves of several runs on one figure, and their largest difference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(d: Path, losses: list[float], train_s: float) -> Path:
    d.mkdir()
    rows = [{"step": 10 * (i + 1), "loss": x, "train_s": train_s * (i + 1) / len(losses)} for i, x in enumerate(losses)]
    rows.append({"step": 10 * len(losses), "eval_loss": 2.5, "train_s": train_s})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_compare_runs_plots_and_reports_the_largest_difference(tmp_path: Path) -> None:
    a = _run(tmp_path / "cpu", [1.0, 0.5, 0.25], 300.0)
    b = _run(tmp_path / "gpu", [1.0, 0.52, 0.25], 20.0)
    out = tmp_path / "cmp.png"
    r = subprocess.run([sys.executable, str(ROOT / "scripts/compare_runs.py"), f"{a}=CPU", f"{b}=GPU", "--out",
                        str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = r.stdout.splitlines()
    assert lines[0].startswith("CPU: 3 logged steps") and "train 300.0 s" in lines[0]
    assert "max |loss - first run's| 0.0200 over 3 steps" in lines[1]
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/compare_runs.py"), str(tmp_path / "none"), "--out",
                          str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
