"""What answers may make a real `embedding-proxy serve` hold: one request's (TEI's `/embed_all`
answers a vector per token), those of all requests waiting for the rest of their inputs, and
those of clients slow to take them (docs/security.md, "Memory")."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import psutil
from tests.helpers.processes import Process, Starter
from tests.helpers.rawhttp import parse_head
from tests.helpers.scripted import Received, Reply, answer, scripted, tei_like

MIB = 1024 * 1024
TIMEOUT = 120.0


def peak_rss(process: Process) -> int:
    """The most memory the process has held at once (VmHWM)."""
    with open(f"/proc/{process.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_one_request_cannot_make_the_proxy_hold_gigabytes(
    http: aiohttp.ClientSession, proxy: Process, simulator: Process
) -> None:
    """128 inputs of 100 words: /embed_all's answer is 189 MB; the proxy held 841 MiB at its
    peak to assemble it (and 1024 such inputs ran it out of memory)."""
    text = " ".join(["word"] * 100)
    body = {"inputs": [f"{text} {i}" for i in range(128)]}
    async with http.post(proxy.url + "/embed_all", json=body) as resp:
        assert resp.status == 413
        error = await resp.json()
    assert "limits.max_answer_bytes" in error["error"] and error["error_type"] == "Validation"
    assert peak_rss(proxy) < 640 * MIB  # its own answer within 64 MiB, and the batches in flight

    # Within the budget, the answer is TEI's own, cut without parsing a number.
    small = {"inputs": ["a few words", "and a few more words here"]}
    async with http.post(proxy.url + "/embed_all", json=small) as resp:
        assert resp.status == 200
        through = await resp.read()
    async with http.post(simulator.url + "/embed_all", json=small) as resp:
        assert orjson.loads(through) == orjson.loads(await resp.read())


async def test_answers_held_for_waiting_requests_are_bounded_across_requests(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    """Many requests, each spread over several batches, each under its own budget: together
    they may hold `limits.max_answers_held_bytes`; a request that would wait on more gets 429."""
    keys = [f"key-{i:02d}-0123456789" for i in range(24)]  # callers share batches fairly
    proxy = start_proxy(
        simulator.url,
        "--max-batch-size",
        "8",
        "--max-answers-held-bytes",
        "2000000",
        "--api-keys",
        ",".join(keys),
        ready_path="/ready",
    )

    async def ask(i: int) -> tuple[int, bytes]:
        body = {"inputs": [f"{i} {j}" for j in range(64)]}  # 8 batches, about 640 KB answered
        auth = {"Authorization": f"Bearer {keys[i]}"}
        async with http.post(proxy.url + "/embed", json=body, headers=auth) as resp:
            return resp.status, await resp.read()

    answers = await asyncio.gather(*(ask(i) for i in range(24)))
    statuses = [status for status, _ in answers]
    assert 429 in statuses and 200 in statuses, statuses
    refused = next(body for status, body in answers if status == 429)
    assert b"limits.max_answers_held_bytes" in refused
    async with http.get(proxy.url + "/metrics") as resp:
        assert 'embedding_proxy_rejections_total{reason="answers_held"}' in await resp.text()


async def test_slow_readers_hold_answers_within_the_answer_budget(
    start_proxy: Starter, simulator: Process
) -> None:
    """Clients that ask for ~9 MB answers and take none of them: before, each held its whole
    answer until `send_timeout_seconds`, and one reading a byte every 5 s for ever (60 of them:
    RSS 55 -> 1,035 MiB). Now the answers waiting fit `server.max_answer_buffer_bytes` (40 MB
    here): the connections that left theirs waiting longest are dropped."""
    budget = 40_000_000
    proxy = start_proxy(
        simulator.url, "--max-answer-buffer-bytes", str(budget), ready_path="/ready"
    )
    body = orjson.dumps({"inputs": ["a"] * 1024})
    request = (
        b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    clients = []
    for _ in range(16):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(request)
        # The answer has begun: the proxy holds what the kernel does not.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status, headers = parse_head(head)
        assert status == 200
        size = int(headers["content-length"])
        clients.append((sock.getsockname()[1], writer))
    ports = {port for port, _ in clients}

    def held() -> int:  # the clients' connections the proxy still has open
        found = psutil.Process(proxy.proc.pid).net_connections("tcp")
        return sum(1 for c in found if c.raddr and c.raddr.port in ports)

    # At most 40 MB of these answers wait in the proxy at once, each less what its socket's send
    # buffer took (up to tcp_wmem's largest): the answers that fit so, and one begun.
    kernel = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    most = budget // max(size - kernel, 1) + 1
    assert most < len(clients), (most, size, kernel)
    await poll(lambda: held() <= most, f"slow readers still held: {held()}, at most {most}")
    for _, writer in clients:
        writer.close()
    assert "Traceback" not in proxy.output()


async def poll(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.1)


async def test_a_forwarded_answer_is_held_within_the_answer_budgets(
    http: aiohttp.ClientSession, start_proxy: Starter
) -> None:
    """A forwarded route's answer (`/decode`, `/rerank` with texts, or an upstream that is not
    TEI) was bounded only by `upstream.max_answer_bytes`, 100 MB a request, and by nothing
    across requests. It counts against both answer budgets now."""

    def script(request: Received) -> Reply:
        if request.target.startswith("/big"):
            return answer(200, b"x" * 3_000_000, [("Content-Type", "text/plain")]), False
        return tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(
            upstream.url, "--max-answer-bytes", "2000000", "--max-answers-held-bytes", "5000000"
        )
        async with http.get(proxy.url + "/big") as resp:
            assert resp.status == 413
            assert "limits.max_answer_bytes" in (await resp.json())["error"]
        async with http.get(proxy.url + "/small") as resp:
            assert resp.status == 200 and await resp.read() == b"ok"
