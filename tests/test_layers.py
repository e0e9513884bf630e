"""The house reads bottom-up (docs/design.md, "Layers"): each subpackage sits on a floor and
imports only from floors below its own (or its own floor, without circles); ``training`` sits
beside the stack and only the CLI imports it. Files keep to one concern: no module over
450 lines, no function over 60 lines outside the Typer commands.

Every import counts, module-level or inside a function (a lazy import is still a dependency);
an import for type annotations only (``if TYPE_CHECKING:``) counts for the floors but not
for circles (it runs at no time).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gaf_trt"

#: Floor of each top-level module or subpackage of gaf_trt (higher imports lower).
FLOORS = {
    "errors": 0, "_version": 0, "records": 0,
    "registry": 1, "checks": 1, "precision": 1, "device": 1, "io": 1,
    "console": 2,  # terminal conventions of both command lines (errors, progress)
    "metrics": 2,  # Fréchet statistics and the digits quality metric (evaluate and training)
    "model": 2,
    "compose": 3,
    "training": 4,  # beside the stack: model/compose/io below it, only cli above it
    "enginedir": 4,
    "engine": 5,
    "export": 6,
    "pipeline": 7,
    "serve": 8, "generate": 8, "evaluate": 8,
    "cli": 9,
}
#: The one import allowed to run up a floor: compose names the engine's protocols for typing.
ALLOWED_UP = {("compose", "gaf_trt.engine.base")}
#: What compose may name from engine.base: the contract's protocols, for typing and isinstance.
ENGINE_PROTOCOLS = {"AnchorNetwork", "FusedComposedStep"}
#: Who may import training.
TRAINING_USERS = {"cli", "training"}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _typing_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:``."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(n for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(name: str, path: Path, typing: bool = True) -> set[str]:
    """The gaf_trt modules ``name`` imports (``from pkg import sub`` resolves to ``pkg.sub``);
    ``typing=False`` leaves out the imports for annotations only."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    skip = set() if typing else _typing_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in MODULES else mod)
    return {m for m in out if m in MODULES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}
RUNTIME_GRAPH = {name: _imports(name, path, typing=False) for name, path in MODULES.items()}


def _floor_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_subpackage_has_a_floor():
    missing = sorted({_floor_key(m) for m in MODULES} - set(FLOORS) - {"", "__main__"})
    assert not missing, f"give these a floor in FLOORS: {missing}"


def test_no_import_runs_up_a_floor():
    bad = []
    for mod, targets in GRAPH.items():
        src = _floor_key(mod)
        if src in ("", "__main__"):
            continue  # gaf_trt/__init__.py is the public API: it may name anything
        for t in targets:
            dst = _floor_key(t)
            if dst in ("", "__main__") or (src, t) in ALLOWED_UP:
                if dst == "":
                    bad.append(f"{mod} -> {t} (the package root)")
                continue
            if FLOORS[dst] > FLOORS[src] or (dst == "training" and src not in TRAINING_USERS):
                bad.append(f"{mod} (floor {FLOORS[src]}) -> {t} (floor {FLOORS[dst]})")
    assert not bad, "imports running up a floor:\n" + "\n".join(sorted(bad))


def test_compose_names_only_the_engine_protocols():
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("gaf_trt.compose"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "gaf_trt.engine.base":
                bad += [f"{name}: {a.name}" for a in node.names if a.name not in ENGINE_PROTOCOLS]
            elif isinstance(node, ast.Import) and any(a.name.startswith("gaf_trt.engine")
                                                      for a in node.names):
                bad.append(f"{name}: import {', '.join(a.name for a in node.names)}")
    assert not bad, f"compose may name only {sorted(ENGINE_PROTOCOLS)} of the engine: {bad}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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


def test_no_circle_between_subpackages():
    pk: dict[str, set[str]] = defaultdict(set)
    for mod, targets in GRAPH.items():
        a = _floor_key(mod)
        if a == "":
            continue
        pk[a].update(b for t in targets if (b := _floor_key(t)) not in ("", a))
    assert not _cycles(pk), f"subpackage circles: {_cycles(pk)}"


def test_no_circle_between_modules():
    # A package's __init__ re-exporting its own submodules is not a circle of concerns.
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and MODULES[t].name == "__init__.py")}
             for m, ts in RUNTIME_GRAPH.items()}
    graph = {m: {t for t in ts if not (t.startswith(m + ".") and MODULES[m].name == "__init__.py")}
             for m, ts in graph.items()}
    assert not _cycles(graph), f"module circles: {_cycles(graph)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name]} has {lines} lines: split it by concern"


def test_function_length():
    long = []
    for name, path in MODULES.items():
        if name.startswith("gaf_trt.cli"):
            continue  # Typer commands declare every option in their signature
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n})")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
