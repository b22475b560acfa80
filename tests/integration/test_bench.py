"""`embedding-proxy bench` end to end: a short run of the real command, simulator started by it."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from tests.helpers.processes import PYTHON, Process

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
    # ideal: the same 120 inputs, in the best of a grid of shapes around full batches of the
    # simulator's max_client_batch_size (32) at the proxy's calls at once (4 for auto)
    ideal = rows["ideal"]
    shapes = [(p["batch_size"], p["concurrency"]) for p in ideal["ideal_grid"]]
    assert shapes == [(b, c) for b in (32, 16, 8) for c in (4, 8, 16)]
    best = max(ideal["ideal_grid"], key=lambda p: p["inputs_per_s"])
    assert ideal["inputs_per_s"] == best["inputs_per_s"]
    assert (ideal["ideal_batch_size"], ideal["ideal_concurrency"]) == (
        best["batch_size"],
        best["concurrency"],
    )
    assert ideal["requests"] == ideal["ok"] == -(-120 // ideal["ideal_batch_size"])
    assert ideal["fixed"]["batch_size"] == 32 and ideal["fixed"]["concurrency"] == 4
    assert ideal["fixed"]["inputs_per_s"] == ideal["ideal_grid"][0]["inputs_per_s"]
    assert ideal["grid_failed"] == 0
    # The grid's best is at least the fixed shape: proxy/ideal is never above proxy/ideal fixed.
    assert report["ratios"]["proxy/ideal"] <= report["ratios"]["proxy/ideal fixed"]
    for row in rows.values():
        assert row["failed"] == 0
        assert row["inputs_ok"] == 120
        assert row["inputs_per_s"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert rows["proxy"]["proxy_cpu_us_per_request"] > 0
    assert rows["proxy"]["proxy_peak_rss_mb"] > 0
    assert {"proxy/direct", "proxy/ideal"} <= set(report["ratios"])


def test_bench_runs_the_proxy_with_worker_processes() -> None:
    done = run_bench(
        "--requests", "200", "--concurrency", "16", "--tokens", "5", "--warmup", "10",
        "--targets", "proxy", "--workers", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["settings"]["workers"] == "2"
    (row,) = report["results"]
    assert row["requests"] == row["ok"] == 200
    # Each caller's answer equal to the upstream's own for the same inputs, in order.
    assert row["answers_checked"] > 0 and row["answers_wrong"] == 0
    # Every input counted once in the pod's metrics, whichever worker took it.
    assert row["proxy_inputs_per_call"] >= 1
    assert row["proxy_cpu_us_per_request"] > 0


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


def test_bench_ideal_of_one_shape_when_given() -> None:
    """`--ideal-batch-size` or `--ideal-concurrency` pins `ideal` to that one shape: no grid."""
    done = run_bench(
        "--requests", "60", "--concurrency", "8", "--tokens", "5", "--warmup", "5",
        "--targets", "proxy,ideal", "--ideal-batch-size", "10", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    ideal = {r["target"]: r for r in report["results"]}["ideal"]
    assert "ideal_grid" not in ideal and "fixed" not in ideal
    assert ideal["requests"] == ideal["ok"] == 6
    assert report["settings"]["ideal_grid"] is False
    assert "proxy/ideal fixed" not in report["ratios"]


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


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_bench_measures_a_running_proxy_open_loop(
    client: str, proxy: Process, simulator: Process
) -> None:
    done = run_bench(
        "--proxy", proxy.url, "--upstream", simulator.url, "--targets", "proxy,direct",
        "--rate", "60", "--duration", "1", "--tokens", "5", "--warmup", "5",
        "--client", client, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["settings"]["proxy_url"] == proxy.url
    assert report["settings"]["rate"] == 60
    rows = {r["target"]: r for r in report["results"]}
    for target in ("proxy", "direct"):
        assert rows[target]["requests"] == rows[target]["ok"] == 60
    # The running proxy, not one the bench started, served them: it is on this machine, so its
    # CPU was measured; and its own counter saw them.
    assert rows["proxy"]["proxy_cpu_s"] >= 0
    with urllib.request.urlopen(proxy.url + "/metrics") as resp:
        text = resp.read().decode()
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('embedding_proxy_requests_total{route="/embed",status="200"}')
    )
    assert served >= 60 + 5


def test_bench_with_only_a_running_proxy_measures_only_it(proxy: Process) -> None:
    done = run_bench("--proxy", proxy.url, "--requests", "20", "--concurrency", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["target"] for r in json.loads(done.stdout)["results"]] == ["proxy"]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            ("--proxy", "http://127.0.0.1:9", "--proxy-args=--max-wait-ms 1"),
            "--proxy and --proxy-args",
        ),
        (("--proxy", "http://127.0.0.1:9", "--targets", "proxy,ideal"), "need the upstream"),
        (("--duration", "3"), "add --rate"),
    ],
)
def test_bench_flags_that_do_not_go_together(flags: tuple[str, ...], needle: str) -> None:
    done = run_bench(*flags)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr


def test_two_populations_runs_idle_no_lanes_and_lanes() -> None:
    done = run_bench(
        "--two-populations", "--duration", "1", "--requests", "200", "--tokens", "5",
        "--interactive-callers", "4", "--batch-clients", "2", "--batch-queued", "128",
        "--batch-request-inputs", "16", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    runs = {r["run"]: r for r in report["results"]}
    assert list(runs) == ["idle", "no lanes", "lanes"]
    assert runs["idle"]["batch"] == []
    for run in runs.values():
        assert run["failed"] == 0
        assert run["interactive"]["ok"] > 0
        assert run["upstream_call_ms"] > 0
    for name in ("no lanes", "lanes"):
        assert [c["name"] for c in runs[name]["batch"]] == ["batch-0", "batch-1"]
        assert all(c["ok"] > 0 for c in runs[name]["batch"])
        assert sum(runs[name]["client_shares"]) == pytest.approx(1)
    assert report["settings"]["ideal_inputs_per_s"] > 0
    assert len(report["targets"]) == 4  # the four, each measured
