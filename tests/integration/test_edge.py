"""The HTTP edge of a real `embedding-proxy serve`, probed from outside over raw sockets (issue 13):
the request target that made the proxy fetch another host, memory under clients that do not read,
endless heads and slow bodies, and SIGTERM under keep-alive load."""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import pytest
from tests.helpers.processes import Process, Starter
from tests.helpers.rawhttp import read_answer

MIB = 1024 * 1024
# Guards against a hang, long enough for a slow, busy machine: a passing test never waits them
# out. The tests that wait on a whole load or shutdown get a pytest timeout above DEADLINE.
TIMEOUT = 120.0  # one answer, or the end of one connection
DEADLINE = 240.0  # a load to build up, or a whole shutdown


async def poll(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.1)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    return await read_answer(reader, TIMEOUT)


def embed(inputs: list[str], host: str = "proxy") -> bytes:
    body = orjson.dumps({"inputs": inputs})
    return (
        f"POST /embed HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def rss(process: Process) -> int:
    return int(psutil.Process(process.proc.pid).memory_info().rss)


async def test_a_target_naming_another_host_is_refused_and_never_fetched(
    start_proxy: Starter, simulator: Process
) -> None:
    """Row 1: `*@host:port/path` made the proxy fetch `http://host:port/path`."""
    contacted: list[bytes] = []

    async def metadata(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacted.append(await reader.read(1024))
        writer.close()

    stand_in = await asyncio.start_server(metadata, "127.0.0.1", 0)  # the metadata address
    port = stand_in.sockets[0].getsockname()[1]
    proxy = start_proxy(simulator.url, ready_path="/ready")
    try:
        for target in (
            f"*@127.0.0.1:{port}/steal",
            f"http://127.0.0.1:{port}/steal",
            f"127.0.0.1:{port}",
            f"@127.0.0.1:{port}/steal",
        ):
            for method in ("GET", "POST", "CONNECT"):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(
                    f"{method} {target} HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                status, headers, _ = await answer(reader)
                assert (status, headers["connection"]) == (400, "close"), (method, target)
                writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await answer(reader)
        assert (status, headers["allow"]) == (200, "GET, HEAD, POST, OPTIONS")  # answered here
        status, _, body = await answer(reader)
        assert status == 200 and b"max_client_batch_size" in body  # forwarded routes still work
        writer.close()
    finally:
        stand_in.close()
    assert contacted == []


async def test_a_client_that_never_reads_holds_a_bounded_amount(
    start_proxy: Starter, simulator: Process
) -> None:
    """Row 2: four clients pipeline requests for 4 MB answers and never read. Before write
    flow control the proxy answered them all into its buffers (RSS 85 -> 1,135 MiB)."""
    proxy = start_proxy(simulator.url, ready_path="/ready")
    # 448 vectors of 768 float32s, written as TEI writes them (~9.4 KB each): ~4 MB
    request = embed([f"text {i}" for i in range(448)])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(request)
    status, _, body = await answer(reader)  # warm: the proxy's own working set first
    assert status == 200 and len(body) > 3 * MIB
    writer.close()
    before = rss(proxy)
    clients = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(4)]
    for _, w in clients:
        w.write(request * 20)  # 80 answers, 320 MB if all were held
    process = psutil.Process(proxy.proc.pid)

    def cpu() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    # The proxy does what it will with them; once its CPU stands still, it holds what it holds.
    last, still = cpu(), 0
    while still < 4:
        await asyncio.sleep(0.5)
        now = cpu()
        still = still + 1 if now - last < 0.02 else 0
        last = now
    grown = (rss(proxy) - before) / MIB
    for _, w in clients:
        w.close()
    assert grown < 100, f"RSS grew {grown:.0f} MiB"


async def test_endless_heads_cost_a_bounded_amount(
    start_proxy: Starter, simulator: Process
) -> None:
    """Row 3: `A:\\r\\n` x 60,000 in heads never finished, on 100 connections: RSS 53 -> 468
    MiB before the header cap."""
    proxy = start_proxy(simulator.url, ready_path="/ready")
    before = rss(proxy)
    payload = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A:\r\n" * 60_000
    answers: list[int] = []

    async def probe() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
        status, headers, _ = await answer(reader)
        answers.append(status)
        assert headers["connection"] == "close"
        writer.close()

    await asyncio.gather(*(probe() for _ in range(100)))
    grown = (rss(proxy) - before) / MIB
    assert answers == [431] * 100
    assert grown < 30, f"RSS grew {grown:.0f} MiB"


async def test_slow_clients_are_cut_off_and_the_connection_cap_holds(
    start_proxy: Starter, simulator: Process
) -> None:
    """Row 5: slowloris heads and trickled bodies meet their timeouts (408); connections beyond
    the cap are refused at their head (503), their bodies never read, so 300 clients each
    pushing 1 MB of a body cost the memory of the 50 within the cap."""
    proxy = start_proxy(
        simulator.url,
        ready_path="/ready",
        env={
            "EMBEDDING_PROXY_SERVER__HEAD_TIMEOUT_SECONDS": "2",
            "EMBEDDING_PROXY_SERVER__BODY_TIMEOUT_SECONDS": "3",
            "EMBEDDING_PROXY_SERVER__MAX_CONNECTIONS": "50",
        },
    )
    process = psutil.Process(proxy.proc.pid)
    fds, before = process.num_fds(), rss(proxy)
    head = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 1900000\r\n\r\n"
    statuses: list[int] = []
    pushed: list[int] = []

    async def heavy() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(head + b"x" * MIB)
            await writer.drain()
            pushed.append(1)
            status, headers, _ = await answer(reader)  # 503 at once, or 408 in time
            statuses.append(status)
            assert headers["connection"] == "close"
        finally:
            writer.close()

    async def slowloris() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        got = asyncio.ensure_future(answer(reader))
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            while not got.done():  # a header line every 0.5 s, the head never ends
                writer.write(b"X-Slow: 1\r\n")
                await asyncio.sleep(0.5)
        statuses.append((await got)[0])
        writer.close()

    heavies = [asyncio.ensure_future(heavy()) for _ in range(300)]
    await poll(lambda: len(pushed) + len(statuses) >= 300, "bodies not sent")
    peak = (rss(proxy) - before) / MIB
    await asyncio.gather(*heavies, *(slowloris() for _ in range(20)))
    assert statuses.count(503) >= 250 - 20 and set(statuses) <= {408, 503}
    assert statuses.count(408) >= 20  # the slowloris heads, at least
    await poll(lambda: process.num_fds() <= fds + 2, "connections left open")
    assert peak < 150, f"RSS grew {peak:.0f} MiB with 300 bodies in flight"


async def test_many_whole_bodies_at_once_fit_the_body_budget(
    start_proxy: Starter, simulator: Process
) -> None:
    """1,000 clients each sending a whole 2 MB body took 2-7 GiB, kept
    after they left. Bodies held across all connections now fit a budget (8 MiB here): each
    waits for room, none is lost. Without an API key, a body is never read: 401 from its head."""
    proxy = start_proxy(
        simulator.url,
        "--api-keys",
        "k",
        ready_path="/ready",
        env={"EMBEDDING_PROXY_SERVER__MAX_BODY_BUFFER_BYTES": str(8 * MIB)},
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 1900000\r\n\r\n")
    status, headers, _ = await answer(reader)  # the body is not sent: not waited for either
    assert (status, headers["connection"]) == (401, "close")
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()

    body = orjson.dumps({"inputs": "a" * 1_900_000})
    request = (
        b"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    before, peak = rss(proxy), 0
    statuses: list[int] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(request)
        statuses.append((await answer(reader))[0])
        writer.close()

    clients = asyncio.gather(*(client() for _ in range(150)))
    while not clients.done():
        peak = max(peak, rss(proxy))
        await asyncio.sleep(0.05)
    await clients
    assert statuses == [413] * 150  # each read whole and answered (the input is too long)
    grown = (peak - before) / MIB
    assert grown < 120, f"RSS grew {grown:.0f} MiB with 150 bodies of 1.9 MB at once"


@pytest.mark.timeout(2 * DEADLINE)
async def test_idle_keepalive_connections_cannot_starve_a_probe(
    start_proxy: Starter, simulator: Process
) -> None:
    """Connections each asking once and then idling held every slot, and a
    liveness probe got 503. At the cap the connection idle longest now makes room."""
    proxy = start_proxy(simulator.url, env={"EMBEDDING_PROXY_SERVER__MAX_CONNECTIONS": "50"})
    idle = []
    for _ in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await answer(reader))[0] == 200
        idle.append((reader, writer))
        # The proxy's clock (uvloop's) counts whole milliseconds: two answers in the same one
        # would be equally old, and which of them goes first is not defined. 10 ms apart, each
        # connection is older than the next, however fast or slow the machine.
        await asyncio.sleep(0.01)
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n")
        assert (await answer(reader))[0] == 200
        writer.close()
    for reader, _ in idle[:11]:  # 10 for the last 10 idle ones, 1 for the probes: oldest first
        assert await _ended(reader)
    for _, writer in idle:
        writer.close()


async def _ended(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    return False


HOLD_MS = 10_000  # within the proxy's grace_seconds (25)


def _fault(simulator: Process, fault: dict[str, int] | None = None) -> dict[str, Any]:
    """Set a fault on the simulator (None: only read them)."""
    data = None if fault is None else orjson.dumps(fault)
    url = f"{simulator.url}/simulator/faults"
    with urllib.request.urlopen(url, data, timeout=TIMEOUT) as resp:
        return dict(orjson.loads(resp.read()))


def _closed_while_idle(writer: asyncio.StreamWriter) -> bool:
    """The server has already closed this kept-alive connection between requests (its FIN
    waits here, unread), as it may: a client does not send on it, as HTTP clients check a
    pooled connection before they reuse it. Without this, a busy machine that delays the
    client between an answer and its next request makes the request race the close."""
    sock = writer.get_extra_info("socket")
    return bool(select.select([sock.fileno()], [], [], 0)[0])


@pytest.mark.timeout(4 * DEADLINE)
@pytest.mark.parametrize("drain_seconds", ["0", "1"])
async def test_sigterm_under_keepalive_load_answers_every_request(
    start_proxy: Starter, simulator: Process, drain_seconds: str
) -> None:
    """Row 7: 64 keep-alive clients in a closed loop; SIGTERM. Every request sent is answered
    (200, or 503 once the proxy refuses), the last answer on each connection says close, and
    no connection is cut between a request and its answer."""
    proxy = start_proxy(
        simulator.url,
        ready_path="/ready",
        # Batches run side by side, so that one held upstream (below) holds up no other.
        env={
            "EMBEDDING_PROXY_SERVER__DRAIN_SECONDS": drain_seconds,
            "EMBEDDING_PROXY_BATCHING__MAX_CONCURRENCY": "8",
        },
    )
    request = embed(["hello"])
    lost: list[str] = []
    answered: list[int] = []

    async def client() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        reused = False  # the connection has had an answer and was kept alive
        while True:
            if conn is None:
                reused = False
                try:
                    conn = await asyncio.open_connection("127.0.0.1", proxy.port)
                except (ConnectionRefusedError, ConnectionResetError):
                    # No longer listening, or a handshake the kernel had not finished when the
                    # proxy closed its listening socket: nothing was sent.
                    return
            reader, writer = conn
            if reused and _closed_while_idle(writer):
                writer.close()
                conn = None
                continue
            writer.write(request)
            try:
                status, headers, _ = await answer(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                lost.append(repr(e))  # sent, never answered
                return
            answered.append(status)
            reused = True
            if headers.get("connection") == "close":
                writer.close()
                conn = None
            if status == 503:
                return

    clients = [asyncio.ensure_future(client()) for _ in range(64)]
    await poll(lambda: len(answered) >= 500, "no load", DEADLINE)
    # One upstream call held for HOLD_MS: the proxy finishes it before it stops listening, so
    # it refuses for that long, whatever the machine's load, while the other clients, answered,
    # come back (and get their 503s).
    await asyncio.to_thread(_fault, simulator, {"delay_ms": HOLD_MS, "times": 1})
    await poll(lambda: _fault(simulator)["applied"] >= 1, "no upstream call held", DEADLINE)
    proxy.signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*clients), DEADLINE)
    assert lost == []
    assert answered.count(503) >= 1 and set(answered) <= {200, 503}
    assert await asyncio.to_thread(proxy.proc.wait, DEADLINE) == 0
