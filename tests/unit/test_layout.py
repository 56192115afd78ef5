"""The shape of the code base: no import circle among engine/ and pools/ modules.

Every import counts (module level and inside functions) except those under
``if TYPE_CHECKING:``; a package importing its own submodule counts, a submodule naming its
parent package only to reach a sibling (``from pools.prefork import shm``) does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    mods = {}
    for base in ("engine", "pools"):
        for path in (ROOT / base).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    package = name.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[:len(package) - child.level + 1]
                    module = ".".join(package + ([module] if module else []))
                subs = {f"{module}.{a.name}" for a in child.names} & set(mods)
                found.update(subs)
                if len(subs) < len(child.names):
                    found.add(module)
            visit(child)

    visit(ast.parse(path.read_text()))
    edges = set()
    for target in found:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_no_import_circle():
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert _cycles(graph) == []


def test_the_checker_sees_a_circle():
    # Given a -> b -> c -> a and an unrelated d -> a; Then exactly the three are reported
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_modules_import_no_cli_code():
    # engine.cli and engine.console are where operator text lives; the library never
    # imports them (the worker's banner is passed in by the command line)
    mods = _modules()
    console = {"engine.cli", "engine.cli_fleet", "engine.console", "engine.monitor",
               "engine.benchmark", "engine.__main__", "engine.dashboard", "engine.dashboard.web",
               "engine.dashboard.fleet", "engine.dashboard.monitor"}
    for name, path in mods.items():
        if name in console or name.startswith("pools.testing"):
            continue
        assert not _imports(name, path, mods) & {"engine.cli", "engine.console"}, name
