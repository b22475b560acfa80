"""The sweep's curves: throughput and p50/p99 latency against the swept value, proxy, direct and
ideal on the same axes, as PNG and SVG. Needs matplotlib (`embedding-proxy[plot]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

STYLE = {
    "proxy": {"color": "#d62728", "marker": "o"},
    "direct": {"color": "#1f77b4", "marker": "s"},
    "ideal": {"color": "#2ca02c", "marker": "^", "linestyle": ":"},
}


def curves(
    rows: list[dict[str, Any]], name: str, settings: dict[str, Any], path: Path
) -> list[Path]:
    """Draw `rows` (one per swept value and target) to `path` (PNG) and beside it as SVG."""
    label = name.replace("_", " ")
    # Text stays text in the SVG (searchable, and checked by the tests).
    plt.rcParams["svg.fonttype"] = "none"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    for target in targets:
        # A value that is not a number (max-concurrency's auto): a level across the plot.
        for r in rows:
            if r["target"] == target and not isinstance(r["value"], int):
                level = dict(color=STYLE.get(target, {}).get("color"), linestyle="-.")
                left.axhline(r["inputs_per_s"], label=f"{target} {r['value']}", **level)
        mine = sorted(
            (r for r in rows if r["target"] == target and isinstance(r["value"], int)),
            key=lambda r: r["value"],
        )
        xs = [r["value"] for r in mine]
        style = STYLE.get(target, {})
        left.plot(xs, [r["inputs_per_s"] for r in mine], label=target, **style)
        p50 = dict(style, linestyle="-")
        p99 = dict(style, linestyle="--", marker=style.get("marker"), markerfacecolor="none")
        right.plot(xs, [r["p50_ms"] for r in mine], label=f"{target} p50", **p50)
        right.plot(xs, [r["p99_ms"] for r in mine], label=f"{target} p99", **p99)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        values = sorted({r["value"] for r in rows if isinstance(r["value"], int)})
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(label)
        ax.grid(True, which="major", alpha=0.3)
    left.set_ylabel("inputs/s")
    left.set_ylim(bottom=0)
    left.set_title("throughput")
    left.legend()
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # Between the powers of ten, label only 2 and 5 (all of them crowd the axis).
    right.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if _lead(v) in (2, 5) else "")
    )
    right.set_ylabel("latency per request, ms")
    right.set_title("latency p50 (solid) and p99 (dashed)")
    right.legend(fontsize="small", ncol=2)
    m = settings.get("machine") or {}
    fig.suptitle(
        f"embedding-proxy bench: {settings.get('tokens')} tokens/input, "
        f"{settings.get('inputs_per_request')} input(s)/request; ideal: "
        + ("the best of a grid around " if settings.get("ideal_grid") else "")
        + f"batches of {settings.get('ideal_batch_size')}, {settings.get('ideal_concurrency')} "
        f"at once\n{m.get('cpus')} CPUs ({m.get('cpu_model')}), reference speed "
        f"{m.get('reference_mips')} M Python loops/s; load generator, proxy and simulator "
        "sharing them",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    svg = path.with_suffix(".svg")
    fig.savefig(png, dpi=110)
    fig.savefig(svg)
    plt.close(fig)
    return [png, svg]


def _lead(value: float) -> int:
    """The leading digit of a positive number (2 for 0.2, 20, 200)."""
    return int(f"{value:e}"[0]) if value > 0 else 0
