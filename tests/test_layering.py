"""The floors of the code, read from its own import statements.

    pipeline (1)  <  exporters (2)  <  backends (3)  <  dsqn_deploy (4)  <  benchmarks (5)

A module may import only from its own floor or a lower one: the shared vocabulary and the torch
models (``pipeline``) know nothing of NIR or simulators, the NIR side and the Plan every backend
runs (``exporters``) know nothing of the adapters, and the adapters know nothing of the public
API (``dsqn_deploy``: it mirrors the commands, so it reaches every floor below it) or of the
benchmarks.
Every ``import``/``from ... import`` counts, also one written inside a function (a lazy import
keeps start-up fast; it does not make an upward arrow acceptable), and so does
``importlib.import_module("...")`` with a literal name. Separately, the imports that run when a
module is loaded (not inside a function, not under ``if TYPE_CHECKING:``) must form no cycle.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"pipeline": 1, "exporters": 2, "backends": 3, "dsqn_deploy": 4, "benchmarks": 5}

# "file:line" of an import that is still known to point upward, and why. Empty when the layout is done.
ALLOWED_UPWARD: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    file: str  # relative path of the importing file
    line: int
    source: str  # dotted name of the importing module
    target: str  # dotted name of the imported module (the deepest one that is a file of ours)
    at_load: bool  # runs when the module is imported (not inside a function or TYPE_CHECKING)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_files() -> dict[str, Path]:
    files = {}
    for pkg in FLOORS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            files[module_name(path)] = path
    return files


def resolve(name: str, modules: set[str]) -> str:
    """The deepest prefix of ``name`` that is one of our modules (``name`` itself otherwise)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> list[Import]:
    source = module_name(path, root)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    rel = str(path.relative_to(root))
    found: list[Import] = []

    def add(name: str, line: int, at_load: bool, names: list[str] = ()) -> None:
        if not name:
            return
        if names:  # from X import a, b: a submodule X.a is the target, else X
            for n in names:
                found.append(Import(rel, line, source, resolve(f"{name}.{n}", modules), at_load))
        else:
            found.append(Import(rel, line, source, resolve(name, modules), at_load))

    def visit(node: ast.AST, at_load: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            at_load = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, at_load)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, at_load)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            add(name, node.lineno, at_load, [a.name for a in node.names if a.name != "*"])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                add(node.args[0].value, node.lineno, at_load)
        for child in ast.iter_child_nodes(node):
            visit(child, at_load)

    visit(ast.parse(path.read_text(), filename=rel), True)
    return found


@functools.cache
def all_imports() -> list[Import]:
    files = our_files()
    modules = set(files)
    return [imp for path in files.values() for imp in imports_of(path, modules)]


def floor(module: str) -> int | None:
    return FLOORS.get(module.split(".")[0])


def upward(imports: list[Import]) -> list[Import]:
    return [imp for imp in imports
            if floor(imp.target) is not None and floor(imp.target) > floor(imp.source)]


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module, or a module importing itself."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.at_load and floor(imp.target) is not None:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


# ---------------------------------------------------------------- the reader itself


def test_reader_sees_lazy_relative_and_literal_imports(tmp_path: Path) -> None:
    code = ("import os\nfrom pipeline.errors import UserError\nfrom . import ops\n"
            "def f():\n    from backends.cli import main\n    import importlib\n"
            "    importlib.import_module('benchmarks.energy')\n"
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from backends.base import Readout\n")
    (tmp_path / "exporters").mkdir()
    path = tmp_path / "exporters" / "probe.py"
    path.write_text(code)
    modules = {"pipeline.errors", "exporters.ops", "backends.cli", "benchmarks.energy", "backends.base",
               "exporters.probe"}
    found = {(i.target, i.line, i.at_load) for i in imports_of(path, modules, root=tmp_path)}
    assert ("pipeline.errors", 2, True) in found
    assert ("exporters.ops", 3, True) in found
    assert ("backends.cli", 5, False) in found
    assert ("benchmarks.energy", 7, False) in found
    assert ("backends.base", 10, False) in found
    ups = upward([Import("x", 1, "exporters.x", t, a) for t, _, a in found])
    assert {u.target for u in ups} == {"backends.cli", "benchmarks.energy", "backends.base"}


def test_cycle_finder() -> None:
    edges = [("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x"), ("a.z", "b.w")]
    imps = [Import("f", 1, s, t, True) for s, t in edges]
    # only names on a floor count; use real floor names
    imps = [Import("f", 1, "pipeline." + i.source, "pipeline." + i.target, True) for i in imps]
    assert cycles(imps) == [["pipeline.a.x", "pipeline.a.y", "pipeline.a.z"]]
    assert cycles([Import("f", 1, "pipeline.a", "pipeline.b", False),
                   Import("f", 1, "pipeline.b", "pipeline.a", True)]) == []


# ---------------------------------------------------------------- the code


def test_no_import_points_to_a_higher_floor() -> None:
    offenders = [imp for imp in upward(all_imports()) if imp.where not in ALLOWED_UPWARD]
    listed = "\n".join(f"  {imp.where}: {imp.source} -> {imp.target}" for imp in offenders)
    assert not offenders, f"imports from a lower floor to a higher one ({' < '.join(FLOORS)}):\n{listed}"


def test_allowed_upward_imports_still_exist() -> None:
    """An allow-list entry whose import is gone must go too, so the list only shrinks."""
    present = {imp.where for imp in upward(all_imports())}
    stale = sorted(set(ALLOWED_UPWARD) - present)
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer point upward: {stale}"


def test_no_import_cycle_at_load_time() -> None:
    found = cycles(all_imports())
    assert not found, "module import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_error_vocabulary_is_a_leaf() -> None:
    """Every module may raise UserError, so pipeline.errors must import nothing of ours when loaded."""
    ours = [imp for imp in all_imports()
            if imp.source == "pipeline.errors" and imp.at_load and floor(imp.target) is not None]
    assert not ours, ours


def test_no_dynamic_import_below_the_adapters() -> None:
    """``importlib.import_module(name)`` with a computed name cannot be read; on the floors that must
    not reach the adapters (pipeline, exporters) every import is written out."""
    hidden = []
    for module, path in our_files().items():
        if floor(module) > FLOORS["exporters"]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                literal = node.args and isinstance(node.args[0], ast.Constant)
                if called in ("import_module", "__import__") and not literal:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, f"imports by computed name: {hidden}"
