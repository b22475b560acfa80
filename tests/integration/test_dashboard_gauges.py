"""The gauges the dashboard and alert rules read, from real processes: the batch size limit
(the setting capped by TEI's max_client_batch_size) and whether TEI answers."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from tests.helpers.calls import metrics
from tests.helpers.processes import Process, Starter


async def poll(http: aiohttp.ClientSession, url: str, name: str, wanted: float) -> None:
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:
        seen = (await metrics(http, url)).get(name)
        if seen == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} stayed {seen}, wanted {wanted}")


async def test_batch_size_limit_and_upstream_up_follow_tei(
    start_simulator: Starter, start_proxy: Starter, http: aiohttp.ClientSession
) -> None:
    tei = start_simulator("--max-client-batch-size", "16")
    proxy = start_proxy(tei.url, "--max-batch-size", "64", ready_path="/ready")
    await poll(http, proxy.url, "embedding_proxy_upstream_up", 1)
    await poll(http, proxy.url, "embedding_proxy_batch_size_limit", 16)

    tei.stop()
    await poll(http, proxy.url, "embedding_proxy_upstream_up", 0)


async def test_inputs_are_counted_by_route_and_status(
    proxy: Process, http: aiohttp.ClientSession
) -> None:
    async with http.post(proxy.url + "/embed", json={"inputs": ["a", "b", "c"]}) as resp:
        assert resp.status == 200
    body = {"input": ["a", "b"], "model": "m"}
    async with http.post(proxy.url + "/v1/embeddings", json=body) as resp:
        assert resp.status == 200
    async with http.post(proxy.url + "/embed", json={"inputs": []}) as resp:
        assert resp.status >= 400  # refused before any input counted
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_inputs_total{route=/embed,status=200}"] == 3
    assert m["embedding_proxy_inputs_total{route=/v1/embeddings,status=200}"] == 2
    refused = [
        v
        for k, v in m.items()
        if k.startswith("embedding_proxy_inputs_total{route=/embed,status=4")
    ]
    assert sum(refused) == 0
