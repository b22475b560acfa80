"""The operator's packages are its floors, and imports flow one way: model <- logic <- io <-
handlers. A module imports only from its own floor or the floors below; no import runs in a circle;
the model and the logic import nothing that does I/O; every module is on a floor, and none grows
past MAX_LINES. Read from the source with `ast`: nothing is imported or run."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest
from tests.helpers.layers import circles

PACKAGE = Path(__file__).resolve().parents[3] / "operator" / "embedding_proxy_operator"
NAME = "embedding_proxy_operator"

# Floor by top-level package or module, lowest first: each floor is a package of its own.
FLOORS: dict[str, tuple[str, ...]] = {
    # What an EmbeddingProxy is: names, the spec with its defaults and rules, the options.
    "model": ("model",),
    # Pure functions of the model: what to render, plan, decide and say.
    "logic": ("logic",),
    # Talking to the API server, the pods and Prometheus.
    "io": ("io",),
    # kopf's handlers and the commands: the operator's and `helm test`'s check.
    "handlers": ("handlers", "cli", "check", "__main__", "__init__"),
}
# What the pure floors must not import: the network, kopf, the event loop, processes.
IMPURE = ("aiohttp", "kopf", "kubernetes", "asyncio", "socket", "http", "urllib.request", "os")
PURE_FLOORS = ("model", "logic")
MAX_LINES = 400


def imported(path: Path, package: Path, name: str) -> tuple[set[str], set[str]]:
    """(top-level modules of the package, other modules) that the file at `path` imports."""
    rel = path.relative_to(package).with_suffix("").parts
    here = rel[:-1]  # the subpackage the file is in (its own folder for an __init__)
    if rel[-1] == "__init__":
        here = rel[:-1]
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == name:
                    ours.update(parts[1:2])
                else:
                    others.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == name:
                    target: tuple[str, ...] = tuple(parts[1:])
                else:
                    others.add(node.module or "")
                    continue
            else:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = (*base, *(node.module.split(".") if node.module else ()))
            if target:
                ours.add(target[0])
            else:  # `from . import a, b` at the top of the package: a and b are modules
                ours.update(alias.name for alias in node.names)
    return ours, others


def floor_of(module: str, floors: Mapping[str, tuple[str, ...]]) -> str | None:
    return next((floor for floor, mods in floors.items() if module in mods), None)


def violations(
    package: Path,
    name: str,
    floors: Mapping[str, tuple[str, ...]],
    max_lines: int = MAX_LINES,
) -> list[str]:
    order = list(floors)
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        module = rel.parts[0].removesuffix(".py")
        floor = floor_of(module, floors)
        if floor is None:
            out.append(f"{rel}: on no floor")
            continue
        lines = len(path.read_text().splitlines())
        if lines > max_lines:
            out.append(f"{rel}: {lines} lines, over {max_lines}")
        ours, others = imported(path, package, name)
        for target in sorted(ours - {module}):
            target_floor = floor_of(target, floors)
            if target_floor is None or order.index(target_floor) > order.index(floor):
                out.append(f"{rel} ({floor}) imports {target} ({target_floor}), a floor above")
        if floor in PURE_FLOORS:
            for other in sorted(others):
                if any(other == bad or other.startswith(bad + ".") for bad in IMPURE):
                    out.append(f"{rel} ({floor}) imports {other}, which does I/O")
    return out


def test_the_operator_imports_flow_one_way() -> None:
    assert violations(PACKAGE, NAME, FLOORS) == []


def test_no_import_runs_in_a_circle() -> None:
    files = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    assert circles(files, PACKAGE, NAME) == []
    files[PACKAGE / "model" / "quantity.py"] += "\nfrom .spec import ProxySpec\n"
    assert circles(files, PACKAGE, NAME) == [
        ["model.quantity", "model.sidecar_rules", "model.spec"]
    ]


def write(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for rel, text in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return package


SMALL_FLOORS = {"model": ("spec",), "logic": ("plan",), "io": ("kube",), "handlers": ("handlers",)}


@pytest.mark.parametrize(
    ("files", "found"),
    [
        # A pure module that reaches up to the API client.
        ({"plan.py": "from .kube import Kube\n"}, "plan.py (logic) imports kube (io)"),
        ({"spec.py": "from pkg import plan\n"}, "spec.py (model) imports plan (logic)"),
        # From inside a subpackage, two dots up.
        ({"kube.py": "", "handlers/a.py": "from .. import kube\n"}, None),
        ({"plan.py": "", "kube.py": "from . import handlers\n"}, "kube.py (io) imports handlers"),
        ({"plan.py": "import asyncio\n"}, "plan.py (logic) imports asyncio, which does I/O"),
        ({"plan.py": "from aiohttp import web\n"}, "plan.py (logic) imports aiohttp"),
        ({"extra.py": ""}, "extra.py: on no floor"),
        ({"plan.py": "x = 1\n" * 401}, "plan.py: 401 lines, over 400"),
        # Downward and sideways are fine.
        ({"handlers/b.py": "from ..plan import x\nfrom .a import y\n", "plan.py": ""}, None),
    ],
)
def test_the_check_finds_each_kind_of_violation(
    tmp_path: Path, files: dict[str, str], found: str | None
) -> None:
    package = write(tmp_path, files)
    problems = violations(package, "pkg", SMALL_FLOORS)
    if found is None:
        assert problems == []
    else:
        assert any(found in p for p in problems), problems
