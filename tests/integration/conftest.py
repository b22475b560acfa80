"""Fixtures that start real processes on loopback: the TEI simulator and the proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from tests.helpers.processes import (
    PYTHON,
    Process,
    Starter,
    free_port,
    proxy_args,
    start_process,
)


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Starter]:
    started: list[Process] = []

    def start(*flags: str, port: int | None = None) -> Process:
        port = port or free_port()
        args = [
            PYTHON,
            "-m",
            "embedding_proxy.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flags,
        ]
        process = start_process(args, port, tmp_path / f"simulator-{port}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Starter]:
    started: list[Process] = []

    def start(
        upstream: str, *flags: str, env: dict[str, str] | None = None, ready_path: str = "/health"
    ) -> Process:
        port = free_port()
        process = start_process(
            proxy_args(upstream, port, *flags),
            port,
            tmp_path / f"proxy-{port}.log",
            env=env,
            ready_path=ready_path,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def simulator(start_simulator: Starter) -> Process:
    return start_simulator()


@pytest.fixture
def proxy(start_proxy: Starter, simulator: Process) -> Process:
    return start_proxy(simulator.url, ready_path="/ready")


@pytest.fixture
async def http() -> Iterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
