"""A proxy process in front of a scripted upstream on loopback: the proxy talks only to its
upstream, whatever the request-target says, and every hostile part of an upstream answer gets a
clear 502 (or is dropped) rather than a hang, on forwarded routes and on batch answers alike."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from tests.helpers.processes import Starter
from tests.helpers.scripted import Received, Reply, answer, scripted, tei_like

LIMIT = 100_000  # upstream.max_answer_bytes for these proxies
SMALL = {"EMBEDDING_PROXY_UPSTREAM__MAX_ANSWER_BYTES": str(LIMIT)}
JSON = [("Content-Type", "application/json")]


async def raw(port: int, request: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send raw bytes (with `Connection: close`), read the answer to EOF: (status, all bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            data = await reader.read(-1)
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]), data


async def test_the_request_target_never_takes_the_proxy_elsewhere(start_proxy: Starter) -> None:
    async with scripted() as upstream, scripted() as victim:
        proxy = start_proxy(upstream.url)
        for target in (
            f"*@127.0.0.1:{victim.port}/steal",
            f"*@127.0.0.1:{victim.port}",
            "*",
        ):
            request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            status, data = await raw(proxy.port, request.encode())
            assert status == 400, data
        # Absolute-form and a path that looks like an authority: at most the upstream sees them.
        for target in (f"http://127.0.0.1:{victim.port}/steal", f"//127.0.0.1:{victim.port}/x"):
            request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            await raw(proxy.port, request.encode())
        # A redirect from the upstream is passed back, never followed.
        upstream.script = lambda r: (
            (answer(302, b"", [("Location", f"{victim.url}/steal")]), False)
            if r.target == "/moved"
            else tei_like(r)
        )
        status, data = await raw(
            proxy.port, b"GET /moved HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status == 302 and f"Location: {victim.url}/steal".encode() in data
        assert victim.connections == 0 and victim.received == []
        assert all(r.target.startswith("/") for r in upstream.received)


async def test_hostile_answer_heads_on_forwarded_routes(
    start_proxy: Starter, http: aiohttp.ClientSession
) -> None:
    cases: dict[str, Reply] = {
        # Header bytes that are not ASCII (UTF-8 here): passed on as they came, never a hang.
        "/utf8": (b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok", False),
        # Control characters in a value: never written back to the caller.
        "/nul": (b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok", False),
        "/cr": (b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 2\r\n\r\nok", False),
        "/many": (answer(200, b"ok", [(f"X-{i}", "v") for i in range(300)]), False),
        "/long": (answer(200, b"ok", [("X-Long", "v" * 200_000)]), False),
        "/big": (answer(200, b"x" * (LIMIT + 1)), False),
        "/big-chunked": (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (LIMIT // 2, b"y" * (LIMIT // 2)) * 3
            + b"0\r\n\r\n",
            False,
        ),
        "/status": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", False),
    }

    def script(request: Received) -> Reply:
        return cases[request.target] if request.target in cases else tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url, env=SMALL)
        async with http.get(proxy.url + "/utf8") as resp:
            assert resp.status == 200 and await resp.read() == b"ok"
            assert resp.raw_headers.count((b"X-Name", b"caf\xc3\xa9")) == 1
        for path, words in (
            ("/nul", "refused"),
            ("/cr", "refused"),
            ("/many", "headers"),
            ("/long", "8190 bytes"),
            ("/big", "max_answer_bytes"),
            ("/big-chunked", "max_answer_bytes"),
            ("/status", "status"),
        ):
            async with http.get(proxy.url + path) as resp:
                body = await resp.json()
                assert resp.status == 502, (path, body)
                assert body["error_type"] == "Upstream" and words in body["error"].lower(), body
        # The proxy is still fine.
        async with http.get(proxy.url + "/info") as resp:
            assert resp.status == 200


async def test_hostile_batch_answers_are_502_and_close_delimited_ones_are_read(
    start_proxy: Starter, http: aiohttp.ClientSession
) -> None:
    mode = {"now": "many"}

    def script(request: Received) -> Reply:
        if request.method != "POST":
            return tei_like(request)
        vectors = orjson.dumps([[1.0, 2.0] for _ in orjson.loads(request.body)["inputs"]])
        match mode["now"]:
            case "many":
                return answer(200, vectors, [(f"X-{i}", "v") for i in range(300)] + JSON), False
            case "long":
                return answer(200, vectors, [("X-Long", "v" * 200_000), *JSON]), False
            case "big":
                return answer(200, b"[" + b" " * LIMIT + b"]", JSON), False
            case _:  # delimited by the end of the connection: no Content-Length, no chunking
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
                return head + vectors, True

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url, env=SMALL)
        for name, words in (("many", "headers"), ("long", "head"), ("big", "max_answer_bytes")):
            mode["now"] = name
            before = len(upstream.requests_to("/embed"))
            async with http.post(proxy.url + "/embed", json={"inputs": ["a", "b"]}) as resp:
                body = await resp.json()
                assert resp.status == 502 and words in body["error"], (name, body)
            assert len(upstream.requests_to("/embed")) == before + 1  # refused, not retried
        mode["now"] = "close"
        for _ in range(3):
            async with http.post(proxy.url + "/embed", json={"inputs": ["a", "b"]}) as resp:
                assert resp.status == 200 and await resp.json() == [[1.0, 2.0], [1.0, 2.0]]


async def test_close_delimited_answers_and_repeated_headers_on_forwarded_routes(
    start_proxy: Starter, http: aiohttp.ClientSession
) -> None:
    def script(request: Received) -> Reply:
        if request.target == "/until-close":
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 5000, True
        if request.target == "/cookies":
            cookies = [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
            return answer(200, b"ok", cookies), False
        return tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url)
        for _ in range(2):
            async with http.get(proxy.url + "/until-close") as resp:
                assert resp.status == 200 and await resp.read() == b"z" * 5000
        async with http.get(proxy.url + "/cookies") as resp:
            assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_hop_by_hop_headers_stop_at_the_proxy_both_ways(start_proxy: Starter) -> None:
    def script(request: Received) -> Reply:
        if request.target.startswith("/hop"):
            headers = [
                ("Connection", "X-Internal, Keep-Alive"),
                ("X-Internal", "upstream-only"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"),
                ("Trailer", "X-T"),
                ("X-Kept", "yes"),
            ]
            return answer(200, b"ok", headers), False
        return tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url)
        request = (
            b"GET /hop?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\n"
            b"X-Secret: caller-only\r\nKeep-Alive: 300\r\nTE: trailers\r\n"
            b"Proxy-Authorization: Basic eA==\r\nAuthorization: Bearer caller\r\n"
            b"Upgrade: h2c\r\nX-Other: passed\r\n\r\n"
        )
        status, data = await raw(proxy.port, request)
        assert status == 200
        got = upstream.requests_to("/hop")[0]
        names = {n.lower() for n, _ in got.headers}
        assert got.target == "/hop?q=1" and got.header("X-Other") == ["passed"]
        for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "upgrade"):
            assert name not in names, name
        assert got.header("authorization") == []  # the caller's key stays at the proxy
        assert got.header("connection") in ([], ["keep-alive"], ["close"])  # the proxy's own
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"x-kept: yes" in head
        for name in (b"x-internal", b"keep-alive", b"proxy-authenticate", b"trailer"):
            assert name + b":" not in head, name
