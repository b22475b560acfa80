"""scripts/gpu-bench's plumbing, on the CPU at a tiny size: real simulator (torch backend), real
bench runs, the table it writes, and its time bound."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.tools import require_torch

from embedding_proxy.bench.gpu_bench import proxy_has_workers

ROOT = Path(__file__).resolve().parents[2]


def gpu_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "gpu-bench"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_quick_run_writes_a_full_table(tmp_path: Path) -> None:
    require_torch()
    out = tmp_path / "table.md"
    done = gpu_bench(str(out), "--quick", "--concurrency", "2", timeout=600)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "GPU: none" in text and "torch 2." in text
    assert "encoder alone at 8 tokens/input" in text and "inputs/s at batch 32" in text
    table = rows(text)
    cells = {(r[1], r[2], r[3]) for r in table}
    workers = ["1", "2"] if proxy_has_workers() else ["1"]
    expected = {("ideal", "-", "-"), ("direct", "2", "-")} | {("proxy", "2", w) for w in workers}
    assert cells == expected, text
    for r in table:
        assert r[0] == "tiny" and float(r[4].replace(",", "")) > 0, r
        assert int(r[-1]) == 0 and int(r[-2].replace(",", "")) > 0, r  # failed, ok
    if workers == ["1"]:
        assert "skipped: 2 worker(s), because this proxy's `serve` has no `--workers`" in text


def test_the_run_stops_at_its_budget(tmp_path: Path) -> None:
    require_torch()
    done = gpu_bench("--quick", "--budget-s", "0.1", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "out of time" in done.stdout and "(no cell ran)" in done.stdout
