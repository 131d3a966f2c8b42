"""scripts/compare_evals.py: bundles' agreement on the same held-out questions, paired, with intervals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from compare_evals import mcnemar_p  # noqa: E402


def _eval(path: Path, split: str, sims: list[float], heard_exact: int) -> Path:
    rows = [{"audio": f"q{i}.wav", "question": f"what is thing {i}", "heard": f"what is thing {i}" if i < heard_exact
             else "what is", "similarity": s} for i, s in enumerate(sims)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"questions_manifest": f"/data/{split}/eval.jsonl", "question_rows": rows}))
    return path


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(3, 3) == 1.0
    assert abs(mcnemar_p(0, 5) - 2 / 32) < 1e-12  # both one-sided tails of binomial(5, 1/2) at 0
    assert abs(mcnemar_p(1, 9) - 2 * 11 / 1024) < 1e-12
    assert mcnemar_p(2, 7) == mcnemar_p(7, 2)


def test_compare_evals_pairs_questions_and_plots(tmp_path: Path) -> None:
    a = [_eval(tmp_path / "a" / f"{s}.json", s, sims, 2) for s, sims in
         (("unseen", [0.9, 0.1, 0.2, 0.85]), ("clean", [0.1, 0.1, 0.95, 0.3]))]
    b = [_eval(tmp_path / "b" / f"{s}.json", s, sims, 3) for s, sims in
         (("unseen", [0.9, 0.9, 0.2, 0.1]), ("clean", [0.8, 0.9, 0.95, 0.3]))]
    out = tmp_path / "cmp.png"
    script = str(ROOT / "scripts/compare_evals.py")
    r = subprocess.run([sys.executable, script, "A=" + ",".join(map(str, a)), "B=" + ",".join(map(str, b)),
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    la, lb = r.stdout.splitlines()[:2]
    assert la.startswith("A: agreement 3/8 = 37.5%") and "unseen 2/4, clean 1/4" in la
    assert "heard word for word 4/8" in la and "heard word for word 6/8" in lb
    # B agrees on q1 unseen, q0 and q1 clean that A does not; A on q3 unseen that B does not
    assert lb.startswith("B: agreement 5/8") and "3 questions only it agrees on, 1 only A" in lb
    assert f"McNemar p = {mcnemar_p(1, 3):.2f}" in lb

    other = _eval(tmp_path / "c" / "unseen.json", "unseen", [0.9, 0.1, 0.2], 0)
    bad = subprocess.run([sys.executable, script, f"A={a[0]}", f"C={other}", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "did not answer the same questions" in bad.stderr and bad.stderr.count("\n") == 1


def test_answer_keywords_scores_the_answers_that_name_the_reference(tmp_path: Path) -> None:
    qs = tmp_path / "q.jsonl"
    qs.write_text("".join(json.dumps(r) + "\n" for r in [
        {"instruction": "How many legs does a spider have?", "output": "Eight.", "keys": ["eight", "8"]},
        {"instruction": "What do bees make?", "output": "Honey.", "keys": ["honey"]},
        {"instruction": "Why is the sky blue?", "output": "Scattering."}]))  # no keys: not scored
    rows = [{"question": "How many legs does a spider have?", "spoken_answer": "Spiders have eight legs.",
             "typed_answer": "A spider has 8 legs.", "cascade_answer": "Six."},
            {"question": "What do bees make?", "spoken_answer": "Bees make wax.", "typed_answer": "Honey!",
             "cascade_answer": "honey and wax"},
            {"question": "Why is the sky blue?", "spoken_answer": "x", "typed_answer": "x", "cascade_answer": "x"}]
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"question_rows": rows}))
    script = str(ROOT / "scripts/answer_keywords.py")
    r = subprocess.run([sys.executable, script, "--questions", str(qs), str(ev), str(ev)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    first, _, total = r.stdout.splitlines()
    assert first.endswith("2 questions with keys; the answer names one: spoken 1, typed 2, Whisper's transcript 1")
    assert total == "all: 4 questions; spoken 2 (50%), typed 4 (100%), Whisper's transcript 2 (50%)"
    bad = subprocess.run([sys.executable, script, "--questions", str(ev), str(ev)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
