"""The project's import graph (assistant/, training/, export/) has no cycles.

Read statically with `ast`: every `import`/`from ... import` of a project module, at module level or inside a
function, is an edge; imports under `if TYPE_CHECKING:` are not (they never run). A cycle is a strongly
connected component of more than one module, or a module importing itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("assistant", "training", "export")

# Known cycles, each with the reason it is still here. The test fails when one of these is gone, so that its
# entry goes too.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(["llasm", *parts])] = path  # installed under the llasm namespace (pyproject.toml)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in `tree` except those in an `if TYPE_CHECKING:` body."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that importing `name` runs last: `name` itself, or its nearest parent package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import name`: name is a submodule or an attribute of pkg
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != mod:
                    graph[mod].add(owner)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_graph_sees_the_project():
    graph = import_graph()
    assert "llasm.assistant.engine" in graph and "llasm.training.train" in graph and "llasm.export.bundle" in graph
    assert "llasm.assistant.llm" in graph["llasm.assistant.engine"]  # a module-level relative import
    assert "llasm.training.train" in graph["llasm.training.commands_train"]  # a function-level absolute import


def test_no_import_cycles():
    found = set(cycles(import_graph()))
    unexpected = [sorted(c) for c in found if c not in ALLOWED_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"


def test_allowed_cycles_still_exist():
    # an allow-list entry whose cycle is gone must be removed
    found = set(cycles(import_graph()))
    gone = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not gone, f"{gone} no longer cycles: drop them from ALLOWED_CYCLES"


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def _indirections(path: Path) -> list[str]:
    """Project modules reached through indirection in `path`: an import of one in a `try:` that catches
    ImportError (as if it might be missing), or `getattr` on a name bound to one (as if an attribute might be
    missing)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = ("llasm",)
    found: list[str] = []
    module_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(own)):
            module_names |= {a.asname or a.name for a in node.names}  # submodules and names alike: getattr on
            # an imported function or class is as indirect as on a module
        elif isinstance(node, ast.Import):
            module_names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith(own)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                for imp in _imports(stmt):
                    if (isinstance(imp, ast.ImportFrom) and (imp.level or (imp.module or "").startswith(own))) or (
                            isinstance(imp, ast.Import) and any(a.name.startswith(own) for a in imp.names)):
                        found.append(f"{path.name}:{imp.lineno} imports a project module inside try:")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in module_names):
            found.append(f"{path.name}:{node.lineno} getattr({node.args[0].id}, ...)")
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(n is None or (isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception"))
               for n in names)


def test_project_modules_are_imported_directly():
    found = [hit for path in sorted(set(_modules().values())) for hit in _indirections(path)]
    assert not found, found


def test_indirection_finder_finds_both_kinds(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from . import handsfree\ntry:\n    from .engine import Engine\nexcept ImportError:\n"
                   "    Engine = None\nmain = getattr(handsfree, 'main', None)\n")
    assert _indirections(src) == ["m.py:3 imports a project module inside try:", "m.py:6 getattr(handsfree, ...)"]
