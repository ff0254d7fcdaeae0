"""The import graph flows one way (docs/architecture.md): a lower layer never imports a higher one, no two
modules import each other (directly or in a ring), no two packages import each other, and the ``ALLOWED``
table below names only packages that exist.

The checks read the source (``ast``), so an import inside a function, under ``TYPE_CHECKING`` or in a branch
counts like one at the top of a file. Besides ``import`` statements, an import is also:

- a name of the lazy public API: ``from petctfm import finetune``, or ``petctfm.finetune`` /
  ``getattr(petctfm, "finetune")`` after ``import petctfm``, imports the module ``petctfm/__init__.py``'s
  ``_API`` table maps it to (``petctfm.methods.finetune``);
- a string constant used as a value that names a petctfm module: ``"petctfm.methods.x"``, ``"petctfm.methods.x:fn"``
  or ``"petctfm.methods.x.fn"`` (a builder registry, ``importlib.import_module(...)``, ``__import__(...)``),
  counted as an import of the longest existing module it names; an f-string counts by its constant head
  (``f"petctfm.methods.{name}"`` imports ``petctfm.methods``). Docstrings (and other bare string statements) are
  documentation, not imports.

Every checker takes the source root (the ``petctfm`` package folder) as a parameter, so the mutation tests at the
bottom run them on a copy of ``src/petctfm`` with one injected violation and compare the violation sets with and
without it. ``petctfm/__init__.py`` (the lazy public API) is the only module allowed to reach every layer, and
only lazily (tested below).
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "petctfm"
ROOT = "petctfm"

# package -> the petctfm packages it may import (besides itself). Read bottom to top.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "io": {"core"},
    "models": {"core"},
    "data": {"core", "io"},
    # the follow-up generator measures its truth as response does (evaluate: SULpeak, references, PERCIST)
    "synth": {"core", "io", "data", "evaluate"},
    "evaluate": {"core", "io", "data"},
    "viz": {"core", "io", "evaluate"},
    "harmonize": {"core", "io", "data", "viz"},
    "train": {"core", "io", "data", "models"},
    "inference": {"core", "io", "data", "models", "train"},
    # methods -> harmonize: the segmentation plan's coarser training grid (harmonize/respace.py)
    "methods": {"core", "io", "data", "models", "train", "inference", "evaluate", "viz", "harmonize"},
    "predict": {"core", "io", "data", "models", "train", "inference", "harmonize", "evaluate", "viz"},
    # treatment response (petctfm response): two predict outputs -> registration, matching, PERCIST, Deauville
    "response": {"core", "io", "data", "evaluate", "viz", "harmonize", "predict"},
    "experiments": {"core", "io", "synth", "data", "models", "evaluate", "viz", "harmonize", "train", "inference",
                    "methods", "predict", "response"},
    # the local web viewer (petctfm serve): an application over methods/predict/io, like experiments
    "serve": {"core", "io", "data", "models", "evaluate", "viz", "harmonize", "train", "inference", "methods",
              "predict"},
    "cli": {"core", "io", "synth", "data", "models", "evaluate", "viz", "harmonize", "train", "inference",
            "methods", "predict", "experiments", "serve", "response"},
}


# ---------------------------------------------------------------------------------------------------------------
# reading the import graph of a source root (a folder holding petctfm's modules: src/petctfm or a copy)


#: Strings that spell a petctfm module but are not imports: the entry-point group methods are declared in
#: (core/registry.py's ENTRY_POINT_GROUP; issue 22 names it ``petctfm.methods``, after the package it serves).
NOT_IMPORTS = {"petctfm.methods"}


def module_name(path: Path, root: Path) -> str:
    parts = [ROOT, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by name (a package by its __init__.py)."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def exists(mod: str, root: Path) -> bool:
    """Whether ``mod`` (``petctfm.a.b``) is a module or package under ``root``."""
    parts = mod.split(".")
    if parts[0] != ROOT:
        return False
    rel = Path(*parts[1:]) if len(parts) > 1 else Path()
    return (root / rel / "__init__.py").is_file() or (len(parts) > 1 and (root / rel).with_suffix(".py").is_file())


def is_package(mod: str, root: Path) -> bool:
    return (root / Path(*mod.split(".")[1:]) / "__init__.py").is_file()


def lazy_api(root: Path) -> dict[str, str]:
    """``petctfm/__init__.py``'s ``_API`` table: public name -> the module that defines it."""
    init = root / "__init__.py"
    if not init.is_file():
        return {}
    for node in ast.parse(init.read_text(), str(init)).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "_API" and isinstance(node.value, ast.Dict):
            return {k.value: v.value.split(":")[0] for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return {}


# a whole string naming a petctfm module: "petctfm.a.b", "petctfm.a.b:attr", "petctfm.a.b.attr"
_MODULE_STRING = re.compile(r"petctfm(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_][\w.]*)?")


def _named_module(dotted: str, known: set[str]) -> str | None:
    """The longest existing petctfm module (below the root package) that ``dotted`` starts with."""
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


def imports_of(path: Path, root: Path, api: dict[str, str] | None = None, known: set[str] | None = None) -> set[str]:
    """Every petctfm module ``path`` imports, wherever the import stands (see the module docstring)."""
    api = lazy_api(root) if api is None else api
    known = set(modules(root)) if known is None else known
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    nodes = list(ast.walk(ast.parse(path.read_text(), str(path))))
    # string constants that are no value: bare string statements (docstrings included), f-string pieces
    skip = {id(n.value) for n in nodes
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    skip |= {id(v) for n in nodes if isinstance(n, ast.JoinedStr) for v in n.values}
    # names bound to the top package: ``import petctfm``, ``import petctfm as p``, ``import petctfm.x``
    root_names = {a.asname or ROOT for n in nodes if isinstance(n, ast.Import) for a in n.names
                  if a.name == ROOT or (a.name.startswith(ROOT + ".") and a.asname is None)}
    out: set[str] = set()

    def from_import(target: str, names: list[str]) -> None:
        # ``from petctfm.x import y`` may name a submodule y: count it as an import of petctfm.x.y;
        # ``from petctfm import name`` of the lazy API imports the module the name lives in
        for name in names:
            sub = f"{target}.{name}"
            if sub in known:
                out.add(sub)
            elif target == ROOT and name in api:
                out.add(api[name])
            else:
                out.add(target)

    def is_str(n: ast.AST | None) -> bool:
        return isinstance(n, ast.Constant) and isinstance(n.value, str)

    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == ROOT:
                from_import(target, [a.name for a in node.names])
        elif isinstance(node, ast.Constant):
            if is_str(node) and id(node) not in skip and node.value not in NOT_IMPORTS \
                    and _MODULE_STRING.fullmatch(node.value):
                named = _named_module(node.value.split(":")[0], known)
                if named:
                    out.add(named)
        elif isinstance(node, ast.JoinedStr):
            # f"petctfm.methods.{name}.api": counts by its constant head, up to its last complete name
            head = node.values[0] if node.values else None
            if is_str(head) and head.value.startswith(ROOT + "."):
                text = head.value.split(":")[0] if ":" in head.value else head.value.rsplit(".", 1)[0]
                named = _named_module(text, known) if re.fullmatch(r"[\w.]+", text) else None
                if named:
                    out.add(named)
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in root_names and node.attr in api:
                out.add(api[node.attr])  # import petctfm; petctfm.finetune(...)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = node.args
            if (node.func.id == "getattr" and len(args) >= 2 and isinstance(args[0], ast.Name)
                    and args[0].id in root_names and is_str(args[1]) and args[1].value in api):
                out.add(api[args[1].value])  # getattr(petctfm, "finetune")
            elif node.func.id == "__import__" and args and is_str(args[0]) and args[0].value.split(".")[0] == ROOT:
                # __import__("petctfm.x", fromlist=["y"]) is ``from petctfm.x import y`` (the name itself counts
                # as a module string above)
                fromlist = args[3] if len(args) > 3 else next(
                    (k.value for k in node.keywords if k.arg == "fromlist"), None)
                if isinstance(fromlist, (ast.List, ast.Tuple)):
                    from_import(args[0].value, [e.value for e in fromlist.elts if is_str(e)])
    out.discard(mod)
    return out


# (module, is a package, source, lazy API, known modules) -> its imports: the mutation tests read many copies of
# the same tree, and only the mutated files need parsing again
_READ: dict[tuple, frozenset[str]] = {}


def graph(root: Path) -> dict[str, set[str]]:
    """module -> the petctfm modules it imports, for every module under ``root``."""
    api, mods = lazy_api(root), modules(root)
    known = frozenset(mods)
    context = (frozenset(api.items()), known)
    out = {}
    for m, p in mods.items():
        key = (m, p.name == "__init__.py", p.read_text(), context)
        if key not in _READ:
            _READ[key] = frozenset(imports_of(p, root, api, set(known)))
        out[m] = set(_READ[key])
    return out


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def _without_own_packages(g: dict[str, set[str]], root: Path) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its own modules is not a cycle of logic: leave out every edge from a
    module to a package that contains it."""
    return {m: {d for d in deps if not (m.startswith(d + ".") and (d == ROOT or is_package(d, root)))}
            for m, deps in g.items()}


# ---------------------------------------------------------------------------------------------------------------
# the checkers: each returns the set of violations it finds under ``root`` (empty: the tree is fine)


def unlayered(root: Path, allowed: dict[str, set[str]]) -> set[str]:
    """Packages and plain modules directly under ``root`` that have no row in ``allowed``."""
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    files = {p.stem for p in root.glob("*.py") if p.name != "__init__.py"}
    return (packages | files) - set(allowed)


def allowed_violations(root: Path, allowed: dict[str, set[str]]) -> set[str]:
    """Every key and every value of ``allowed`` must be a real package or module under ``root``, and the table
    must itself be a layer order (no two layers allowed to import each other, directly or around a ring)."""
    bad = {f"ALLOWED key {k!r}: no package or module petctfm.{k}" for k in allowed if not exists(f"{ROOT}.{k}", root)}
    bad |= {f"ALLOWED[{k!r}] names {v!r}: no package or module petctfm.{v}"
            for k, vs in allowed.items() for v in vs if not exists(f"{ROOT}.{v}", root)}
    bad |= {f"ALLOWED[{k!r}] names itself" for k, vs in allowed.items() if k in vs}
    bad |= {"ALLOWED is not a layer order: " + " <-> ".join(c)
            for c in _cycles({k: set(vs) - {k} for k, vs in allowed.items()})}
    return bad


def layer_violations(root: Path, allowed: dict[str, set[str]], g: dict[str, set[str]] | None = None) -> set[str]:
    """``a -> b`` for every import of module b by module a whose layer may not import b's layer."""
    g = graph(root) if g is None else g
    bad = set()
    for mod, deps in g.items():
        src = layer(mod)
        if src is None:  # petctfm/__init__.py: the public API, lazy
            continue
        for dep in deps:
            dst = layer(dep)
            if dst is not None and dst != src and dst not in allowed.get(src, set()):
                bad.add(f"{mod} -> {dep}")
    return bad


def module_cycles(root: Path, g: dict[str, set[str]] | None = None) -> set[tuple[str, ...]]:
    """Rings of modules importing each other (each a sorted tuple of module names)."""
    g = _without_own_packages(graph(root) if g is None else g, root)
    return {tuple(c) for c in _cycles(g)}


def units(package: str, g: dict[str, set[str]], root: Path) -> dict[str, set[str]]:
    """The import graph between the direct children of ``package``: each sub-package (with everything in it) and
    each plain module directly in it is one unit; the package's own __init__ is a unit of its own."""

    def unit(m: str) -> str | None:
        if m == package:
            return package
        if not m.startswith(package + "."):
            return None
        return f"{package}.{m[len(package) + 1:].split('.')[0]}"

    out: dict[str, set[str]] = {}
    for m, deps in _without_own_packages(g, root).items():
        a = unit(m)
        if a is None:
            continue
        out.setdefault(a, set())
        for d in deps:
            b = unit(d)
            if b is not None and b != a:
                out[a].add(b)
    return out


def package_cycles(root: Path, g: dict[str, set[str]] | None = None) -> set[tuple[str, ...]]:
    """Rings of packages importing each other: in every package (the layers under petctfm, the sub-packages of a
    layer such as methods/<x>/ or io/layouts/, and deeper), any module of child A importing any module of child B
    and back, directly or around a ring of children. A plain module directly in the package (methods/probe.py) is
    its own unit. Rings of plain modules only are module cycles (``module_cycles``) and are not repeated here."""
    g = graph(root) if g is None else g
    packages = [module_name(p, root) for p in sorted(root.rglob("__init__.py"))]
    out = set()
    for package in packages:
        for ring in _cycles(units(package, g, root)):
            if any(u != package and is_package(u, root) for u in ring):
                out.add(tuple(ring))
    return out


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each a ring of imports."""
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
        for w in sorted(g.get(v, ())):
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


def _lines(items) -> str:
    return "\n".join(" <-> ".join(i) if isinstance(i, tuple) else i for i in sorted(items))


# ---------------------------------------------------------------------------------------------------------------
# the real tree


@pytest.fixture(scope="module")
def real_graph() -> dict[str, set[str]]:
    return graph(SRC)


def test_every_package_has_a_layer():
    assert not unlayered(SRC, ALLOWED), sorted(unlayered(SRC, ALLOWED))


def test_allowed_names_only_real_packages():
    bad = allowed_violations(SRC, ALLOWED)
    assert not bad, "ALLOWED names what does not exist:\n" + _lines(bad)


def test_no_layer_imports_a_higher_one(real_graph):
    bad = layer_violations(SRC, ALLOWED, real_graph)
    assert not bad, "imports against the layer order (docs/architecture.md):\n" + _lines(bad)


def test_no_import_cycles(real_graph):
    bad = module_cycles(SRC, real_graph)
    assert not bad, "modules importing each other:\n" + _lines(bad)


def test_no_package_cycles(real_graph):
    bad = package_cycles(SRC, real_graph)
    assert not bad, "packages importing each other:\n" + _lines(bad)


def test_cycle_finder_finds_a_ring():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("mod", ["petctfm.core.errors", "petctfm.methods.segmentation"])
def test_layer_of(mod):
    assert layer(mod) in ALLOWED


def test_lazy_api_is_read(real_graph):
    api = lazy_api(SRC)
    assert api["finetune"] == "petctfm.methods.finetune"
    assert all(exists(m, SRC) for m in api.values()), {n: m for n, m in api.items() if not exists(m, SRC)}
    assert set(api.values()) <= real_graph[ROOT]  # the _API strings are the root's (lazy) imports


def test_top_level_package_imports_lazily():
    """``import petctfm`` must stay cheap: its __init__ imports only the version at module level."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {n.module for n in top if isinstance(n, ast.ImportFrom)} | {a.name for n in top if isinstance(n, ast.Import)
                                                                        for a in n.names}
    assert names <= {"__future__", "petctfm.core.version", "importlib", "typing"}, names


# ---------------------------------------------------------------------------------------------------------------
# mutation tests: one injected violation in a copy of src/petctfm is reported, and nothing else changes
# (compared with the unmutated copy, so they hold whatever violations today's tree has)


def _copy(dst: Path) -> Path:
    shutil.copytree(SRC, dst, ignore=lambda d, names: [n for n in names if n == "__pycache__" or (
        (Path(d) / n).is_file() and not n.endswith(".py"))])
    return dst


def _all_checks(root: Path, allowed: dict[str, set[str]]) -> dict[str, set]:
    g = graph(root)
    return {"unlayered": unlayered(root, allowed), "allowed": allowed_violations(root, allowed),
            "layers": layer_violations(root, allowed, g), "module_cycles": module_cycles(root, g),
            "package_cycles": package_cycles(root, g)}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, set]:
    """What the checks report on an unmutated copy of the tree."""
    return _all_checks(_copy(tmp_path_factory.mktemp("base") / ROOT), ALLOWED)


RINGS = ("module_cycles", "package_cycles")


def _new_violations(baseline: dict[str, set], root: Path, allowed: dict[str, set[str]] = ALLOWED) -> dict[str, set]:
    """What the checks report on ``root`` and not on the unmutated copy. No violation of the unmutated copy may
    disappear (a ring may only grow: a mutation that joins an existing ring reports the larger ring)."""
    after = _all_checks(root, allowed)
    for k in after:
        hidden = ({r for r in baseline[k] if not any(set(r) <= set(a) for a in after[k])} if k in RINGS
                  else baseline[k] - after[k])
        assert not hidden, f"the mutation hid {k}: {hidden}"
    return {k: after[k] - baseline[k] for k in after if after[k] - baseline[k]}


def _through(ring: tuple[str, ...], mod: str) -> bool:
    """Whether ``ring`` (of modules or package units) runs through module ``mod``."""
    return any(mod == u or mod.startswith(u + ".") for u in ring)


def _only_rings_through(new: dict[str, set], mod: str) -> None:
    """Everything left in ``new`` is a ring through the mutated module: an upward import into a layer that imports
    the mutated one back also closes rings, which the cycle checks rightly report."""
    assert set(new) <= set(RINGS), new
    assert all(_through(r, mod) for k in new for r in new[k]), new


def _assert_one_new_ring(baseline: dict[str, set], new: dict[str, set], units: set[str]) -> None:
    """``new`` is one package ring: the mutated ``units``, joined with whichever rings of the unmutated copy it
    swallowed (none on a tree without package rings), and nothing else."""
    assert set(new) == {"package_cycles"} and len(new["package_cycles"]) == 1, new
    (ring,) = new["package_cycles"]
    joined = units.union(*(set(r) for r in baseline["package_cycles"] if set(r) <= set(ring)))
    assert ring == tuple(sorted(joined)), (ring, joined)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n\n" + text + "\n")


def test_unmutated_copy_reports_what_the_tree_does(baseline, real_graph):
    assert baseline["unlayered"] == unlayered(SRC, ALLOWED)
    assert baseline["allowed"] == allowed_violations(SRC, ALLOWED)
    assert baseline["layers"] == layer_violations(SRC, ALLOWED, real_graph)
    assert baseline["module_cycles"] == module_cycles(SRC, real_graph)
    assert baseline["package_cycles"] == package_cycles(SRC, real_graph)


@pytest.mark.parametrize("code", [
    "from petctfm import finetune",
    "import petctfm\n\n\ndef _f():\n    return petctfm.finetune",
    "import petctfm.core.errors\n\n\ndef _f():\n    return petctfm.finetune",
    "import petctfm as _p\n\n\ndef _f():\n    return getattr(_p, 'finetune')",
], ids=["from-petctfm-import", "attribute", "attribute-after-import-of-a-submodule", "getattr"])
def test_mutation_lazy_api_import_is_caught(tmp_path, baseline, code):
    """core/config.py takes ``finetune`` from the lazy public API: an import of methods.finetune."""
    root = _copy(tmp_path / ROOT)
    _append(root / "core" / "config.py", code)
    new = _new_violations(baseline, root)
    assert new.pop("layers") == {"petctfm.core.config -> petctfm.methods.finetune"}
    _only_rings_through(new, "petctfm.core.config")


@pytest.mark.parametrize("code, named", [
    ('import importlib\n\n\ndef _f():\n    return importlib.import_module("petctfm.methods.segmentation.api")',
     {"petctfm.methods.segmentation.api"}),
    ('def _f():\n    return __import__("petctfm.methods.segmentation.api")', {"petctfm.methods.segmentation.api"}),
    ('def _f():\n    return __import__("petctfm.methods.segmentation", fromlist=["api"])',
     {"petctfm.methods.segmentation", "petctfm.methods.segmentation.api"}),
    ('import importlib\n\n\ndef _f(name):\n    return importlib.import_module(f"petctfm.methods.{name}.api")',
     {"petctfm.methods"}),
], ids=["import_module", "__import__", "__import__-fromlist", "f-string"])
def test_mutation_importlib_string_is_caught(tmp_path, baseline, code, named):
    """core/device.py imports a method by a string, inside a function."""
    root = _copy(tmp_path / ROOT)
    _append(root / "core" / "device.py", code)
    new = _new_violations(baseline, root)
    assert new.pop("layers") == {f"petctfm.core.device -> {m}" for m in named}
    _only_rings_through(new, "petctfm.core.device")


@pytest.mark.parametrize("code, named", [
    ('_EXTRA_BUILDERS = {"staging": "petctfm.methods.staging:build_model"}', "petctfm.methods.staging"),
    ('_EXTRA = ("petctfm.methods.staging",)', "petctfm.methods.staging"),
    ('def _f():\n    return "petctfm.methods.staging.fit_staging"', "petctfm.methods.staging"),
    ('_GONE = "petctfm.methods.removed_method.model:build_model"', "petctfm.methods"),
], ids=["registry-module:attr", "module-name", "module.attr", "missing-module-counts-by-its-layer"])
def test_mutation_module_string_constant_is_caught(tmp_path, baseline, code, named):
    """train/trainer.py names a method module in a string (a builder registry entry and the like)."""
    root = _copy(tmp_path / ROOT)
    _append(root / "train" / "trainer.py", code)
    new = _new_violations(baseline, root)
    assert new.pop("layers") == {f"petctfm.train.trainer -> {named}"}
    _only_rings_through(new, "petctfm.train.trainer")


def test_docstrings_and_prose_naming_a_module_are_not_imports(tmp_path, baseline):
    root = _copy(tmp_path / ROOT)
    _append(root / "train" / "trainer.py", 'class _Doc:\n    """petctfm.methods.staging"""\n\n    x = 1\n'
                                           '    """petctfm.methods.staging:build_model"""\n\n\n'
                                           'def _doc():\n    """petctfm.methods.staging"""\n    '
                                           'return "see petctfm.methods.staging for the stages"')
    path = root / "core" / "labels.py"
    path.write_text('"""petctfm.methods.staging"""\n' + path.read_text())  # a module docstring
    assert _new_violations(baseline, root) == {}


def test_mutation_package_cycle_is_caught(tmp_path, baseline):
    """experiments/interactive/report.py imports label_efficiency's plan and label_efficiency/report.py
    interactive's clicks: no two modules import each other, but the two experiment packages do."""
    root = _copy(tmp_path / ROOT)
    _append(root / "experiments" / "interactive" / "report.py",
            "from petctfm.experiments.label_efficiency import plan as _plan")
    _append(root / "experiments" / "label_efficiency" / "report.py",
            "from petctfm.experiments.interactive.clicks import component_points as _c")
    assert _new_violations(baseline, root) == {
        "package_cycles": {("petctfm.experiments.interactive", "petctfm.experiments.label_efficiency")}}


def test_mutation_method_package_cycle_is_caught(tmp_path, baseline):
    """early_fusion_mae/api.py imports promptable's presets and promptable/api.py early_fusion_mae's presets. If
    the tree already has a ring among the method packages that these two reach, the ring reported is that one
    grown by the two."""
    root = _copy(tmp_path / ROOT)
    _append(root / "methods" / "early_fusion_mae" / "api.py", "from petctfm.methods.promptable import presets as _p")
    _append(root / "methods" / "promptable" / "api.py", "from petctfm.methods.early_fusion_mae import presets as _p")
    new = _new_violations(baseline, root)
    _assert_one_new_ring(baseline, new, {"petctfm.methods.early_fusion_mae", "petctfm.methods.promptable"})


def test_mutation_package_cycle_with_a_plain_module_is_caught(tmp_path, baseline):
    """A plain module directly in a layer (methods/probe.py) is its own unit: probe.py imports early_fusion_mae's
    presets and early_fusion_mae/api.py imports probe."""
    root = _copy(tmp_path / ROOT)
    _append(root / "methods" / "probe.py", "from petctfm.methods.early_fusion_mae import presets as _p")
    _append(root / "methods" / "early_fusion_mae" / "api.py", "import petctfm.methods.probe as _probe")
    new = _new_violations(baseline, root)
    _assert_one_new_ring(baseline, new, {"petctfm.methods.early_fusion_mae", "petctfm.methods.probe"})


@pytest.mark.parametrize("mutate, expected", [
    (lambda a: a["inference"].add("gone"), "ALLOWED['inference'] names 'gone': no package or module petctfm.gone"),
    (lambda a: a.update(legacy={"core"}), "ALLOWED key 'legacy': no package or module petctfm.legacy"),
    (lambda a: a["cli"].add("api"), "ALLOWED['cli'] names 'api': no package or module petctfm.api"),
    (lambda a: a["core"].add("viz"), "ALLOWED is not a layer order: core <-> data <-> evaluate <-> io <-> viz"),
], ids=["value", "key", "cli-names-api", "not-a-layer-order"])
def test_mutation_allowed_names_a_missing_module(tmp_path, baseline, mutate, expected):
    root = _copy(tmp_path / ROOT)
    allowed = {k: set(v) for k, v in ALLOWED.items()}
    mutate(allowed)
    assert _new_violations(baseline, root, allowed) == {"allowed": {expected}}


def test_mutation_allowed_row_of_a_removed_package(tmp_path, baseline):
    root = _copy(tmp_path / ROOT)
    shutil.rmtree(root / "serve")
    assert allowed_violations(root, ALLOWED) - baseline["allowed"] == {
        "ALLOWED key 'serve': no package or module petctfm.serve",
        "ALLOWED['cli'] names 'serve': no package or module petctfm.serve"}
