"""The proxy's packages are its layers, and imports flow one way: config <- http <- batching <- api
<- telemetry <- callers <- upstream <- the application <- workers <- the programs. A module may
import from its own floor or any floor below, never above; every top-level module or package is on
a floor; no import runs in a circle, between modules of one package either. Read from the source
with `ast`, imports inside functions and under TYPE_CHECKING included: nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.layers import circles, imports_of, module_name

PACKAGE = Path(__file__).resolve().parents[3] / "proxy" / "embedding_proxy"
NAME = "embedding_proxy"

# Bottom to top: each floor's top-level packages and modules.
FLOORS: list[tuple[str, set[str]]] = [
    ("config", {"config"}),  # the settings model, flags, lanes and keys, reload, redaction
    ("http", {"http"}),  # the HTTP/1.1 server and client: no TEI, no batching
    ("batching", {"batching"}),  # queues, flush policy, concurrency limit: no HTTP, no TEI
    ("api", {"api"}),  # TEI's and OpenAI's dialects, splitting, forwarding, error shapes
    ("telemetry", {"telemetry"}),  # logs, metrics, the smoothed autoscaling signal
    ("callers", {"callers"}),  # API keys, priority lanes, rate limits
    ("upstream", {"upstream"}),  # the client for TEI
    # The application: the handlers, their routes, the background chores, the process.
    (
        "application",
        {"app", "doors", "queued", "routes", "respond", "housekeeping", "serve", "failure"},
    ),
    ("workers", {"workers"}),  # the supervisor and its worker processes
    ("programs", {"cli", "demo", "__init__", "bench", "simulator"}),  # the commands and tools
]

# Packages that must not do I/O: sockets, HTTP, processes, metrics exposition.
PURE = {"config", "batching", "api"}
NO_IO = {"aiohttp", "httptools", "socket", "ssl", "subprocess", "prometheus_client", "uvloop"}

# No module longer than this: a longer one is split where its parts meet.
MAX_LINES = 400


def floor_of(module: str) -> int | None:
    top = module.split(".")[0] or "__init__"
    return next((i for i, (_, mods) in enumerate(FLOORS) if top in mods), None)


def violations(files: dict[Path, str], package: Path = PACKAGE, name: str = NAME) -> list[str]:
    """Each import that runs up the floors, or that involves a module on no floor."""
    found: list[str] = []
    for path, source in sorted(files.items()):
        module = module_name(path, package) or "__init__"
        own = floor_of(module)
        if own is None:
            found.append(f"{module}: on no floor")
            continue
        for imported in sorted(imports_of(path, source, package, name)):
            theirs = floor_of(imported)
            if theirs is None:
                found.append(f"{module} imports {imported}, which is on no floor")
            elif theirs > own:
                found.append(
                    f"{module} ({FLOORS[own][0]}) imports {imported} ({FLOORS[theirs][0]})"
                )
    return found


def io_imports(files: dict[Path, str], package: Path = PACKAGE) -> list[str]:
    """Each import of an I/O library by a module of a pure package."""
    found: list[str] = []
    for path, source in sorted(files.items()):
        module = module_name(path, package)
        if module.split(".")[0] not in PURE:
            continue
        for node in ast.walk(ast.parse(source)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            found.extend(f"{module} imports {n}" for n in names if n.split(".")[0] in NO_IO)
    return found


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")}


def test_imports_flow_one_way() -> None:
    assert violations(_sources()) == []


def test_no_import_runs_in_a_circle() -> None:
    assert circles(_sources(), PACKAGE, NAME) == []


def test_pure_packages_do_no_io() -> None:
    assert io_imports(_sources()) == []


def test_each_kind_of_violation_is_found() -> None:
    files = _sources()
    batcher = PACKAGE / "batching" / "batcher.py"
    files[batcher] += "\nfrom ..upstream.client import Upstream\n"
    files[PACKAGE / "api" / "tei.py"] += "\ndef late():\n    from embedding_proxy import app\n"
    files[PACKAGE / "new_part.py"] = "from .api import errors\n"
    files[PACKAGE / "http" / "server.py"] += "\nimport embedding_proxy.api.tei\n"
    assert violations(files) == [
        "api.tei (api) imports app (application)",
        "batching.batcher (batching) imports upstream.client (upstream)",
        "http.server (http) imports api.tei (api)",
        "new_part: on no floor",
    ]
    files[PACKAGE / "api" / "openai.py"] += "\nimport aiohttp\n"
    assert io_imports(files) == ["api.openai imports aiohttp"]


def test_a_circle_is_found_inside_a_package_and_across_floors() -> None:
    files = _sources()
    files[PACKAGE / "http" / "message.py"] += "\nfrom .server import Server\n"
    files[PACKAGE / "serve.py"] += "\nfrom . import cli\n"
    found = circles(files, PACKAGE, NAME)
    assert ["http.connection", "http.message", "http.reader", "http.server"] in found or any(
        {"http.message", "http.server"} <= set(c) for c in found
    ), found
    assert any({"cli", "serve"} <= set(c) for c in found), found
    assert len(found) == 2, found


def test_every_floor_is_there_and_modules_stay_small() -> None:
    tops = {module_name(p, PACKAGE).split(".")[0] or "__init__" for p in PACKAGE.rglob("*.py")}
    placed = set().union(*(m for _, m in FLOORS))
    assert placed == tops  # no floor names a module that is gone
    top_modules = [p for p in PACKAGE.glob("*.py")]
    assert len(top_modules) <= 12, sorted(p.name for p in top_modules)
    long = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if len(p.read_text().splitlines()) > MAX_LINES
    }
    assert long == set(), f"over {MAX_LINES} lines: {sorted(long)}"
