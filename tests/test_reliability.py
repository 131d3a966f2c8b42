"""Nothing lost, nothing injected, nothing made up: the probes of issue 35 that need no trained model.

Each test reproduces one defect (a destructive `--force`, a fooled checksum, a traceback instead of one line)
and checks the fixed behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from export.bundle import BUNDLE_FORMAT, check_replaceable, clean_stale_temps
from export.errors import ExportError


# ---- llasm-export bundle --force deletes only a bundle ------------------------------------------------------
def _fake_bundle(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "adaptor.safetensors").write_bytes(b"x" * 16)
    (root / "encoder").mkdir()
    (root / "encoder" / "model.bin").write_bytes(b"y" * 16)
    (root / "bundle.json").write_text(json.dumps({"format": BUNDLE_FORMAT, "version": 1,
                                                  "checksums": {"adaptor.safetensors": "0" * 64}}))
    return root


def _training_run(root: Path) -> Path:
    """What `llasm-train` leaves: checkpoints, metrics and final/ (a checkpoint)."""
    for ck in (root / "checkpoints" / "step-0000004", root / "final"):
        ck.mkdir(parents=True)
        (ck / "llasm.json").write_text(json.dumps({"format": "llasm-checkpoint"}))
        (ck / "adaptor.safetensors").write_bytes(b"z" * 16)
    (root / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    return root


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_force_refuses_the_training_run_being_exported(tmp_path: Path) -> None:
    """`llasm-export bundle run/final run --force` deleted the whole run and exited 0."""
    from export.cli import app

    run = _training_run(tmp_path / "run")
    before = _files(run)
    r = CliRunner().invoke(app, ["bundle", str(run / "final"), str(run), "--force"])
    assert r.exit_code == 1
    assert "checkpoint being exported" in r.output and r.output.count("\n") == 1
    assert _files(run) == before
    # a checkpoint folder, inside or outside the one exported
    for out in (run / "final", run / "checkpoints" / "step-0000004"):
        with pytest.raises(ExportError, match="checkpoint"):
            check_replaceable(out, run / "final")
    with pytest.raises(ExportError, match=r"checkpoint \(llasm.json\)"):
        check_replaceable(run / "checkpoints" / "step-0000004", tmp_path / "elsewhere")
    assert _files(run) == before


def test_force_refuses_foreign_files(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("buy milk")
    with pytest.raises(ExportError, match="not a llasm bundle"):
        check_replaceable(notes)
    # a bundle with a user's file dropped in
    b = _fake_bundle(tmp_path / "b")
    check_replaceable(b)  # as exported: replaceable
    (b / "my-notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="my-notes.txt") as e:
        check_replaceable(b)
    assert "\n" not in str(e.value)
    # a file, a symbolic link, a bundle.json that is not a bundle's
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        check_replaceable(tmp_path / "file")
    (tmp_path / "link").symlink_to(b)
    with pytest.raises(ExportError, match="symbolic link"):
        check_replaceable(tmp_path / "link")
    other = tmp_path / "other"
    other.mkdir()
    (other / "bundle.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ExportError, match="not a llasm bundle"):
        check_replaceable(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_replaceable(empty)  # nothing to lose


def test_cli_force_on_a_notes_folder_deletes_nothing(tmp_path: Path) -> None:
    from export.cli import app

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("buy milk")
    ck = _training_run(tmp_path / "run") / "final"
    r = CliRunner().invoke(app, ["bundle", str(ck), str(notes), "--force"])
    assert r.exit_code == 1 and "not a llasm bundle" in r.output
    assert (notes / "todo.txt").read_text() == "buy milk"


def test_stale_temporary_folders_are_removed_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "b"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f".b.tmp-{dead.pid}-abc_12"  # a killed export's half-written bundle
    live = tmp_path / f".b.tmp-{os.getppid()}-xyz"  # a running export's
    legacy_old = tmp_path / ".b.tmp-k2j3h4g5"  # no process id, untouched for an hour
    legacy_new = tmp_path / ".b.tmp-a1b2c3d4"  # no process id, written a moment ago
    other = tmp_path / f".c.tmp-{dead.pid}-abc"  # another OUT's
    mine = tmp_path / ".b.tmp-notes"  # a user's folder that only looks alike: a file inside, kept as a file
    for d in (killed, live, legacy_old, legacy_new, other):
        d.mkdir()
        (d / "llm.gguf").write_bytes(b"\0" * 8)
    mine.write_text("not a folder")
    hour_ago = time.time() - 3600
    os.utime(legacy_old, (hour_ago, hour_ago))
    removed = clean_stale_temps(out)
    assert sorted(removed) == sorted([killed, legacy_old])
    assert not killed.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists() and other.exists() and mine.exists()
    # a replaced bundle a killed swap left: kept while OUT is missing (its only copy), removed once OUT exists
    old = tmp_path / f".b.old-{dead.pid}"
    old.mkdir()
    assert clean_stale_temps(out) == [] and old.exists()
    out.mkdir()
    assert clean_stale_temps(out) == [old] and not old.exists()

