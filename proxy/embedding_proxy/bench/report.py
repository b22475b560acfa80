"""The benchmark's table, ratios and machine description."""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import psutil

REFERENCE_LOOPS = 200_000  # of the reference loop: about 10 ms a try

COLUMNS = [
    ("target", "{}"),
    ("requests", "{:,}"),
    ("ok", "{:,}"),
    ("failed", "{:,}"),
    ("inputs/s", "{:,.0f}"),
    ("p50 ms", "{:.2f}"),
    ("p95 ms", "{:.2f}"),
    ("p99 ms", "{:.2f}"),
    ("proxy CPU µs/req", "{:.0f}"),
    ("proxy peak RSS MB", "{:.1f}"),
]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "reference_mips": reference_speed(),
    }


def reference_speed() -> float:
    """Millions of iterations a second of a fixed pure-Python loop, the best of five: how fast
    one core of this machine runs Python, so that tables from different machines (or a machine
    busier one day than another) can be set side by side."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        x = 0
        for i in range(REFERENCE_LOOPS):
            x += i & 7
        best = min(best, time.perf_counter() - started)
    return round(REFERENCE_LOOPS / best / 1e6, 1)


def machine_words(m: dict[str, Any]) -> str:
    """The machine as every table states it: CPUs and their model, memory, reference speed."""
    speed = m.get("reference_mips")
    return f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB" + (
        f", reference speed {speed} M Python loops/s" if speed is not None else ""
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cells(row: dict[str, Any]) -> list[str]:
    values = [
        row["target"],
        row["requests"],
        row["ok"],
        row["failed"],
        row["inputs_per_s"],
        row["p50_ms"],
        row["p95_ms"],
        row["p99_ms"],
        row.get("proxy_cpu_us_per_request"),
        row.get("proxy_peak_rss_mb"),
    ]
    formats = [fmt for _, fmt in COLUMNS]
    return ["-" if v is None else f.format(v) for v, f in zip(values, formats, strict=True)]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    by = {r["target"]: r for r in results}
    out: dict[str, float] = {}
    proxy = by.get("proxy")
    if proxy is None:
        return out
    for other in ("direct", "ideal"):
        base = by.get(other)
        if base is not None and base["inputs_per_s"] > 0:
            out[f"proxy/{other}"] = proxy["inputs_per_s"] / base["inputs_per_s"]
    fixed = by.get("ideal", {}).get("fixed")
    if fixed and fixed["inputs_per_s"] > 0:  # the one shape `ideal` was before it was a grid
        out["proxy/ideal fixed"] = proxy["inputs_per_s"] / fixed["inputs_per_s"]
    if "direct" in by:
        out["p50 proxy-direct ms"] = proxy["p50_ms"] - by["direct"]["p50_ms"]
    return out


def cpu_table(results: list[dict[str, Any]]) -> str:
    """Where the machine's CPU went during each measured run: the processes share the cores."""
    headers = ["target", "wall s", "load generator CPU s", "proxy CPU s", "upstream CPU s"]
    rows = []
    for r in results:
        cells = [r["wall_s"], r["loadgen_cpu_s"], r.get("proxy_cpu_s"), r.get("upstream_cpu_s")]
        rows.append([r["target"], *("-" if v is None else f"{v:.2f}" for v in cells)])
    return markdown_table(headers, rows)


def _loop_line(settings: dict[str, Any]) -> list[str]:
    if not settings.get("rate"):
        return []
    return [
        f"open loop: {settings['rate']:g} requests/s for {settings['duration_s']:g} s "
        "(latency counted from when each request was due)"
    ]


def text_report(settings: dict[str, Any], results: list[dict[str, Any]]) -> str:
    m = settings["machine"]
    lines = [
        f"embedding-proxy bench: {settings['tokens']} tokens/input, "
        f"{settings['inputs_per_request']} input(s)/request, concurrency "
        f"{settings['concurrency']}; ideal: "
        + ("the best of a grid around " if settings.get("ideal_grid") else "")
        + f"batches of {settings['ideal_batch_size']} at concurrency "
        f"{settings['ideal_concurrency']}",
        *_loop_line(settings),
        f"upstream: {settings['upstream']}"
        + (" (through the proxy)" if settings["upstream"] == settings["proxy_url"] else ""),
        *([f"proxy: {settings['proxy_url']} (already running)"] if settings["proxy_url"] else []),
        *([f"proxy: {settings['workers']} worker process(es)"] if settings.get("workers") else []),
        f"machine: {machine_words(m)}; load generator, proxy and a local upstream share them",
        "",
        markdown_table([c for c, _ in COLUMNS], [_cells(r) for r in results]),
        "",
        cpu_table(results),
    ]
    rat = ratios(results)
    if rat:
        lines.append("")
        lines.append("  ".join(f"{k}: {v:.2f}" for k, v in rat.items()))
    for r in results:
        if r.get("proxy_inputs_per_call"):
            lines.append(
                f"{r['target']}: {r['proxy_inputs_per_call']:.1f} inputs per upstream call"
            )
        if "ideal_grid" in r:
            lines.append(ideal_line(r))
        if "answers_checked" in r:
            lines.append(
                f"{r['target']}: {r['answers_checked'] - r['answers_wrong']} of "
                f"{r['answers_checked']} answers checked equal the upstream's own"
            )
        if r["failed"]:
            lines.append(f"{r['target']}: failures {r['statuses']}; first: {r['first_error']}")
    return "\n".join(lines)


def ideal_line(result: dict[str, Any]) -> str:
    """Which shape `ideal` was, of the grid measured, and the fixed shape's figure."""
    fixed = result["fixed"]
    shapes = ", ".join(
        f"{p['batch_size']}x{p['concurrency']} {p['inputs_per_s']:,.0f}"
        for p in result["ideal_grid"]
    )
    return (
        f"ideal: the best of {len(result['ideal_grid'])} shapes (batch x calls, inputs/s: "
        f"{shapes}): batches of {result['ideal_batch_size']}, {result['ideal_concurrency']} at "
        f"once; the fixed shape {fixed['batch_size']}x{fixed['concurrency']}: "
        f"{fixed['inputs_per_s']:,.0f} inputs/s"
    )
