"""Small things a caller of TEI would notice through the proxy, each as TEI does it (router/src/
http/server.rs and axum's extractors): `application/*+json` bodies are JSON, `/predict []` is a
422, TEI's plain-text rejections reach the caller as TEI wrote them, and a NaN score (424) fails
only the caller whose input it was. Real processes."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from tests.helpers.calls import wait_ready
from tests.helpers.processes import Process, Starter
from tests.helpers.scripted import INFO, Received, Reply, answer, scripted

JSON = [("Content-Type", "application/json")]


@pytest.fixture
def pair(start_simulator: Starter, start_proxy: Starter) -> tuple[Process, Process]:
    sim = start_simulator()
    return sim, start_proxy(sim.url, ready_path="/ready")


CONTENT_TYPES = [
    ("application/json", 200),
    ("application/vnd.api+json", 200),
    ("application/merge-patch+json; charset=utf-8", 200),
    ("text/plain", 415),
    ("application/jsonx", 415),
]


async def test_json_bodies_by_axums_rule(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    _, proxy = pair
    for content_type, status in CONTENT_TYPES:
        for path, data in (("/embed", b'{"inputs": "a"}'), ("/v1/embeddings", b'{"input": "a"}')):
            headers = {"Content-Type": content_type}
            async with http.post(proxy.url + path, data=data, headers=headers) as resp:
                assert resp.status == status, (path, content_type, await resp.text())


async def test_predict_of_nothing_is_a_422(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    _, proxy = pair
    async with http.post(proxy.url + "/predict", json={"inputs": []}) as resp:
        assert resp.status == 422  # serde's invalid length 0, as TEI (400 is for /embed's [])
        assert (await resp.json())["error_type"] == "Validation"


async def test_teis_plain_text_rejection_is_passed_on_as_written(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    body = {"inputs": ["a"], "truncate": "yes"}  # TEI's extractor refuses the type
    async with http.post(sim.url + "/embed", json=body) as resp:
        status, text = resp.status, (await resp.text()).strip()
    assert status == 422 and "truncate" in text
    async with http.post(proxy.url + "/embed", json=body) as resp:
        assert resp.status == status
        assert (await resp.json())["error"] == text  # no "upstream answered" in front


async def test_a_nan_score_fails_only_its_own_caller(start_proxy: Starter) -> None:
    release = asyncio.Event()
    batches: list[list[object]] = []

    async def script(request: Received) -> Reply:
        if request.target == "/info":
            return answer(200, INFO, JSON), False
        if request.method != "POST":
            return answer(200, b"ok"), False
        inputs = orjson.loads(request.body)["inputs"]
        batches.append(inputs)
        if inputs == [["blocker"]]:
            await release.wait()
        if ["nan"] in inputs:  # TEI's answer when an input's score is NaN
            return answer(424, b'{"error":"score is NaN","error_type":"Backend"}', JSON), False
        scores = b'[{"score":1.0,"label":"x"}]'
        return answer(200, b"[" + b",".join([scores] * len(inputs)) + b"]", JSON), False

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url, "--max-concurrency", "1")
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)

            async def predict(inputs: list[list[str]]) -> tuple[int, object]:
                async with s.post(proxy.url + "/predict", json={"inputs": inputs}) as resp:
                    return resp.status, await resp.json()

            blocker = asyncio.create_task(predict([["blocker"]]))
            while [["blocker"]] not in batches:
                await asyncio.sleep(0.02)
            bad = asyncio.create_task(predict([["nan"]]))
            good = asyncio.create_task(predict([["fine"]]))
            await asyncio.sleep(0.3)  # both queued behind the blocker
            release.set()
            assert (await blocker)[0] == 200
            status, body = await bad
            assert status == 424 and body["error"] == "score is NaN"  # type: ignore[index]
            assert (await good)[0] == 200
            assert [["nan"], ["fine"]] in batches or [["fine"], ["nan"]] in batches


TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_callers_trace_context_reaches_tei_with_its_batch(start_proxy: Starter) -> None:
    async with scripted() as upstream:
        proxy = start_proxy(upstream.url)
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            for headers in (
                {"traceparent": TRACE, "tracestate": "vendor=x"},
                {},
                {"traceparent": "not-a-trace"},
            ):
                async with s.post(proxy.url + "/embed", json={"inputs": "a"}, headers=headers):
                    pass
        sent = [r for r in upstream.received if r.target == "/embed"]
        assert [(r.header("traceparent"), r.header("tracestate")) for r in sent] == [
            ([TRACE], ["vendor=x"]),
            ([], []),
            ([], []),  # a malformed one is not passed on
        ]
