"""`embedding-proxy bench` end to end: a short run of the real command, simulator started by it."""

from __future__ import annotations

import json
import subprocess

import pytest
from tests.helpers.processes import PYTHON

TARGETS = ("proxy", "direct", "ideal")


def run_bench(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "embedding_proxy.cli", "bench", *flags],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_bench_json_has_a_row_per_target(client: str) -> None:
    done = run_bench(
        "--requests", "120", "--concurrency", "8", "--tokens", "5", "--warmup", "10",
        "--client", client, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {r["target"]: r for r in report["results"]}
    assert list(rows) == list(TARGETS)
    for target in ("proxy", "direct"):
        assert rows[target]["requests"] == rows[target]["ok"] == 120
    # ideal: the same 120 inputs in full batches of the simulator's max_client_batch_size (32)
    assert rows["ideal"]["requests"] == rows["ideal"]["ok"] == 4
    for row in rows.values():
        assert row["failed"] == 0
        assert row["inputs_ok"] == 120
        assert row["inputs_per_s"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert rows["proxy"]["proxy_cpu_us_per_request"] > 0
    assert rows["proxy"]["proxy_peak_rss_mb"] > 0
    assert {"proxy/direct", "proxy/ideal"} <= set(report["ratios"])


def test_bench_table_with_batches_of_several_inputs() -> None:
    done = run_bench(
        "--requests", "40", "--concurrency", "4", "--inputs-per-request", "3",
        "--targets", "proxy,direct", "--warmup", "0",
        "--proxy-args", "--max-batch-size 16 --max-wait-ms 1",
        "--simulator-args=--no-internal-batching",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells for cells in _first_table(done.stdout) if cells[0] in TARGETS}
    assert set(rows) == {"proxy", "direct"}
    for cells in rows.values():
        assert cells[1:4] == ["40", "40", "0"]  # requests, ok, failed
        assert float(cells[4].replace(",", "")) > 0  # inputs/s
    assert "proxy/direct:" in done.stdout


def test_bench_refuses_an_unknown_target() -> None:
    done = run_bench("--targets", "proxy,nonsense")
    assert done.returncode == 2
    assert "targets are proxy, direct, ideal" in done.stderr


def _first_table(text: str) -> list[list[str]]:
    """The cells of the first markdown table (the results; the CPU table follows it)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows
