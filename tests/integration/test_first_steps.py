"""What a new user meets first, on real processes: the simulator says where it listens,
OpenAI-compatible tooling finds the model at /v1/models, and /metrics is where the docs say."""

from __future__ import annotations

import aiohttp
import openai
from tests.helpers.processes import Process, Starter, free_port


def test_the_simulator_says_where_it_listens(simulator: Process) -> None:
    assert f"listening on http://127.0.0.1:{simulator.port}" in simulator.output()


async def test_v1_models_lists_teis_model_in_openais_shape(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused")
    try:
        models = await client.models.list()
    finally:
        await client.close()
    assert [m.id for m in models.data] == ["embedding-proxy/tei-simulator"]
    assert models.data[0].object == "model"
    async with http.get(proxy.url + "/v1/models") as resp:
        body = await resp.json()
    assert body["object"] == "list" and isinstance(body["data"][0]["created"], int)


async def test_v1_models_without_an_upstream_is_a_502_in_openais_shape(
    http: aiohttp.ClientSession, start_proxy: Starter
) -> None:
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}")
    async with http.get(proxy.url + "/v1/models") as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["type"] == "Upstream" and body["code"] == 502
    assert "unreachable" in body["message"]


async def test_with_a_metrics_port_the_api_port_does_not_forward_metrics(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    metrics_port = free_port()
    proxy = start_proxy(simulator.url, "--metrics-port", str(metrics_port), ready_path="/ready")
    async with http.get(proxy.url + "/metrics") as resp:
        assert resp.status == 404
        assert f"port {metrics_port}" in await resp.text()
    async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
        assert resp.status == 200
        assert "embedding_proxy_queue_depth" in await resp.text()
