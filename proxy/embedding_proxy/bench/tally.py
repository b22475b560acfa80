"""What a load run counts: answers right and wrong, latencies, and the summary the bench reads."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import rawhttp


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    inputs_ok: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def fail(self, status: str, detail: str) -> None:
        self.failed += 1
        self.statuses[status] += 1
        if not self.first_error:
            self.first_error = f"{status}: {detail[:200]}"


Work = Iterator[tuple[bytes, int]]


def record(tally: Tally, status: int, data: bytes, size: int) -> None:
    # A vector list of n rows has n + 1 opening brackets: [[...],[...]].
    if status == 200 and data.count(b"[") == size + 1:
        tally.ok += 1
        tally.inputs_ok += size
    elif status == 200:
        tally.fail("wrong-count", data[:200].decode(errors="replace"))
    else:
        tally.fail(str(status), rawhttp.error_text(data))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(tally: Tally, wall: float, cpu: float) -> dict[str, Any]:
    lat = sorted(tally.latencies)
    ms = [percentile(lat, q) * 1000 for q in (50, 95, 99)]
    return {
        "requests": tally.ok + tally.failed,
        "ok": tally.ok,
        "failed": tally.failed,
        "inputs_ok": tally.inputs_ok,
        "wall_s": wall,
        "inputs_per_s": tally.inputs_ok / wall if wall > 0 else 0.0,
        "p50_ms": ms[0],
        "p95_ms": ms[1],
        "p99_ms": ms[2],
        "mean_ms": (sum(lat) / len(lat) * 1000) if lat else 0.0,
        "statuses": dict(tally.statuses),
        "first_error": tally.first_error,
        "loadgen_cpu_s": cpu,
    }
