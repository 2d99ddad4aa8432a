"""The shape of the code a newcomer reads: no function of 80 lines or more, and no import cycle
among fambench's modules (imports inside functions count: a cycle hidden there is one still)."""

from __future__ import annotations

import ast
from pathlib import Path

import fambench

PACKAGE = Path(fambench.__file__).parent
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The fambench modules ``name`` imports (a package's name for `from pkg import x`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def import_graph() -> dict[str, set[str]]:
    """Module → the fambench modules it imports, leaving out a package's own ``__init__``
    re-exports of its submodules (a package importing what it contains is no cycle)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        edges = _imported(name, path, known)
        if path.name == "__init__.py":
            edges = {e for e in edges if not e.startswith(name + ".")}
        graph[name] = {e for e in edges if not name.startswith(e + ".")}  # a module's parents
    return graph


def long_functions() -> list[str]:
    out = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                first = body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    body = body[1:] or body  # the docstring is not code
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    out.append(f"{name}.{node.name}: {lines} lines")
    return out


def test_no_function_body_of_80_lines_or_more():
    assert long_functions() == []


def test_no_import_cycle_among_fambench_modules():
    assert _cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_the_real_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "fambench.errors" in graph["fambench.filelock"] | graph["fambench.fileio"]
    assert "fambench.optim" in graph["fambench.key_values"]  # an import inside a function
