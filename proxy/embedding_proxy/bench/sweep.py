"""`embedding-proxy bench --sweep concurrency=1,4,16,64,256`: the same benchmark at each value,
every target measured at every point, the curves as CSV (and PNG and SVG with `--plot`)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any

from . import report
from .procs import Service, get_json
from .procs import start_simulator as start_sim
from .run import run_target, settings_of

# What a sweep may vary: the bench's own flags that take a positive integer, and the proxy's
# max_concurrency (a number, or auto) and workers.
SWEEPABLE = ("concurrency", "inputs_per_request", "requests", "max_concurrency", "workers")
CSV_COLUMNS = (
    "target",
    "requests",
    "ok",
    "failed",
    "inputs_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "proxy_cpu_us_per_request",
    "proxy_concurrency_limit",
    "proxy_inputs_per_call",
)


def parse_sweep(value: str) -> tuple[str, list[int | str]]:
    """`NAME=v1,v2,...` -> (NAME, values), NAME one of SWEEPABLE (dashes or underscores);
    max-concurrency also takes `auto`."""
    name, sep, values = value.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        names = ", ".join(n.replace("_", "-") for n in SWEEPABLE)
        raise argparse.ArgumentTypeError(f"--sweep takes NAME=V1,V2,... with NAME one of {names}")
    words = [v.strip() for v in values.split(",") if v.strip()]
    auto = name == "max_concurrency" and "auto" in words
    try:
        numbers = [int(v) for v in words if not (auto and v == "auto")]
    except ValueError:
        what = "integers or auto" if name == "max_concurrency" else "integers"
        raise argparse.ArgumentTypeError(f"--sweep values must be {what}, got {values!r}") from None
    if not words or (numbers and min(numbers) < 1):
        raise argparse.ArgumentTypeError("--sweep needs at least one value, each at least 1")
    return name, [v if v == "auto" else int(v) for v in words]


def csv_path(args: argparse.Namespace) -> Path:
    if args.csv:
        return Path(args.csv)
    if args.plot:
        return Path(args.plot).with_suffix(".csv")
    return Path("bench-sweep.csv")


def main(args: argparse.Namespace) -> int:
    name, values = args.sweep
    if args.connections:
        print("embedding-proxy bench: --sweep and --connections do not mix", file=sys.stderr)
        return 2
    if args.plot:
        # Before minutes of measuring, not after.
        try:
            from . import plot
        except ImportError as e:
            print(f"embedding-proxy bench: --plot needs matplotlib ({e}); install "
                  "embedding-proxy[plot]", file=sys.stderr)  # fmt: skip
            return 2
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        simulator: Service | None = None
        upstream = args.upstream
        if upstream is None:
            simulator = start_sim(shlex.split(args.simulator_args))
            stack.callback(simulator.stop)
            upstream = simulator.url
        upstream = upstream.rstrip("/")
        info = get_json(upstream + "/info")
        run_id = secrets.token_hex(3)
        settings: dict[str, Any] = {}
        for value in values:
            point = copy.copy(args)
            if name == "max_concurrency":
                point.proxy_args = f"{args.proxy_args} --max-concurrency {value}"
            else:
                setattr(point, name, value)
            settings = settings_of(point, upstream, info)
            for target in settings["targets"]:
                print(f"bench: {name}={value} {target} ...", file=sys.stderr, flush=True)
                # Each point and target its own texts, so no answer is a cache hit.
                result = run_target(settings, target, upstream, simulator, f"{run_id}{value}")
                rows.append({"sweep": name, "value": value, **result})
    path = csv_path(args)
    write_csv(path, rows)
    print(summary(name, settings, rows))
    print(f"wrote {path}")
    if args.plot:
        from . import plot

        for written in plot.curves(rows, name, settings, Path(args.plot)):
            print(f"wrote {written}")
    return 0 if all(r["failed"] == 0 and not r.get("answers_wrong") for r in rows) else 1


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([rows[0]["sweep"] if rows else "value", *CSV_COLUMNS])
        for r in rows:
            cells = [r.get(c) for c in CSV_COLUMNS]
            out.writerow([r["value"], *("" if c is None else _number(c) for c in cells)])


def read_csv(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """The rows `write_csv` wrote (numbers as floats); the swept name."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        name = (reader.fieldnames or ["value"])[0]
        rows = []
        for r in reader:
            value = r[name]
            row: dict[str, Any] = {
                "value": int(value) if value.isdigit() else value,
                "target": r["target"],
            }
            for c in CSV_COLUMNS[1:]:
                row[c] = float(r[c]) if r[c] else None
            rows.append(row)
    return name, rows


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary(name: str, settings: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = settings.get("machine") or report.machine()
    headers = [name.replace("_", "-"), "target", "inputs/s", "p50 ms", "p99 ms", "failed"]
    cells = [
        [
            str(r["value"]),
            r["target"],
            f"{r['inputs_per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["failed"]),
        ]
        for r in rows
    ]
    if name == "max_concurrency":
        # What each proxy ran at by the end: the setting, or where auto had got to.
        headers.append("limit at end")
        for row, r in zip(cells, rows, strict=True):
            limit = r.get("proxy_concurrency_limit")
            row.append("-" if limit is None else str(int(limit)))
    lines = [
        f"embedding-proxy bench --sweep {name}: {settings.get('tokens')} tokens/input, "
        f"{settings.get('inputs_per_request')} input(s)/request",
        f"machine: {report.machine_words(m)}; load generator, proxy and a local upstream share "
        "them",
        "",
        report.markdown_table(headers, cells),
    ]
    ratio_lines = []
    for value in dict.fromkeys(r["value"] for r in rows):
        rat = report.ratios([r for r in rows if r["value"] == value])
        if "proxy/direct" in rat or "proxy/ideal" in rat:
            parts = [f"{k} {v:.2f}" for k, v in rat.items() if k.startswith("proxy/")]
            ratio_lines.append(f"{name}={value}: " + ", ".join(parts))
    if ratio_lines:
        lines += ["", *ratio_lines]
    return "\n".join(lines)
