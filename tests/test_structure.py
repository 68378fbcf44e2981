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


# ---------------------------------------------------------------------------------------------------- flags
#: Modules of clcae/ that may hold a string starting with a command-line flag, and why. Everything else speaks of
#: its options by their library names (``batch must be >= 2``); clcae.cli prints the flags (clcae/errors.py).
FLAG_STRINGS_ALLOWED = {
    "clcae/app/__init__.py": "the argument parser and main() of `clcae app`",
    "clcae/doctor.py": "the argument parser of `clcae doctor`, `--version` of the tools it runs, its fixes",
    "clcae/console.py": "the `clcae` command's own --help / --version",
    "clcae/ops/_build.py": "`nvcc --version`",
    "clcae/training/options.py": "flag(), the one spelling of an option's flag (the argparse builder)",
    "clcae/official_options.py": "`--learn_in_w`, the official training script's own option name",
}


def flag_strings(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every string literal in ``source`` that starts with a flag (``--name``; Markdown rules
    such as ``---`` are not flags). f-strings count by their literal parts."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 2
            and node.value.startswith("--") and node.value[2].isalpha()]


def test_flag_finder_finds_flags():
    assert flag_strings('raise E(f"--batch must be >= 2; got {n}")\nx = "---"\ny = "a --b"\n') == [
        (1, "--batch must be >= 2; got ")]


def test_library_messages_name_options_not_flags():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        if name not in FLAG_STRINGS_ALLOWED:
            found += [f"{name}:{line}: {text[:60]!r}" for line, text in flag_strings(path.read_text(encoding="utf-8"))]
    assert not found, ("strings that start with a command-line flag (raise an error about the option instead: "
                       "clcae/errors.py):\n" + "\n".join(found))
    assert all((PACKAGE.parent / name).is_file() for name in FLAG_STRINGS_ALLOWED)  # no stale entries
