"""TEI's answer headers reach every caller of a batched route, each its own share: its characters
(counted as TEI counts them), its share of its batch's tokens, the batch's tokenization and
inference times, its own total time, and in `x-queue-time` the batch's plus its wait in the
proxy's queue (router/src/lib.rs: `ResponseMetadata` into a `HeaderMap`). Real processes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.helpers.processes import Process, Starter

NAMES = (
    "x-compute-type",
    "x-compute-time",
    "x-compute-characters",
    "x-compute-tokens",
    "x-total-time",
    "x-tokenization-time",
    "x-queue-time",
    "x-inference-time",
)


@pytest.fixture
def pair(start_simulator: Starter, start_proxy: Starter) -> tuple[Process, Process]:
    sim = start_simulator("--base-ms", "150")
    return sim, start_proxy(sim.url, "--max-concurrency", "1", ready_path="/ready")


async def headers_of(
    http: aiohttp.ClientSession, url: str, body: object
) -> tuple[dict[str, str], object]:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return {n: resp.headers[n] for n in NAMES if n in resp.headers}, await resp.json()


async def test_each_caller_gets_its_own_share(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    alone, _ = await headers_of(http, sim.url + "/embed", {"inputs": "héllo wörld"})
    got, _ = await headers_of(http, proxy.url + "/embed", {"inputs": "héllo wörld"})
    assert set(got) == set(NAMES)
    assert got["x-compute-type"] == alone["x-compute-type"]
    assert got["x-compute-characters"] == "11"  # characters, not bytes, as TEI counts
    assert got["x-compute-tokens"] == alone["x-compute-tokens"]  # alone in its batch: exact
    assert int(got["x-total-time"]) >= int(got["x-inference-time"]) >= 100

    # Many callers at once, one upstream call at a time: most wait in the proxy's queue while
    # a 150 ms batch runs, and say so in x-queue-time; each counts its own characters.
    texts = ["a" * (i + 1) for i in range(40)]
    answers = await asyncio.gather(
        *(headers_of(http, proxy.url + "/embed", {"inputs": [t]}) for t in texts)
    )
    for text, (h, _) in zip(texts, answers, strict=True):
        assert set(h) == set(NAMES)
        assert int(h["x-compute-characters"]) == len(text)
        assert int(h["x-total-time"]) >= int(h["x-queue-time"])
    assert max(int(h["x-queue-time"]) for h, _ in answers) >= 100


async def test_token_ids_and_openai(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    _, proxy = pair
    h, _ = await headers_of(http, proxy.url + "/embed", {"inputs": [[1, 2, 3, 4], "de"]})
    assert h["x-compute-characters"] == "6"  # token ids count one each
    h, body = await headers_of(http, proxy.url + "/v1/embeddings", {"input": ["abc", "de"]})
    assert h["x-compute-characters"] == "5"
    assert int(h["x-compute-tokens"]) == body["usage"]["prompt_tokens"]  # type: ignore[index]
