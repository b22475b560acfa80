"""The load generator, run as its own process (`python -m embedding_proxy.bench.load`).

A separate process so that its CPU is its own (and measured) and it does not share an event loop
with anything it measures. Protocol on stdin/stdout, one JSON line each way:

    parent -> spec            child -> {"phase": "warm"}   (warm-up done, idle)
    parent -> {"go": true}    child -> result              (measured run done)

Closed loop: `concurrency` workers, each sends its next request when the previous one answered.
Open loop (`rate`): requests leave at that rate whether or not earlier ones were answered, as
independent callers do; each one's latency counts from when it was due, so a server that falls
behind is not flattered by the sender waiting for it.
Two clients: `raw` (default; rawhttp, one pre-opened keep-alive connection per worker, pre-built
request bytes) and `aiohttp` (one pooled session), to cross-check the first. Responses are read
in full but not parsed: the vectors are counted by their brackets, which is enough to catch a
wrong count without the cost of decoding floats.

Here: one measured run. The protocol's child side: parent.py; what is sent: workload.py; the
clients and loops: loops.py; what is counted: tally.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from ..serve import run
from .loops import (
    RawClient,
    run_aiohttp,
    run_aiohttp_open,
    run_raw,
    run_raw_open,
    show_progress,
)
from .parent import Parent
from .tally import Tally, summary
from .workload import make_bodies, request_sizes


def _progress(spec: dict[str, Any], total: int, tally: Tally) -> asyncio.Task[None] | None:
    if not spec.get("progress"):
        return None
    return asyncio.get_running_loop().create_task(
        show_progress(spec.get("label", "load"), total, tally)
    )


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def main_async() -> None:
    parent = await Parent.connect("load")
    spec = await parent.receive()
    tokens, salt, as_list = spec["tokens"], spec["salt"], spec["inputs_per_request"] > 1
    sizes = request_sizes(spec["inputs"], spec["inputs_per_request"])
    bodies = make_bodies(salt, sizes, tokens, as_list)
    warm_sizes = request_sizes(spec["warmup_inputs"], spec["inputs_per_request"])
    warm_bodies = make_bodies(salt + "w", warm_sizes, tokens, as_list)
    if spec.get("client", "raw") == "raw":
        result = await _measure_raw(parent, spec, bodies, sizes, warm_bodies, warm_sizes)
    else:
        result = await _measure_aiohttp(parent, spec, bodies, sizes, warm_bodies, warm_sizes)
    parent.send(result)


async def _measure_raw(
    parent: Parent,
    spec: dict[str, Any],
    bodies: list[bytes],
    sizes: list[int],
    warm_bodies: list[bytes],
    warm_sizes: list[int],
) -> dict[str, Any]:
    client = RawClient(spec["url"], spec["timeout_s"])
    requests, warm_requests = client.prepare(bodies), client.prepare(warm_bodies)
    try:
        await client.open(min(spec["concurrency"], len(requests)))
        if warm_requests:
            await run_raw(client, warm_requests, warm_sizes, spec["concurrency"])
        await parent.warm()
        tally = Tally()
        progress = _progress(spec, len(requests), tally)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if spec.get("rate"):
            await run_raw_open(client, requests, sizes, spec["rate"], tally)
        else:
            await run_raw(client, requests, sizes, spec["concurrency"], tally)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await _stop(progress)
    finally:
        client.close()
    return summary(tally, wall, cpu)


async def _measure_aiohttp(
    parent: Parent,
    spec: dict[str, Any],
    bodies: list[bytes],
    sizes: list[int],
    warm_bodies: list[bytes],
    warm_sizes: list[int],
) -> dict[str, Any]:
    concurrency, url = spec["concurrency"], spec["url"]
    # Open loop: as many connections as requests in flight.
    limit = 0 if spec.get("rate") else concurrency
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeout = aiohttp.ClientTimeout(total=spec["timeout_s"])
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        if warm_bodies:
            await run_aiohttp(session, url, warm_bodies, warm_sizes, concurrency)
        await parent.warm()
        tally = Tally()
        progress = _progress(spec, len(bodies), tally)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if spec.get("rate"):
            await run_aiohttp_open(session, url, bodies, sizes, spec["rate"], tally)
        else:
            await run_aiohttp(session, url, bodies, sizes, concurrency, tally)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await _stop(progress)
    return summary(tally, wall, cpu)


def main() -> None:
    run(main_async)


if __name__ == "__main__":
    main()
