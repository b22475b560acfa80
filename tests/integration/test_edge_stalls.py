"""Peers that stall or half-close, against a real `embedding-proxy serve` over raw sockets: heads
never finished, bodies never sent, and clients that shut their sending side to wait."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
from tests.helpers.processes import Process, Starter
from tests.helpers.rawhttp import read_answer

TIMEOUT = 60.0


def embed(text: str, last: bool = False) -> bytes:
    body = orjson.dumps({"inputs": text})
    close = b"Connection: close\r\n" if last else b""
    return (
        b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (close, len(body), body)
    )


async def answers(reader: asyncio.StreamReader) -> list[int]:
    """The statuses of the answers read until the proxy closes the connection."""
    statuses = []
    while True:
        try:
            status, _, _ = await read_answer(reader, TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return statuses
        statuses.append(status)


async def test_peers_stalled_mid_head_never_keep_the_probes_out(
    start_proxy: Starter, simulator: Process
) -> None:
    """Sockets that send half a head fill `server.max_connections` (50 here): before, every
    /health then got 503 and the kubelet restarted the pod."""
    proxy = start_proxy(simulator.url, "--max-connections", "50", ready_path="/ready")
    stalled = []
    for _ in range(60):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        stalled.append(sock)
    await asyncio.sleep(1.2)  # stalled, not merely new (a burst of new connections is no stall)
    for path in ("/health", "/ready") * 5:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, _ = await read_answer(reader, TIMEOUT)
        assert status == 200, path
        writer.close()
    # Newcomers made room by closing the stalled heads that waited longest.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(embed("after the stall"))
    assert (await read_answer(reader, TIMEOUT))[0] == 200
    writer.close()
    for sock in stalled:
        sock.close()


async def test_a_client_that_half_closes_after_its_last_request_gets_every_answer(
    proxy: Process,
) -> None:
    """A client that says its last request is its last (`Connection: close`) may shut its
    sending side and wait (RFC 9112, 9.6): before, it got no answer (20 pipelined: 4)."""
    for count in (1, 20):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"".join(embed(f"text {i}", last=i == count - 1) for i in range(count)))
        writer.write_eof()
        assert await answers(reader) == [200] * count
        writer.close()
    # One that had not said so gave up waiting: it is not answered, and its inputs go.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(embed("gave up"))
    writer.write_eof()
    started = time.monotonic()
    assert await answers(reader) == []
    assert time.monotonic() - started < 5  # closed at once, not left open
    writer.close()


async def test_heads_that_declare_bodies_they_never_send_hold_no_body_budget(
    start_proxy: Starter, simulator: Process
) -> None:
    """Each chunked head reserved `max_body_bytes` of the body budget until its body timeout:
    12 of them (24 MB of a 20 MB budget here) made a 100 KB POST wait 30 s. Bodies are
    charged as their bytes arrive now."""
    proxy = start_proxy(simulator.url, "--max-body-buffer-bytes", "20000000", ready_path="/ready")
    idle = []
    for i in range(12):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        framing = b"Transfer-Encoding: chunked" if i % 2 else b"Content-Length: 2000000"
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % framing)
        idle.append(sock)
    await asyncio.sleep(0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    started = time.monotonic()
    writer.write(embed("a" * 100_000))
    status, _, _ = await read_answer(reader, 10)  # was 30 s
    assert status == 200 and time.monotonic() - started < 10
    writer.close()
    for sock in idle:
        sock.close()
