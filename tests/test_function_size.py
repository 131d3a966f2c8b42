"""Every function in assistant/ is short enough to read: at most MAX_LINES lines, decorators and docstring
included (issue: the engine's shape). Read statically with `ast`, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 80


def long_functions(folder: Path, limit: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' for each function or method under `folder` longer than `limit` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - start + 1
                if n > limit:
                    found.append(f"{path.relative_to(folder)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_in_assistant_is_over_80_lines():
    long = long_functions(ROOT / "assistant")
    assert not long, "split these functions: " + "; ".join(long)


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\n@staticmethod\ndef long():\n{body}\n")
    assert long_functions(tmp_path) == ["m.py:6 long (82 lines)"]  # 80 lines of body, the def, the decorator
