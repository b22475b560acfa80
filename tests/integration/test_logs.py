"""Logs an operator can use, from a real proxy process: the upstream's state changes once each,
the access log in JSON, and request ids passed on and echoed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.helpers.processes import Process, Starter, free_port

INFO = {
    "model_id": "test/recorder",
    "max_client_batch_size": 8,
    "max_batch_tokens": 1024,
    "max_concurrent_requests": 64,
    "max_input_length": 128,
}


async def until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.1)


def json_lines(process: Process) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.output().splitlines() if line.strip()]


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A TEI stand-in on loopback that records the headers of what it is sent."""
    seen: list[dict[str, str]] = []

    async def info(request: web.Request) -> web.Response:
        return web.json_response(INFO)

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def embed(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        inputs = (await request.json())["inputs"]
        count = len(inputs) if isinstance(inputs, list) else 1
        return web.json_response([[0.5, 0.5]] * count)

    async def rerank(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response([{"index": 0, "score": 1.0}])

    app = web.Application()
    app.add_routes(
        [
            web.get("/info", info),
            web.get("/health", health),
            web.post("/embed", embed),
            web.post("/rerank", rerank),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_access_log_in_json_and_request_ids(
    http: aiohttp.ClientSession,
    start_proxy: Starter,
    recorder: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = recorder
    # Started from a thread: the recorder answers the proxy's probes on this test's loop.
    proxy = await asyncio.to_thread(
        start_proxy, url, "--access-log", "--log-format", "json", ready_path="/ready"
    )
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"X-Request-Id": "req-42", "traceparent": trace}
    async with http.post(
        proxy.url + "/embed", json={"inputs": ["a", "b"]}, headers=headers
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "req-42"
    async with http.post(
        proxy.url + "/rerank", json={"query": "q", "texts": ["t"]}, headers=headers
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "req-42"
    # A forwarded request carries the caller's ids to TEI.
    assert seen[-1]["x-request-id"] == "req-42"
    assert seen[-1]["traceparent"] == trace
    # Without one, the proxy makes an id; a hostile one is replaced, never echoed.
    async with http.post(proxy.url + "/embed", json={"inputs": "c"}) as resp:
        made = resp.headers["X-Request-Id"]
    async with http.post(
        proxy.url + "/embed", json={"inputs": "d"}, headers={"X-Request-Id": "x" * 500}
    ) as resp:
        replaced = resp.headers["X-Request-Id"]
    assert made and replaced != "x" * 500 and len(replaced) <= 128
    async with http.post(
        proxy.url + "/embed", data=b"{", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
    async with http.get(proxy.url + "/ready") as resp:
        assert resp.status == 200

    def access() -> list[dict[str, Any]]:
        return [r for r in json_lines(proxy) if r["logger"] == "embedding_proxy.access"]

    await until(lambda: len(access()) >= 5)
    lines = access()
    assert [(r["method"], r["route"], r["status"]) for r in lines] == [
        ("POST", "/embed", 200),
        ("POST", "/rerank", 200),
        ("POST", "/embed", 200),
        ("POST", "/embed", 200),
        ("POST", "/embed", 400),
    ]  # probes (/ready) are not logged
    first = lines[0]
    assert first["request_id"] == "req-42"
    assert first["inputs"] == 2
    assert first["queue_ms"] >= 0 and first["upstream_ms"] > 0 and first["total_ms"] > 0
    assert lines[1]["upstream_ms"] > 0 and lines[1]["inputs"] == 0
    assert lines[2]["request_id"] == made
    assert lines[3]["request_id"] == replaced
    assert lines[4]["inputs"] == 0 and lines[4]["upstream_ms"] is None
    for record in json_lines(proxy):  # every line is JSON with the common fields
        assert {"ts", "level", "logger", "msg"} <= record.keys()


async def test_the_upstreams_state_is_logged_once_per_change(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    port = free_port()
    proxy = start_proxy(f"http://127.0.0.1:{port}", "--log-format", "json")

    def states() -> list[dict[str, Any]]:
        return [r for r in json_lines(proxy) if "reachable" in r]

    await until(lambda: len(states()) >= 1)
    # Many failed polls later (they run every 0.25 s while TEI is away), still one line.
    for _ in range(10):
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 503
        await asyncio.sleep(0.1)
    down = states()
    assert len(down) == 1
    assert down[0]["reachable"] is False and down[0]["level"] == "info"
    assert down[0]["reason"] == "connection refused"
    assert f"upstream http://127.0.0.1:{port} unreachable: connection refused" == down[0]["msg"]

    simulator = start_simulator(port=port)
    await until(lambda: len(states()) >= 2)
    up = states()[1]
    assert up["reachable"] is True and up["model"] == "embedding-proxy/tei-simulator"
    assert "max_client_batch_size 32" in up["msg"]
    simulator.stop()
    await until(lambda: len(states()) >= 3)
    lost = states()[2]
    assert lost["reachable"] is False and lost["level"] == "warning"
    assert "ClientConnectorError" not in proxy.output()
