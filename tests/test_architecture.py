"""The import graph flows one way (docs/architecture.md): a lower layer never imports a higher one, and no two
modules import each other, directly or in a ring, not even through imports hidden inside functions.

The test reads the source (``ast``), so an import inside a function, under ``TYPE_CHECKING`` or in a branch
counts like one at the top of a file. ``petctfm/__init__.py`` (the lazy public API) is the only module
allowed to reach every layer, and only lazily (tested below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "petctfm"

# package -> the petctfm packages it may import (besides itself). Read bottom to top.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "io": {"core"},
    "models": {"core"},
    "synth": {"core", "io"},
    "data": {"core", "io"},
    "evaluate": {"core", "io", "data"},
    "viz": {"core", "io", "evaluate"},
    "harmonize": {"core", "io", "data", "viz"},
    "train": {"core", "io", "data", "models"},
    "inference": {"core", "io", "data", "models", "train"},
    "methods": {"core", "io", "data", "models", "train", "inference", "evaluate", "viz"},
    "predict": {"core", "io", "data", "models", "train", "inference", "harmonize", "evaluate", "viz"},
    "experiments": {"core", "io", "synth", "data", "models", "evaluate", "viz", "harmonize", "train", "inference",
                    "methods", "predict"},
    # the local web viewer (petctfm serve): an application over methods/predict/io, like experiments
    "serve": {"core", "io", "data", "models", "evaluate", "viz", "harmonize", "train", "inference", "methods",
              "predict"},
    "cli": {"core", "io", "synth", "data", "models", "evaluate", "viz", "harmonize", "train", "inference",
            "methods", "predict", "experiments", "serve", "api"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every petctfm module ``path`` imports, wherever the import statement stands."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "petctfm")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "petctfm":
                continue
            # ``from petctfm.x import y`` may name a submodule y: count it as an import of petctfm.x.y
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if _exists(sub) else target)
    return out


def _exists(mod: str) -> bool:
    rel = Path(*mod.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py"))}


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    modules = {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert packages | modules <= set(ALLOWED) | {"api"}, sorted((packages | modules) - set(ALLOWED))


def test_no_layer_imports_a_higher_one():
    bad = []
    for mod, deps in graph().items():
        src = layer(mod)
        if src is None or src == "api":  # petctfm/__init__.py and petctfm/api.py: the public API, lazy
            continue
        for dep in sorted(deps):
            dst = layer(dep)
            if dst is not None and dst != src and dst not in ALLOWED[src]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layer order (docs/architecture.md):\n" + "\n".join(bad)


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a ring of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle of logic: leave the package's own
    # __init__ out of its modules' edges
    g = {m: {d for d in deps if not (m.startswith(d + ".") and _is_package(d))} for m, deps in graph().items()}
    assert not _cycles(g), _cycles(g)


def _is_package(mod: str) -> bool:
    return (SRC / Path(*mod.split(".")[1:]) / "__init__.py").is_file() if "." in mod else True


def test_cycle_finder_finds_a_ring():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("mod", ["petctfm.core.errors", "petctfm.methods.segmentation"])
def test_layer_of(mod):
    assert layer(mod) in ALLOWED


def test_top_level_package_imports_lazily():
    """``import petctfm`` must stay cheap: its __init__ imports only the version at module level."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {n.module for n in top if isinstance(n, ast.ImportFrom)} | {a.name for n in top if isinstance(n, ast.Import)
                                                                        for a in n.names}
    assert names <= {"__future__", "petctfm.core.version", "importlib", "typing"}, names
