"""`batching.max_concurrency: auto` in a real proxy before the simulator: the limit it exports
moves off its start as it measures, stays within TEI's permits, and every caller still gets its
own vector. (How well it tunes is measured in docs/benchmarks.md, not asserted here.)"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
from tests.helpers.calls import close, embed, metrics
from tests.helpers.processes import Process, Starter

from embedding_proxy.simulator.vectors import embedding

GAUGE = "embedding_proxy_upstream_concurrency_limit"


async def load_until(
    http: aiohttp.ClientSession, proxy: Process, done: asyncio.Event, callers: int = 48
) -> int:
    """Single-input callers, each checking its answer, until `done`; the answers checked."""
    numbers = itertools.count()

    async def caller() -> int:
        checked = 0
        while not done.is_set():
            text = f"auto caller text {next(numbers)}"
            status, body = await embed(http, proxy.url, {"inputs": text})
            assert status == 200, body
            assert isinstance(body, list) and close(body[0], embedding(text))
            checked += 1
        return checked

    return sum(await asyncio.gather(*(caller() for _ in range(callers))))


async def watch(
    http: aiohttp.ClientSession, proxy: Process, until: float, stop_when_not: float | None
) -> set[float]:
    """The gauge's values, polled until `until` (loop time) or until it differs from
    `stop_when_not`."""
    loop = asyncio.get_running_loop()
    seen: set[float] = set()
    while loop.time() < until:
        value = (await metrics(http, proxy.url))[GAUGE]
        seen.add(value)
        if stop_when_not is not None and value != stop_when_not:
            break
        await asyncio.sleep(0.1)
    return seen


async def test_auto_moves_the_limit_and_answers_stay_right(
    http: aiohttp.ClientSession, start_simulator: Starter, start_proxy: Starter
) -> None:
    sim = start_simulator("--no-internal-batching", "--base-ms", "2")
    proxy = start_proxy(sim.url, ready_path="/ready")
    assert (await metrics(http, proxy.url))[GAUGE] == 4  # where auto starts
    done = asyncio.Event()
    load = asyncio.create_task(load_until(http, proxy, done))
    try:
        seen = await watch(http, proxy, asyncio.get_running_loop().time() + 120, 4)
    finally:
        done.set()
        checked = await load
    assert seen - {4}, "the limit never left its start value"
    assert checked > 0


async def test_auto_stays_within_teis_permits_and_a_number_is_fixed(
    http: aiohttp.ClientSession, start_simulator: Starter, start_proxy: Starter
) -> None:
    sim = start_simulator("--max-concurrent-requests", "3", "--base-ms", "2")
    auto = start_proxy(sim.url, ready_path="/ready")
    fixed = start_proxy(sim.url, "--max-concurrency", "5", ready_path="/ready")
    assert (await metrics(http, fixed.url))[GAUGE] == 5
    done = asyncio.Event()
    load = asyncio.create_task(load_until(http, auto, done, callers=16))
    try:
        seen = await watch(http, auto, asyncio.get_running_loop().time() + 5, None)
    finally:
        done.set()
        checked = await load
    assert max(seen) <= 3 and checked > 0
