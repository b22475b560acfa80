"""Ordinary failures end with one line (what, why, what to do) and exit code 1 or 2, never a
traceback: the commands run as real processes, against a port another program holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.processes import PYTHON, free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on which another program (this test) listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def fails_with_one_line(args: list[str], code: int, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Unclosed" not in result.stderr
    return lines[0]


def cli(*args: str) -> list[str]:
    return [PYTHON, "-m", "embedding_proxy.cli", *args]


def test_serve_on_a_busy_port(busy_port: int) -> None:
    line = fails_with_one_line(
        cli("serve", "--host", "127.0.0.1", "--port", str(busy_port), "--upstream", "http://127.0.0.1:9"),
        1,
    )  # fmt: skip
    assert f"cannot listen on 127.0.0.1:{busy_port}: address already in use" in line
    assert "--port" in line


def test_serve_with_a_busy_metrics_port(busy_port: int) -> None:
    line = fails_with_one_line(
        cli("serve", "--host", "127.0.0.1", "--port", str(free_port()),
            "--metrics-port", str(busy_port), "--upstream", "http://127.0.0.1:9"),
        1,
    )  # fmt: skip
    assert f"127.0.0.1:{busy_port}: address already in use" in line
    assert "--metrics-port" in line


@pytest.mark.parametrize(
    "command",
    [
        ["simulate-tei"],
        ["-m", "embedding_proxy.simulator"],
    ],
    ids=["simulate-tei", "python -m simulator"],
)
def test_simulator_on_a_busy_port(busy_port: int, command: list[str]) -> None:
    args = [PYTHON, *command] if command[0] == "-m" else cli(*command)
    line = fails_with_one_line([*args, "--host", "127.0.0.1", "--port", str(busy_port)], 1)
    assert f"cannot listen on 127.0.0.1:{busy_port}: address already in use" in line


def test_demo_on_a_busy_port(busy_port: int) -> None:
    line = fails_with_one_line(cli("demo", "--port", str(busy_port)), 1)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line


def test_demo_never_takes_a_busy_simulator_port(busy_port: int) -> None:
    line = fails_with_one_line(cli("demo", "--simulator-port", str(busy_port)), 1)
    assert f"simulator on port {busy_port}" in line


def test_demo_warns_when_its_upstream_does_not_answer(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cli("demo", "--port", str(port), "--upstream", f"http://127.0.0.1:{dead}"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while "Ctrl-C" not in log.read_text() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert f"warning: http://127.0.0.1:{dead} does not answer (connection refused)" in text.lower()
    assert f"in front of http://127.0.0.1:{dead} (not answering yet)" in text
    assert "simulator" not in text.split("Try it")[0]


def test_bench_against_a_dead_upstream() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = fails_with_one_line(cli("bench", "--upstream", dead, "--requests", "5"), 1)
    assert f"cannot read {dead}/info: connection refused" in line.lower()
    assert "--upstream" in line


def test_bench_with_a_bad_proxy_flag() -> None:
    result = subprocess.run(
        cli("bench", "--proxy-args=--bogus", "--requests", "5", "--targets", "proxy"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    # Progress lines go first; the failure is the last line, and the only other kind.
    last = result.stderr.strip().splitlines()[-1]
    assert "the proxy did not start" in last
    assert "--bogus" in last
    assert "check --proxy-args" in last
    assert "Traceback" not in result.stderr


def test_operator_without_a_cluster(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(tmp_path)
    line = fails_with_one_line([str(BIN / "embedding-proxy-operator"), "--standalone"], 1, env)
    assert "no Kubernetes cluster to talk to" in line
    env["KUBECONFIG"] = str(tmp_path / "missing")
    line = fails_with_one_line([str(BIN / "embedding-proxy-operator"), "--standalone"], 1, env)
    assert "KUBECONFIG names no file that exists" in line
