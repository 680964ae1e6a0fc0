"""The package's layering (ARCHITECTURE.md), read from the source with `ast`, nothing imported.

An edge A -> B is any import of opq_hw module B in module A, at the top or inside a function, and
any string literal naming B (`"opq_hw.x.y"` or `"opq_hw.x.y:function"`: the registries that import
a module on demand count as importing it). A module importing names from one of its own ancestor
packages adds no edge: Python has run the package's `__init__` before the module, so that orders
nothing (the root's lazy API and a registry in `opq_hw/flows/__init__.py` read by its own flows
are not cycles); the registry's strings naming the flows do count.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "opq_hw"
# The upper layer: the command line, the flows, and what runs or reads the flows. Every other module
# is below it and may not reach any of these, directly or through other modules.
UPPER = ("opq_hw.cli", "opq_hw.flows", "opq_hw.report", "opq_hw.simulate", "opq_hw.inspection", "opq_hw.sweep")
MODULE_STRING = re.compile(r"opq_hw(?:\.\w+)+(?::\w+)?")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _imported(name: str, node: ast.AST, mods: dict[str, Path]) -> list[str]:
    """The opq_hw module names `node` (an import or a string constant) in module `name` refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = name.split(".") if mods[name].name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value):
        return [node.value.partition(":")[0]]
    return []


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(name, node, mods):
                while target and target not in mods:  # opq_hw.mod.attr -> opq_hw.mod
                    target = target.rpartition(".")[0]
                if target.startswith("opq_hw") and not (name == target or name.startswith(target + ".")):
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_upper(name: str) -> bool:
    return any(name == u or name.startswith(u + ".") for u in UPPER)


def _path(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """A shortest import chain from `start` to a module satisfying `goal` (breadth first)."""
    prev: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        v = todo.pop(0)
        if v != start and goal(v):
            chain = [v]
            while prev[chain[-1]] is not None:
                chain.append(prev[chain[-1]])
            return chain[::-1]
        for w in sorted(graph[v]):
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return None


def test_graph_sees_every_kind_of_import():
    """The reader finds top-level, relative, in-function and registry-string imports."""
    g = import_graph()
    assert "opq_hw.errors" in g["opq_hw.boards"]  # from .errors import OpqError
    assert "opq_hw.rtl.gen" in g["opq_hw.rtl.seq"]  # from .gen import ...
    assert "opq_hw.run" in g["opq_hw"]  # the root's lazy API: ("opq_hw.run", "load_run")
    assert "opq_hw.flows.hls4ml_flow" in g["opq_hw.report"] | g["opq_hw.flows"]  # in a function / a registry
    assert len(g) >= 30 and all(m.startswith("opq_hw") for m in g)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among opq_hw modules: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_below_the_flows_imports_them():
    """No core module (allocation, carrier, cost, boards, spec, rundir, data, pipeline, the RTL
    generators, ...) reaches the CLI, a flow, report, simulate or inspection, even indirectly."""
    g = import_graph()
    bad = [" -> ".join(chain) for m in sorted(g) if not _is_upper(m)
           for chain in [_path(g, m, _is_upper)] if chain]
    assert not bad, "core modules reaching the upper layer:\n" + "\n".join(bad)
