"""The proxy's imports flow one way: model <- logic <- io <- handlers <- programs. A module may
import from its own layer or any layer below, never above; a new module must be placed in a layer
here before it can be imported. Read from the source with `ast`, imports inside functions and
under TYPE_CHECKING included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "proxy" / "embedding_proxy"

# Bottom to top. A subpackage (bench, simulator) counts as one module.
LAYERS: list[tuple[str, set[str]]] = [
    # Plain data and rules about it: settings, error shapes, the pure flush policy and
    # concurrency controller.
    (
        "model",
        {
            "config",
            "lane_config",
            "redaction",
            "errors",
            "smoothing",
            "batch_policy",
            "lanes",
            "concurrency_limit",
        },
    ),
    # Decisions without I/O: batching, the dialects, splitting answers, retries, rate limits,
    # what a forwarded request may carry, the command line's flags.
    (
        "logic",
        {
            "batcher",
            "concurrency",
            "tei_api",
            "openai_api",
            "splitting",
            "retry",
            "ratelimit",
            "forwarding",
            "flags",
            "priority",
            "shares",
        },
    ),
    # Sockets, files, logs and metrics: the HTTP server and clients, the upstream, key files,
    # what a failed listen means.
    (
        "io",
        {
            "httpmessage",
            "httphead",
            "httpanswer",
            "httpreader",
            "httpconnection",
            "httpserver",
            "httpclient",
            "upstream",
            "logs",
            "metrics",
            "reload",
            "auth",
            "failure",
            "cpus",
            "control",
            "podmetrics",
        },
    ),
    # The proxy's handlers and what runs beside them.
    ("handlers", {"app", "routes", "respond", "housekeeping"}),
    # Programs made of the parts.
    (
        "programs",
        {"serve", "cli", "demo", "bench", "simulator", "__init__", "worker", "supervisor"},
    ),
]

# What model and logic must not import: sockets, HTTP, processes, metrics exposition.
NO_IO = {"aiohttp", "httptools", "socket", "ssl", "subprocess", "prometheus_client", "uvloop"}

# No module longer than this: a longer one is split where its parts meet.
MAX_LINES = 400


def _module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imports_of(path: Path, source: str) -> set[str]:
    """The package's own top-level modules that `source` (the file at `path`) imports."""
    inside = path.relative_to(PACKAGE).parts[:-1]  # () at the top, ("bench",) in bench/
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1  # `from .x`: this folder; `from ..x`: the one above
                if up > len(inside):
                    continue
                base = list(inside[: len(inside) - up])
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # `from . import x, y` at the top: modules, or the package's names
                    found.update(_top(alias.name) for alias in node.names)
                else:
                    found.add(target[0])
            elif node.module and node.module.split(".")[0] == "embedding_proxy":
                rest = node.module.split(".")[1:]
                if rest:
                    found.add(rest[0])
                else:
                    found.update(_top(alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "embedding_proxy" and len(names) > 1:
                    found.add(names[1])
    return found


def _top(name: str) -> str:
    """A name imported from the package itself: a module, or one of `__init__`'s names."""
    is_module = (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()
    return name if is_module else "__init__"


def layer_of(module: str) -> int:
    for i, (_, modules) in enumerate(LAYERS):
        if module in modules:
            return i
    raise KeyError(module)


def violations(files: dict[Path, str]) -> list[str]:
    """Each import that runs up the layers, or that involves a module placed in no layer."""
    found: list[str] = []
    for path, source in sorted(files.items()):
        module = _module_of(path)
        try:
            own = layer_of(module)
        except KeyError:
            found.append(f"{module}: in no layer")
            continue
        for imported in sorted(imports_of(path, source) - {module}):
            try:
                theirs = layer_of(imported)
            except KeyError:
                found.append(f"{module} imports {imported}, which is in no layer")
                continue
            if theirs > own:
                found.append(
                    f"{module} ({LAYERS[own][0]}) imports {imported} ({LAYERS[theirs][0]})"
                )
    return found


def io_imports(files: dict[Path, str]) -> list[str]:
    """Each import of an I/O library by a module of the model or the logic."""
    pure = LAYERS[0][1] | LAYERS[1][1]
    found: list[str] = []
    for path, source in sorted(files.items()):
        module = _module_of(path)
        if module not in pure:
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


def test_model_and_logic_do_no_io() -> None:
    files = _sources()
    assert io_imports(files) == []
    files[PACKAGE / "tei_api.py"] += "\nimport aiohttp\n"
    assert io_imports(files) == ["tei_api imports aiohttp"]


def test_an_import_up_the_layers_is_found() -> None:
    files = _sources()
    batcher = PACKAGE / "batcher.py"
    files[batcher] += "\nfrom .upstream import Upstream\n"
    files[PACKAGE / "tei_api.py"] += "\ndef late():\n    from embedding_proxy import app\n"
    files[PACKAGE / "new_part.py"] = "from . import errors\n"
    assert violations(files) == [
        "batcher (logic) imports upstream (io)",
        "new_part: in no layer",
        "tei_api (logic) imports app (handlers)",
    ]


def test_every_layer_is_there_and_modules_stay_small() -> None:
    modules = {_module_of(p) for p in PACKAGE.rglob("*.py")}
    placed = set().union(*(m for _, m in LAYERS))
    assert placed == modules  # no layer names a module that is gone
    long = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if len(p.read_text().splitlines()) > MAX_LINES
    }
    assert long == set(), f"over {MAX_LINES} lines: {sorted(long)}"
