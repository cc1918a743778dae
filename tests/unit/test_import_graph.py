"""No import circles in the package: no module of r1zero imports, directly or through others, a module that imports
it back. Every import counts, also the ones inside functions (lazy imports still tie the two modules together).
The graph is read from the source (ast), so nothing is imported here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "r1zero"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the r1zero modules it imports}. `from a.b import c` counts as importing a.b.c when that is a
    module, else a.b; relative imports are resolved against the importing module's package."""
    files = {module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan). Example: {a: {b}, b: {a}, c: {a}} ->
    [[a, b]]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circles_finds_a_circle_and_only_it() -> None:
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    import r1zero

    graph = import_graph(PACKAGE)
    assert "r1zero.sync_limits" in graph["r1zero.config"]  # a top-level import
    assert "r1zero.rollout.vllm_engine" in graph["r1zero.rollout.engines"]  # one inside a function
    assert Path(r1zero.__file__).parent == PACKAGE


def test_the_package_has_no_import_circles() -> None:
    assert circles(import_graph(PACKAGE)) == []
