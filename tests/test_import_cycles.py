"""No import cycles anywhere in ntkit/, counting imports inside functions.

The graph has one node per module of the package (a package is its ``__init__``) and an
edge for every ``import ntkit.x`` / ``from ntkit.x import y`` / relative import in the
module's source, wherever it sits (module level, functions, ``if TYPE_CHECKING``), with
``from ntkit.x import y`` counted as an edge to ``ntkit.x.y`` when that is a module
(else to ``ntkit.x``). Importing a submodule implicitly runs its parents' ``__init__``;
those implicit edges are not counted (every module would otherwise be in a cycle with
its package), but a package's ``__init__`` importing its submodules is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ntkit

ROOT = Path(ntkit.__file__).parent


def module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = module_names()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # ``from ntkit.x import y``: an edge to ntkit.x.y when y is a module,
                # else to ntkit.x (which defines y).
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source
                           for a in node.names]
            for t in targets:
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_counts_function_local_imports():
    graph = import_graph()
    assert "ntkit.kernel" in graph["ntkit.layers.base"]
    assert "ntkit.layers" in graph["ntkit"]


def test_no_import_cycles_in_ntkit():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_specs_and_duals_do_not_import_the_engine():
    # Layers are pure specs: the engine evaluates them (see ARCHITECTURE.md).
    graph = import_graph()
    low = [m for m in graph if m == "ntkit.kernel" or m.startswith(("ntkit.layers",
                                                                    "ntkit.dual"))]
    assert low
    for m in low:
        bad = sorted(t for t in graph[m] if not t.startswith((
            "ntkit.kernel", "ntkit.entries", "ntkit.layers", "ntkit.dual", "ntkit.layout")))
        assert not bad, f"{m} imports {bad}"
    for m in graph:
        if m.startswith("ntkit.engine"):
            assert not [t for t in graph[m] if t.startswith("ntkit.layers")], m
