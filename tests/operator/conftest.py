"""Fixtures: the emulated API server, the test's client, and the operator as its own process."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import kmock
import pytest
import pytest_asyncio
from harness import Api, Cluster, start_operator, stop_process, write_kubeconfig
from installed import ChartCluster, TestApi


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        yield emulator


@pytest_asyncio.fixture
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    client = Api(str(cluster.url))
    yield client
    await client.close()


@pytest_asyncio.fixture
async def chart_cluster() -> AsyncIterator[ChartCluster]:
    """The emulator, also serving kopf's peering resources (as the chart installs them)."""
    async with ChartCluster() as emulator, kmock.Server(emulator):
        yield emulator


@pytest_asyncio.fixture
async def chart_api(chart_cluster: ChartCluster) -> AsyncIterator[TestApi]:
    client = TestApi(str(chart_cluster.url))
    yield client
    await client.close()


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start the operator against the emulator; its log is printed when a test fails."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url))

    def start(**env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"operator-{len(started)}.log"
        proc = start_operator(kubeconfig, log, **env)
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        code = stop_process(proc)
        output = log.read_text(errors="replace")
        print(f"---- operator log ({log.name}, exit {code}) ----\n{output[-20000:]}")
        assert "Traceback" not in output, "the operator logged an unhandled exception"
