"""The ``analysis`` package's modules import one another one way: no cycle among their module-level imports.

A cycle (``data`` importing ``validation`` importing ``data``) works only while the import order happens to
suit it, and tells that one piece of knowledge lives in two places. Imports inside a function (done lazily,
e.g. to keep ``--help`` free of torch) and under ``if TYPE_CHECKING:`` do not run at import time and are not
counted.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "analysis"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from {'.' * level}{target} import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``analysis`` modules that ``path`` imports when it is imported (function bodies and TYPE_CHECKING skipped)."""
    name, is_package = _module_name(path), path.name == "__init__.py"
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node.level, node.module)
                found.add(source)
                found.update(f"{source}.{alias.name}" for alias in node.names)  # from . import data
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {module for module in found if module in modules and module != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _top_level_imports(path, set(paths)) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a path that returns to its start."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:  # walk inside the group from its first member back to it
        start = min(group)
        path, seen = [start], {start}
        while True:
            step = sorted(m for m in graph[path[-1]] if m in group)
            back = [m for m in step if m == start]
            if back and len(path) > 1:
                cycles.append(path + [start])
                break
            nxt = next((m for m in step if m not in seen), None)
            if nxt is None:
                cycles.append(sorted(group))
                break
            path.append(nxt)
            seen.add(nxt)
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_relative_imports_resolve_to_modules():
    assert _resolve("analysis.data", False, 1, "validation") == "analysis.validation"
    assert _resolve("analysis.defenses.base", False, 2, "validation") == "analysis.validation"
    assert _resolve("analysis.defenses", True, 1, "base") == "analysis.defenses.base"


def test_the_graph_sees_the_imports_that_run():
    graph = _graph()
    assert "analysis.validation" in graph["analysis.data"]  # from .validation import check_images, ...
    assert "analysis.data" not in graph["analysis.validation"]


def test_no_import_cycle_among_the_analysis_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (module-level imports): " + "; ".join(" -> ".join(c) for c in cycles)
