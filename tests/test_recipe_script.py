"""The default model's recipe script (scripts/default_model.sh), run with stand-in commands that only record
their arguments: the manifests stages 1b, 1c and 1d train on must all be encoded first and all feed the bundle's ctc
shortlist (`--ctc-vocab`), or the shipped head cannot emit tokens it was trained on. The run records each step's
start (steps.tsv), which scripts/recipe_times.py turns into step and phase times."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from recipe_times import PHASES, main, read_steps, report  # noqa: E402


def _calls(tmp_path: Path) -> list[list[str]]:
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    for tool in ("llasm-train", "llasm-export", "llasm-assistant"):
        p = fake / tool
        p.write_text(f'#!/bin/bash\nprintf "%q " {tool} "$@" >> {shlex.quote(str(log))}; echo >> {shlex.quote(str(log))}\n')
        p.chmod(0o755)
    work = tmp_path / "work"
    (work / "asr").mkdir(parents=True)
    for split in ("train", "eval"):
        (work / "asr" / f"{split}.jsonl").write_text("")
    script = (ROOT / "scripts" / "default_model.sh").read_text().replace("bin=.venv/bin", f"bin={fake}", 1)
    (tmp_path / "recipe.sh").write_text(script)
    r = subprocess.run(["bash", str(tmp_path / "recipe.sh"), str(work)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in log.read_text().splitlines()]


def _flag(call: list[str], flag: str) -> list[str]:
    return [call[i + 1] for i, a in enumerate(call[:-1]) if a == flag]


def test_every_later_stage1_manifest_is_encoded_and_in_the_ctc_shortlist(tmp_path: Path) -> None:
    calls = _calls(tmp_path)
    stage1 = [c for c in calls if c[:2] == ["llasm-train", "stage1"]]
    later = [c for c in stage1 if "--init" in c]  # stage 1b from stage 1, 1c from 1b, 1d from 1c
    assert len(stage1) == 4
    assert [_flag(c, "--init")[0].rsplit("/", 2)[-2] for c in later] == ["stage1", "stage1b", "stage1c"]
    trained = [m for c in later for m in _flag(c, "--data")[0].split(",")]
    assert len(trained) >= 12 and all(m.endswith("/train.jsonl") for m in trained)
    assert any("accents" in m for m in _flag(later[1], "--data")[0].split(","))  # 1c hears the generated accents
    assert any("foreign" in m for m in _flag(later[2], "--data")[0].split(","))  # 1d the foreign ones
    encoded = {m for c in calls if c[:2] == ["llasm-train", "cache-states"] for m in _flag(c, "--data")[0].split(",")}
    assert all(m in encoded for m in trained if "/asr/" not in m)  # asr/train.jsonl is encoded as asr/all.jsonl
    exports = [c for c in calls if c[:2] == ["llasm-export", "bundle"]]
    assert len(exports) == 2  # the stage-1 bundle (stage 2's heard replies) and the shipped one
    for c in exports:
        assert _flag(c, "--ctc-vocab") == list(dict.fromkeys(trained)), c
    # stage 2 and its heard replies start from stage 1d's adaptor
    assert exports[0][2].endswith("/stage1d/final")
    for c in calls:
        if c[:2] in (["llasm-train", "stage2"], ["llasm-train", "cache-heard"]):
            assert _flag(c, "--init")[0].endswith("/stage1d/final"), c
    # the shipped bundle hears one-shot with the LLM's pick among 3 and the 4-gram of those transcripts in the beam
    assert (_flag(exports[1], "--hearing-n-best"), _flag(exports[1], "--hearing-ngram"),
            _flag(exports[1], "--hearing-ngram-fusion")) == (["3"], ["4"], ["0.3"])


def test_recipe_records_each_step_and_recipe_times_reads_them(tmp_path: Path) -> None:
    calls = _calls(tmp_path)
    work = tmp_path / "work"
    lines = [line.split("\t", 1) for line in (work / "steps.tsv").read_text().splitlines()]
    assert lines[0][1] == "# run starts" and lines[-1][1] == "# run ends"
    assert all(t.isdigit() for t, _ in lines)
    # every tool call the script makes itself is a step, in order; the two bundle exports are steps of their own
    logged = [c.split("$bin/", 1)[1].split()[:2] for _, c in lines if "$bin/" in c]
    assert logged == [c[:2] for c in calls if c[0] != "llasm-export"]
    assert sum(c.startswith("export_bundle") for _, c in lines) == 2

    runs = read_steps(work / "steps.tsv")
    assert len(runs) == 1
    phases = list(dict.fromkeys(s.phase for s in runs[0]))
    assert phases == list(PHASES)
    labels = [s.label for s in runs[0]]
    assert ["stage1", "stage1b", "stage1c", "stage1d"] == [s.label for s in runs[0] if s.phase == "stage 1"]
    assert "stage2 stage2" in labels and "export bundle" in labels and "data foreign-questions" in labels
    assert main([str(work)]) == 0 and (work / "times.png").stat().st_size > 1000


def test_recipe_times_sums_a_resumed_run(tmp_path: Path) -> None:
    tsv = tmp_path / "steps.tsv"
    tsv.write_text("100\t# run starts\n100\t$bin/llasm-train data asr --out \"$work/asr\" --seed 0\n"
                   "400\t$bin/llasm-train cache-states --data \"$work/asr/all.jsonl\" --out \"$work/states\"\n"
                   "1000\t# run starts\n1000\t$bin/llasm-train cache-states --data X --out \"$work/states\"\n"
                   "1600\t$bin/llasm-train stage1 --recipe cpu --out \"$work/stage1\" --seed 0\n"
                   "2800\t# run ends\n")
    first, second = read_steps(tsv)
    assert [(s.label, s.seconds, s.cut_off) for s in first] == [("data asr", 300, False), ("states", 0, True)]
    assert [(s.phase, s.seconds) for s in second] == [("states", 600), ("stage 1", 1200)]
    text = report([first, second])
    assert "(cut off)" in text and text.splitlines()[-1].split()[-2] == "35.0"  # (300 + 600 + 1200) s
    tsv.write_text("100 no tab here\n")
    assert main([str(tmp_path)]) == 2
