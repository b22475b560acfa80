"""The load generator's two clients (raw keep-alive connections, an aiohttp session) and its two
loops: closed (each worker sends when its previous answer came) and open (requests leave at a
fixed rate); and the progress line."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from . import rawhttp
from .tally import Tally, Work, record

HEADERS = {"Content-Type": "application/json"}


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
        record(tally, status, data, size)


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
            record(tally, status, body, size)

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
        record(tally, status, body, sizes[i])
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
        record(tally, status, data, sizes[i])

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
