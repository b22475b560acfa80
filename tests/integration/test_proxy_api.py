"""The proxy between real processes on loopback: callers, proxy, TEI simulator."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess

import aiohttp
import pytest
from tests.helpers.calls import JSON, close, embed, metrics
from tests.helpers.processes import PYTHON, Process, Starter

from embedding_proxy.simulator.vectors import embedding


async def test_concurrent_single_callers_each_get_their_own_vector(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    texts = [f"caller number {i} says hello" for i in range(200)]
    answers = await asyncio.gather(*(embed(http, proxy.url, {"inputs": t}) for t in texts))
    for text, (status, body) in zip(texts, answers, strict=True):
        assert status == 200
        assert isinstance(body, list) and len(body) == 1
        assert close(body[0], embedding(text))
    m = await metrics(http, proxy.url)
    batches, inputs = m["embedding_proxy_batch_size_count"], m["embedding_proxy_batch_size_sum"]
    assert inputs == 200
    assert batches < 200  # coalesced
    single = m["embedding_proxy_batch_size_bucket{le=1.0}"]
    assert single < batches / 2  # most upstream calls carry more than one input
    assert m["embedding_proxy_batch_size_bucket{le=32.0}"] == batches  # TEI's cap: 32


async def test_multi_input_requests_keep_their_order(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    requests = [[f"r{r} item {i}" for i in range(7)] for r in range(30)]
    answers = await asyncio.gather(*(embed(http, proxy.url, {"inputs": r}) for r in requests))
    for texts, (status, body) in zip(requests, answers, strict=True):
        assert status == 200
        assert [close(v, embedding(t)) for v, t in zip(body, texts, strict=True)] == [True] * 7


async def test_a_request_larger_than_tei_allows_is_spread_and_reassembled(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    texts = [f"big request item {i}" for i in range(100)]  # TEI takes 32 at most
    status, body = await embed(http, proxy.url, {"inputs": texts})
    assert status == 200
    assert all(close(v, embedding(t)) for v, t in zip(body, texts, strict=True))


async def test_groups_with_different_parameters_are_never_mixed(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    calls = [
        {"inputs": f"text {i}", "normalize": i % 2 == 0, **({"dimensions": 64} if i % 3 else {})}
        for i in range(120)
    ]
    answers = await asyncio.gather(*(embed(http, proxy.url, c) for c in calls))
    for call, (status, body) in zip(calls, answers, strict=True):
        assert status == 200
        expected = embedding(
            call["inputs"], normalize=call["normalize"], dimensions=call.get("dimensions")
        )
        assert close(body[0], expected)


async def test_batch_size_setting_caps_upstream_calls(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    proxy = start_proxy(simulator.url, "--max-batch-size", "8", ready_path="/ready")
    await asyncio.gather(*(embed(http, proxy.url, {"inputs": f"t{i}"}) for i in range(100)))
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_batch_size_sum"] == 100
    assert m["embedding_proxy_batch_size_bucket{le=8.0}"] == m["embedding_proxy_batch_size_count"]


async def test_single_form(http: aiohttp.ClientSession, proxy: Process) -> None:
    status, body = await embed(http, proxy.url, {"input": "just one"})
    assert status == 200
    assert close(body["embedding"], embedding("just one"))


async def test_openai_float_and_base64_agree(http: aiohttp.ClientSession, proxy: Process) -> None:
    got = {}
    for encoding in ("float", "base64"):
        async with http.post(
            proxy.url + "/v1/embeddings",
            json={"input": ["alpha", "beta"], "model": "any", "encoding_format": encoding},
        ) as resp:
            assert resp.status == 200
            got[encoding] = await resp.json()
    floats = [d["embedding"] for d in got["float"]["data"]]
    decoded = []
    for d in got["base64"]["data"]:
        raw = base64.b64decode(d["embedding"])
        decoded.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))
    assert all(close(a, b) for a, b in zip(floats, decoded, strict=True))
    assert close(floats[1], embedding("beta"))
    assert [d["index"] for d in got["base64"]["data"]] == [0, 1]
    assert got["float"]["usage"]["prompt_tokens"] > 0


def test_official_openai_client_works(proxy: Process) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(input=["first text", "second text"], model="any")
    assert [d.index for d in result.data] == [0, 1]
    assert close(result.data[0].embedding, embedding("first text"))
    assert close(result.data[1].embedding, embedding("second text"))
    assert result.usage.total_tokens > 0


def test_tei_client_works(proxy: Process) -> None:
    from tei_client import HttpClient

    client = HttpClient(proxy.url)
    assert client.health()
    vectors = client.embed(["one", "two"])
    assert close(vectors[0], embedding("one")) and close(vectors[1], embedding("two"))


async def test_other_routes_are_forwarded(
    http: aiohttp.ClientSession, proxy: Process, simulator: Process
) -> None:
    async with http.get(proxy.url + "/info") as via_proxy, http.get(simulator.url + "/info") as d:
        assert via_proxy.status == 200
        assert await via_proxy.json() == await d.json()


async def test_bad_requests_get_tei_errors(http: aiohttp.ClientSession, proxy: Process) -> None:
    cases = [
        (b"{nope", JSON, 400),
        (b'{"inputs": []}', JSON, 400),
        (b'{"inputs": 3}', JSON, 422),
        (b'{"inputs": "x"}', {"Content-Type": "text/plain"}, 415),
        (b'{"inputs": "' + b"x" * 2_100_000 + b'"}', JSON, 413),
    ]
    for raw, headers, status in cases:
        async with http.post(proxy.url + "/embed", data=raw, headers=headers) as resp:
            assert resp.status == status, raw[:30]
            body = await resp.json()
            assert body["error"] and body["error_type"]


async def test_full_queue_answers_429(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    slow = start_simulator("--no-internal-batching", "--base-ms", "200")
    proxy = start_proxy(
        slow.url,
        "--queue-capacity",
        "4",
        "--max-concurrency",
        "1",
        "--max-batch-size",
        "1",
        ready_path="/ready",
    )
    answers = await asyncio.gather(
        *(embed(http, proxy.url, {"inputs": f"q{i}"}) for i in range(12))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(429) >= 5
    assert 200 in statuses
    rejected = next(body for status, body in answers if status == 429)
    assert rejected["error_type"] == "Overloaded"
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_rejections_total{reason=queue_full}"] >= 5


def test_invalid_config_exits_with_a_clear_message() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "embedding_proxy.cli", "serve", "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "batching.max_batch_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("env", [{"EMBEDDING_PROXY_BATCHING__FLUSH_MODE": "sometimes"}])
def test_invalid_environment_exits_with_a_clear_message(env: dict[str, str]) -> None:
    import os

    result = subprocess.run(
        [PYTHON, "-m", "embedding_proxy.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert "batching.flush_mode" in result.stderr
