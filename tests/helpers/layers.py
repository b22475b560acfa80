"""A package's own import graph, read from the source with `ast` (nothing is imported), and the
circles in it: shared by the layer tests of the proxy and the operator."""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, package: Path) -> str:
    """The dotted name, below the package, of the module at `path` (a package: its folder's)."""
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, source: str, package: Path, name: str) -> set[str]:
    """The package's own modules (dotted, below the package) that `source` imports; for
    `from x import y`, `x.y` where y is a module, else x."""
    is_init = path.name == "__init__.py"
    here = module_name(path, package).split(".") if module_name(path, package) else []
    folder = here if is_init else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                if up > len(folder):
                    continue
                base = folder[: len(folder) - up]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == name:
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = [*target, alias.name]
                found.add(".".join(sub) if _exists(package, sub) else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == name and len(names) > 1:
                    found.add(".".join(names[1:]))
    found.discard("")
    return found


def _exists(package: Path, parts: list[str]) -> bool:
    rel = Path(*parts)
    return (package / rel.with_suffix(".py")).exists() or (package / rel / "__init__.py").exists()


def circles(files: dict[Path, str], package: Path, name: str) -> list[list[str]]:
    """Every import circle between modules (strongly connected components of two or more, or a
    module that imports itself), each as its sorted module names."""
    graph: dict[str, set[str]] = {}
    for path, source in files.items():
        module = module_name(path, package) or "__init__"
        graph.setdefault(module, set()).update(imports_of(path, source, package, name) - {""})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
