"""The clients people point at TEI, pointed at the proxy instead: huggingface_hub's
InferenceClient (root URL, `feature_extraction`: `POST /`), openai with and without `/v1` (and its
`models.retrieve`), and tei-client. Each gets the answer the upstream gives it directly, and
concurrent calls of each are batched: fewer upstream calls than requests, none sent to the route
the client used. Real processes: the simulator, and the proxy in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import openai
import pytest
from huggingface_hub import AsyncInferenceClient
from tei_client import HttpClient
from tests.helpers.calls import upstream_calls
from tests.helpers.processes import Process, Starter

TEXTS = [f"the client matrix, sentence {i}" for i in range(16)]


@pytest.fixture
def pair(start_simulator: Starter, start_proxy: Starter) -> tuple[Process, Process]:
    sim = start_simulator()
    # One upstream call at a time: concurrent callers share batches.
    return sim, start_proxy(sim.url, "--max-concurrency", "1", ready_path="/ready")


async def batched(
    http: aiohttp.ClientSession,
    sim: Process,
    route: str | None,
    calls: list[Callable[[], Awaitable[object]]],
) -> list[object]:
    """Run `calls` at once; check that fewer /embed calls went out, and none to the client's own
    `route` (when it is another)."""
    before = await upstream_calls(http, sim)
    answers = await asyncio.gather(*(c() for c in calls))
    after = await upstream_calls(http, sim)
    if route is not None:
        assert after.get(route, 0) == before.get(route, 0), route
    assert 0 < after["/embed"] - before.get("/embed", 0) < len(calls), (before, after)
    return list(answers)


async def test_huggingface_hub_at_the_root_url(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    client, direct = AsyncInferenceClient(model=proxy.url), AsyncInferenceClient(model=sim.url)
    got = await batched(http, sim, "/", [lambda t=t: client.feature_extraction(t) for t in TEXTS])
    for text, vector in zip(TEXTS, got, strict=True):
        own = await direct.feature_extraction(text)
        assert vector.dtype == own.dtype and np.array_equal(vector, own)  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix", ["/v1", ""])
async def test_openai_with_and_without_v1(
    http: aiohttp.ClientSession, pair: tuple[Process, Process], suffix: str
) -> None:
    sim, proxy = pair
    client = openai.AsyncOpenAI(base_url=proxy.url + suffix, api_key="-", max_retries=0)
    direct = openai.AsyncOpenAI(base_url=sim.url + suffix, api_key="-", max_retries=0)
    route = suffix + "/embeddings"
    got = await batched(
        http,
        sim,
        route,
        [lambda t=t: client.embeddings.create(input=t, model="m") for t in TEXTS],
    )
    for text, answer in zip(TEXTS, got, strict=True):
        own = await direct.embeddings.create(input=text, model="m")
        assert answer.data[0].embedding == own.data[0].embedding  # type: ignore[attr-defined]
        assert answer.model == own.model  # type: ignore[attr-defined]
    model = await client.models.retrieve(own.model)
    assert model.id == own.model


async def test_tei_client(http: aiohttp.ClientSession, pair: tuple[Process, Process]) -> None:
    sim, proxy = pair
    client, direct = HttpClient(proxy.url), HttpClient(sim.url)
    got = await batched(http, sim, None, [lambda t=t: client.async_embed([t]) for t in TEXTS])
    for text, vectors in zip(TEXTS, got, strict=True):
        assert vectors == await direct.async_embed([text])
