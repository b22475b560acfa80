"""`embedding-proxy bench --sweep ... --plot`: a tiny real sweep (the command starts the
simulator and a proxy per point), and the CSV, PNG and SVG it writes, consistent with each other
and with what it printed."""

from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tests.helpers.processes import PYTHON

from embedding_proxy.bench.sweep import read_csv

pytest.importorskip("matplotlib", reason="matplotlib is in the test extras: pip install -e .[test]")


def bench(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "embedding_proxy.cli", "bench", *flags],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_sweep_writes_consistent_csv_png_and_svg(tmp_path: Path) -> None:
    plot = tmp_path / "out" / "curves.png"
    done = bench(
        "--sweep", "concurrency=1,3", "--requests", "12", "--warmup", "0", "--tokens", "5",
        "--plot", str(plot),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    name, rows = read_csv(plot.with_suffix(".csv"))
    assert name == "concurrency"
    assert [(r["value"], r["target"]) for r in rows] == [
        (v, t) for v in (1, 3) for t in ("proxy", "direct", "ideal")
    ]
    for r in rows:
        assert r["failed"] == 0 and r["ok"] == r["requests"] > 0
        assert r["inputs_per_s"] > 0
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        # The printed table says the same as the CSV.
        line = f"| {r['value']:>11} | {r['target']:>6} | {r['inputs_per_s']:>8,.0f} |"
        assert line in done.stdout, line
    assert "concurrency=3: proxy/direct" in done.stdout
    assert "CPUs (" in done.stdout  # the machine is named

    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 300

    svg = ET.parse(plot.with_suffix(".svg")).getroot()
    assert svg.tag.endswith("svg")
    texts = {"".join(t.itertext()).strip() for t in svg.iter() if t.tag.endswith("text")}
    for label in ("throughput", "concurrency", "inputs/s", "proxy", "direct", "ideal"):
        assert label in texts, label
    assert {"proxy p50", "proxy p99", "direct p99", "ideal p50"} <= texts
    assert {"1", "3"} <= texts  # the swept values are the ticks


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sweep", "colour=1,2"], "NAME one of"),
        (["--sweep", "concurrency=0,4"], "at least 1"),
        (["--sweep", "concurrency=a"], "integers"),
        (["--plot", "x.png"], "go with --sweep"),
    ],
)
def test_bad_sweep_flags_are_refused_clearly(flags: list[str], message: str) -> None:
    done = bench(*flags)
    assert done.returncode == 2
    assert message in done.stderr
