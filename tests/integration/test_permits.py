"""TEI 1.9 takes one permit per input (`max_concurrent_requests`) with `try_acquire` and answers
429 at once when one is missing (router/src/http/server.rs: `infer.try_acquire_permit()` on
/embed, /predict, /rerank, /similarity, ...; none on /tokenize or /decode). Under a mixed load of
batched and forwarded routes the proxy counts what TEI counts, so that TEI never has to refuse it
and no caller sees a 429 it could not have caused. A real proxy process in front of a stand-in
for TEI 1.9's permits (aiohttp, in this test's process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from tests.helpers.calls import wait_ready
from tests.helpers.processes import Starter

PERMITS = 8


class Tei19:
    """TEI 1.9's permits and little else: each inference request takes one permit per input at
    once or is answered 429, and holds them while its batch runs (30 ms)."""

    def __init__(self) -> None:
        self.free = PERMITS
        self.refused = 0
        self.most = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            info = {
                "model_id": "tei-1.9",
                "model_type": {"embedding": {"pooling": "cls"}},
                "max_client_batch_size": 32,
                "max_batch_tokens": 16384,
                "max_concurrent_requests": PERMITS,
                "max_input_length": 512,
            }
            return web.json_response(info if request.path == "/info" else {})
        body = await request.json()
        if request.path == "/tokenize":  # no permits
            return web.json_response([[{"id": 1}] for _ in body["inputs"]])
        n = len(body["texts"]) if request.path == "/rerank" else len(body["inputs"])
        if n > self.free:
            self.refused += 1
            error = {"error": "Model is overloaded", "error_type": "Overloaded"}
            return web.json_response(error, status=429)
        self.free -= n
        self.most = max(self.most, PERMITS - self.free)
        try:
            await asyncio.sleep(0.03)
        finally:
            self.free += n
        if request.path == "/rerank":
            return web.json_response([{"index": i, "score": 0.5} for i in range(n)])
        return web.json_response([[float(len(t)), 1.0] for t in body["inputs"]])


@pytest.fixture
async def tei() -> AsyncIterator[tuple[Tei19, str]]:
    stand_in = Tei19()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stand_in, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_mixed_load_never_makes_tei_refuse(
    start_proxy: Starter, tei: tuple[Tei19, str]
) -> None:
    stand_in, url = tei
    proxy = start_proxy(url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await wait_ready(s, proxy.url)

        async def call(path: str, body: object) -> int:
            async with s.post(proxy.url + path, data=orjson.dumps(body), headers=JSON) as r:
                await r.read()
                return r.status

        calls = []
        for round_ in range(3):
            calls += [call("/embed", {"inputs": f"text {round_} {i}"}) for i in range(40)]
            calls += [call("/rerank", {"query": "q", "texts": ["a"] * 6}) for _ in range(10)]
            calls += [call("/tokenize", {"inputs": ["a", "b"]}) for _ in range(10)]
            calls += [call("/embed", {"inputs": ["x"] * 5}) for _ in range(5)]
        statuses = await asyncio.gather(*calls)
    assert statuses == [200] * len(calls)
    assert stand_in.refused == 0  # TEI never had to say 429 ...
    assert stand_in.most == PERMITS  # ... while the proxy kept it full


JSON = {"Content-Type": "application/json"}
