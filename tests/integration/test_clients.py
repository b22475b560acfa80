"""The clients README's "Using it from ..." names, as it says to set them up, against a real
proxy in front of the TEI simulator: each gets its own vectors, and the proxy batched the call
(it counted it on one of its batched routes, not as a request forwarded to TEI)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from tests.helpers.calls import close, metrics
from tests.helpers.processes import PYTHON, Process, free_port, proxy_args, running

from embedding_proxy.simulator.vectors import embedding

TEXTS = ["first text", "second text"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One proxy and simulator for the module: each client's call is told apart by the counts."""
    logs: Path = tmp_path_factory.mktemp("clients")
    sim_port, port = free_port(), free_port()
    simulator = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1"]
    with (
        running([*simulator, "--port", str(sim_port)], sim_port, logs / "sim.log"),
        running(proxy_args(f"http://127.0.0.1:{sim_port}", port), port, logs / "proxy.log",
                ready_path="/ready") as started,
    ):  # fmt: skip
        yield started


async def batched_on(http: aiohttp.ClientSession, proxy: Process, call: Callable[[], object]):
    """What `call` returned, and the proxy's routes whose request count it raised."""

    async def counts() -> dict[str, float]:
        found: dict[str, float] = {}
        for key, value in (await metrics(http, proxy.url)).items():
            if key.startswith("embedding_proxy_requests_total{"):
                route = key.split("route=", 1)[1].split(",", 1)[0].rstrip("}")
                found[route] = found.get(route, 0) + value
        return found

    before = await counts()
    result = await asyncio.to_thread(call)
    after = await counts()
    return result, {r for r, n in after.items() if n > before.get(r, 0)}


async def test_huggingface_hub_with_the_embed_route_as_model(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    client = huggingface_hub.InferenceClient(model=proxy.url + "/embed")
    vectors, routes = await batched_on(http, proxy, lambda: client.feature_extraction(TEXTS))
    assert routes == {"/embed"}
    assert [close(list(v), embedding(t)) for v, t in zip(vectors, TEXTS, strict=True)] == [True] * 2


async def test_langchain_openai_without_its_token_ids(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="tei", base_url=proxy.url + "/v1", api_key="unused",
        check_embedding_ctx_length=False, max_retries=0,
    )  # fmt: skip
    vectors, routes = await batched_on(http, proxy, lambda: embeddings.embed_documents(TEXTS))
    assert routes == {"/v1/embeddings"}
    assert [close(v, embedding(t)) for v, t in zip(vectors, TEXTS, strict=True)] == [True] * 2


async def test_openai_with_v1_in_base_url_and_dimensions(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    answer, routes = await batched_on(
        http, proxy, lambda: client.embeddings.create(model="tei", input=TEXTS, dimensions=64)
    )
    assert routes == {"/v1/embeddings"}
    assert [len(d.embedding) for d in answer.data] == [64, 64]


async def test_tei_client(http: aiohttp.ClientSession, proxy: Process) -> None:
    from tei_client import HttpClient

    client = HttpClient(proxy.url)
    vectors, routes = await batched_on(http, proxy, lambda: client.embed(TEXTS))
    assert "/embed" in routes
    assert [close(v, embedding(t)) for v, t in zip(vectors, TEXTS, strict=True)] == [True] * 2
