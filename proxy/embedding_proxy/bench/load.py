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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from . import rawhttp

HEADERS = {"Content-Type": "application/json"}


def make_text(salt: str, index: int, tokens: int) -> str:
    """A distinct input of exactly `tokens` simulator tokens (words + [CLS] + [SEP])."""
    return " ".join([f"{salt}{index}", *(["word"] * (tokens - 3))])


def request_sizes(inputs: int, per_request: int) -> list[int]:
    """Inputs per request: full requests of `per_request`, the last one holding what is left."""
    full, rest = divmod(inputs, per_request)
    return [per_request] * full + ([rest] if rest else [])


def make_bodies(salt: str, sizes: list[int], tokens: int, as_list: bool) -> list[bytes]:
    """Request bodies; a single input is sent as a string unless `as_list` (TEI accepts both)."""
    bodies: list[bytes] = []
    index = 0
    for size in sizes:
        texts = [make_text(salt, index + i, tokens) for i in range(size)]
        index += size
        inputs: str | list[str] = texts[0] if size == 1 and not as_list else texts
        bodies.append(orjson.dumps({"inputs": inputs}))
    return bodies


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


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


def _record(tally: Tally, status: int, data: bytes, size: int) -> None:
    # A vector list of n rows has n + 1 opening brackets: [[...],[...]].
    if status == 200 and data.count(b"[") == size + 1:
        tally.ok += 1
        tally.inputs_ok += size
    elif status == 200:
        tally.fail("wrong-count", data[:200].decode(errors="replace"))
    else:
        tally.fail(str(status), rawhttp.error_text(data))


async def _aiohttp_worker(
    session: aiohttp.ClientSession, url: str, work: Work, tally: Tally
) -> None:
    # One shared iterator: workers take the next request as they become free.
    for body, size in work:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=HEADERS) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            tally.latencies.append(time.perf_counter() - started)
            tally.fail(type(e).__name__, str(e))
            continue
        tally.latencies.append(time.perf_counter() - started)
        _record(tally, status, data, size)


class RawClient:
    """One keep-alive connection per worker, opened before the timed part, reopened on failure."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path
        self.timeout = timeout
        self.pool: list[rawhttp.Connection] = []

    def prepare(self, bodies: list[bytes]) -> list[bytes]:
        return [rawhttp.build_request(self.host, self.port, self.path, b) for b in bodies]

    async def open(self, count: int) -> None:
        while len(self.pool) < count:
            self.pool.append(await rawhttp.connect(self.host, self.port))

    async def worker(self, index: int, work: Work, tally: Tally) -> None:
        for data, size in work:
            started = time.perf_counter()
            try:
                conn = self.pool[index]
                if conn.closed:
                    conn = self.pool[index] = await rawhttp.connect(self.host, self.port)
                status, body = await conn.request(data, self.timeout)
            except (OSError, rawhttp.HttpError, TimeoutError) as e:
                tally.latencies.append(time.perf_counter() - started)
                tally.fail(type(e).__name__, str(e))
                self.pool[index].close()
                self.pool[index].closed = True
                continue
            tally.latencies.append(time.perf_counter() - started)
            _record(tally, status, body, size)

    def close(self) -> None:
        for conn in self.pool:
            conn.close()


async def run_open(
    send: Callable[[int], Awaitable[None]], count: int, rate: float, tally: Tally
) -> Tally:
    """Start request i at start + i/rate; wait for all of them."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(send(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*pending)
    return tally


async def run_raw_open(
    client: RawClient, requests: list[bytes], sizes: list[int], rate: float, tally: Tally
) -> Tally:
    """Open loop on raw connections: a free one from the pool, else a new one."""
    idle = [c for c in client.pool if not c.closed]
    start = time.perf_counter()

    async def send(i: int) -> None:
        due = start + i / rate
        conn = idle.pop() if idle else None
        try:
            if conn is None or conn.closed:
                conn = await rawhttp.connect(client.host, client.port)
                client.pool.append(conn)
            status, body = await conn.request(requests[i], client.timeout)
        except (OSError, rawhttp.HttpError, TimeoutError) as e:
            tally.latencies.append(time.perf_counter() - due)
            tally.fail(type(e).__name__, str(e))
            if conn is not None:
                conn.close()
                conn.closed = True
            return
        tally.latencies.append(time.perf_counter() - due)
        _record(tally, status, body, sizes[i])
        idle.append(conn)

    return await run_open(send, len(requests), rate, tally)


async def run_aiohttp_open(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    sizes: list[int],
    rate: float,
    tally: Tally,
) -> Tally:
    start = time.perf_counter()

    async def send(i: int) -> None:
        due = start + i / rate
        try:
            async with session.post(url, data=bodies[i], headers=HEADERS) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            tally.latencies.append(time.perf_counter() - due)
            tally.fail(type(e).__name__, str(e))
            return
        tally.latencies.append(time.perf_counter() - due)
        _record(tally, status, data, sizes[i])

    return await run_open(send, len(bodies), rate, tally)


async def show_progress(label: str, total: int, tally: Tally) -> None:
    """Counts and an ETA on the terminal (stderr), every half second until cancelled."""
    start = time.perf_counter()
    try:
        while True:
            await asyncio.sleep(0.5)
            done = tally.ok + tally.failed
            elapsed = time.perf_counter() - start
            eta = (total - done) * elapsed / done if done else float("nan")
            sys.stderr.write(
                f"\r  {label}: {done}/{total} requests, {tally.failed} failed, ETA {eta:.0f} s   "
            )
            sys.stderr.flush()
    finally:
        sys.stderr.write("\r" + " " * 72 + "\r")
        sys.stderr.flush()


async def run_raw(
    client: RawClient,
    requests: list[bytes],
    sizes: list[int],
    workers: int,
    tally: Tally | None = None,
) -> Tally:
    tally = tally or Tally()
    work = iter(zip(requests, sizes, strict=True))
    count = max(1, min(workers, len(requests)))
    await client.open(count)
    await asyncio.gather(*(client.worker(i, work, tally) for i in range(count)))
    return tally


async def run_aiohttp(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    sizes: list[int],
    workers: int,
    tally: Tally | None = None,
) -> Tally:
    tally = tally or Tally()
    work = iter(zip(bodies, sizes, strict=True))
    count = max(1, min(workers, len(bodies)))
    await asyncio.gather(*(_aiohttp_worker(session, url, work, tally) for _ in range(count)))
    return tally


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


async def _readline(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise SystemExit("bench load: parent closed stdin")
    return orjson.loads(line)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


async def main_async() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = await _readline(reader)
    tokens, salt, as_list = spec["tokens"], spec["salt"], spec["inputs_per_request"] > 1
    sizes = request_sizes(spec["inputs"], spec["inputs_per_request"])
    bodies = make_bodies(salt, sizes, tokens, as_list)
    warm_sizes = request_sizes(spec["warmup_inputs"], spec["inputs_per_request"])
    warm_bodies = make_bodies(salt + "w", warm_sizes, tokens, as_list)
    if spec.get("client", "raw") == "raw":
        result = await _measure_raw(reader, spec, bodies, sizes, warm_bodies, warm_sizes)
    else:
        result = await _measure_aiohttp(reader, spec, bodies, sizes, warm_bodies, warm_sizes)
    _emit(result)


async def _measure_raw(
    reader: asyncio.StreamReader,
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
        _emit({"phase": "warm"})
        await _readline(reader)
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
    reader: asyncio.StreamReader,
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
        _emit({"phase": "warm"})
        await _readline(reader)
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
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main_async())


if __name__ == "__main__":
    main()
