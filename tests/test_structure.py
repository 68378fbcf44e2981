"""The package's import graph has no cycles (module level, function-local imports included).

Read from the source with :mod:`ast`, so nothing is imported; an import of a package counts as an edge to its
``__init__``, ``from pkg import submodule`` as an edge to the submodule. Layers point one way
(docs/ARCHITECTURE.md): a helper that two layers need goes below both, and a function-local import that hides an
upward edge is still an edge.
"""
from __future__ import annotations

import ast
from pathlib import Path

import clcae

PACKAGE = Path(clcae.__file__).resolve().parent


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _owner(name: str, mods) -> str:
    while name not in mods:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of clcae it imports}}``, every import statement anywhere in the file."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[mod] |= {_owner(a.name, mods) for a in node.names if a.name.split(".")[0] == "clcae"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "clcae":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    graph[mod].add(sub if sub in mods else _owner(target, mods))
        graph[mod].discard(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert "clcae.inversion.runner" in graph and "clcae.jobs" in graph["clcae.inversion.runner"]
    found = cycles(graph)
    detail = "\n".join(" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c)))
                       for c in found)
    assert not found, "import cycles inside clcae/:\n" + detail


def test_no_import_cycles_between_the_package_folders():
    """Folders (clcae/inversion, clcae/networks, ...) and top-level modules (clcae/checkpoints.py, ...) form layers:
    no two of them import each other, directly or around a circle (docs/ARCHITECTURE.md)."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        graph.setdefault(unit(module), set()).update(unit(m) for m in imported if unit(m) != unit(module))
    for name in graph:
        graph[name] &= set(graph)
    found = cycles(graph)
    assert not found, "import cycles between folders / top-level modules of clcae/: " + "; ".join(
        " <-> ".join(c) for c in found)
