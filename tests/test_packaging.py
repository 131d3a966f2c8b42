"""The install: one `llasm` namespace in site-packages, and a base install that answers without the extras."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


@pytest.mark.slow
def test_the_wheel_claims_only_the_llasm_name(tmp_path: Path) -> None:
    """A wheel built from the tree puts `llasm/` and its dist-info into site-packages, nothing named `export`,
    `training` or `assistant` at the top, and keeps the shipped bundle and recipes as package data."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("llasm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"llasm"}, top
    assert "llasm/__init__.py" not in names  # a namespace: other llasm distributions may add to it
    for must in ("llasm/assistant/engine.py", "llasm/assistant/tui/app.tcss", "llasm/assistant/default_model/bundle.json",
                 "llasm/training/recipes/cpu.toml", "llasm/training/datagen/__init__.py", "llasm/export/cli.py"):
        assert must in names, must
    for script in ("llasm-assistant = llasm.assistant.cli:main", "llasm-train = llasm.training.cli:main",
                   "llasm-export = llasm.export.cli:main"):
        assert script in entry_points


# onnx is not blocked: the runtime builds Whisper's decoder graph with it (assistant/whisperdecoder.py)
BLOCKED = ("torch", "transformers", "matplotlib", "peft", "accelerate", "jiwer")
ANSWER_WITHOUT_EXTRAS = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now fails, as in a base install without the extras
from llasm.assistant.cli import main
sys.argv = ["llasm-assistant", "--file", {wav!r}, "--json", "--max-tokens", "8", "--threads", "2"]
main()
"""


@pytest.mark.real
@pytest.mark.skipif(not ASTERISK.is_dir(), reason="Debian asterisk-core-sounds-en-wav is not installed")
def test_a_base_install_answers_a_file_without_torch_transformers_or_matplotlib(tmp_path: Path) -> None:
    code = ANSWER_WITHOUT_EXTRAS.format(blocked=BLOCKED, wav=str(ASTERISK / "vm-password.wav"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["heard"].strip().lower().startswith("password") and record["answer"].strip()
