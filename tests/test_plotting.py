"""matplotlib is the `plot` extra: nothing imports it at module level, and a command that plots without it
says which extra to install, in one line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from llasm.assistant.plotting import PlotUnavailable, pyplot

ROOT = Path(__file__).resolve().parents[1]


def test_pyplot_draws_to_files() -> None:
    plt = pyplot()
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg" and hasattr(plt, "subplots")


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    with pytest.raises(PlotUnavailable) as e:
        pyplot()
    msg = str(e.value)
    assert "pip install 'llasm[plot]'" in msg and "\n" not in msg


def test_training_plot_without_matplotlib_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from llasm.training.commands_train import errors
    from llasm.training.train import plot_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(errors()):  # llasm-train reports these as `error: ...`
        plot_metrics(tmp_path)


def test_no_module_imports_matplotlib_at_module_level() -> None:
    found = []
    for pkg in ("assistant", "training", "export"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "matplotlib" for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"module-level matplotlib imports (the base install has none): {found}"
