"""The package's modules import one way: no cycle, counting the imports made inside functions too (DESIGN.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import songfeat

ROOT = Path(songfeat.__file__).parent


def _edges() -> dict[str, set[str]]:
    """module -> the songfeat modules it imports anywhere in its file (`from . import x` counts as x when x is a module)."""
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ("songfeat", *p.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods] or [target]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[m] |= {n for n in names if n in mods and n != m}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                comp.append(stack.pop())
                if comp[-1] == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    """13 modules imported one another in a ring (heads held train-heads' workflow, which imported accuracy, analyze,
    records, evaluate, onnx_export and sources; evaluate and train imported each other)."""
    edges = _edges()
    assert "songfeat.heads" in edges and "songfeat.analyze" in edges["songfeat"]  # the walk sees the package
    assert _cycles(edges) == []
