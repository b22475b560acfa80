"""TEI's other doors to the same work are batched as TEI serves them (router/src/http/server.rs,
`run`): `POST /` and `/invocations` by /info's model type (embedding: /embed, classifier:
/predict; a reranker's /rerank is forwarded), `/embeddings` as `/v1/embeddings`, `/vertex` one
request per instance; and OpenAI's `GET /v1/models/{id}`. Real processes: the simulator (an
embedding model), or a scripted peer where a test needs another model type."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest
from tests.helpers.calls import metrics, upstream_calls, wait_ready
from tests.helpers.processes import Process, Starter
from tests.helpers.scripted import INFO, Received, Reply, answer, scripted, tei_like

JSON = [("Content-Type", "application/json")]


@pytest.fixture
def pair(start_simulator: Starter, start_proxy: Starter) -> tuple[Process, Process]:
    sim = start_simulator()
    # One upstream call at a time: concurrent callers must share batches.
    return sim, start_proxy(sim.url, "--max-concurrency", "1", ready_path="/ready")


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, object]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_root_and_sagemaker_are_batched_as_embed(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    texts = [f"text number {i}" for i in range(40)]
    for path in ("/", "/invocations"):
        direct = await asyncio.gather(*(post(http, sim.url + path, {"inputs": t}) for t in texts))
        before = await upstream_calls(http, sim)
        through = await asyncio.gather(
            *(post(http, proxy.url + path, {"inputs": t}) for t in texts)
        )
        assert through == direct  # each caller its own vector, as TEI's own / answers
        after = await upstream_calls(http, sim)
        assert after.get(path, 0) == before.get(path, 0)  # none sent as they came
        assert 0 < after["/embed"] - before.get("/embed", 0) < len(texts)  # batched
        # More inputs than TEI's max_client_batch_size (32): spread over batches, not refused.
        status, vectors = await post(http, proxy.url + path, {"inputs": texts})
        assert status == 200 and vectors == [v[0] for _, v in direct]  # type: ignore[index]


async def test_embeddings_without_v1_is_openais_route_batched(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    client = openai.AsyncOpenAI(base_url=proxy.url, api_key="unused", max_retries=0)
    direct = openai.AsyncOpenAI(base_url=sim.url, api_key="unused", max_retries=0)
    texts = [f"sentence {i}" for i in range(24)]
    before = await upstream_calls(http, sim)
    got = await asyncio.gather(*(client.embeddings.create(input=t, model="m") for t in texts))
    after = await upstream_calls(http, sim)
    assert after.get("/embeddings", 0) == before.get("/embeddings", 0)
    assert 0 < after["/embed"] - before.get("/embed", 0) < len(texts)
    for text, answer_ in zip(texts, got, strict=True):
        own = await direct.embeddings.create(input=text, model="m")
        assert answer_.data[0].embedding == own.data[0].embedding
        assert answer_.model == own.model
    metrics_text = await metrics(http, proxy.url)
    assert metrics_text["embedding_proxy_requests_total{route=/embeddings,status=200}"] == 24


async def test_vertex_instances_are_batched_and_answered_in_order(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    instances = [{"inputs": "a"}, {"inputs": ["b", "c"]}, {"inputs": "d", "normalize": False}]
    status, body = await post(http, proxy.url + "/vertex", {"instances": instances})
    assert status == 200
    expected = [(await post(http, sim.url + "/embed", i))[1] for i in instances]
    assert body == {"predictions": expected}
    status, body = await post(http, proxy.url + "/vertex", {"instances": [{"nope": 1}]})
    assert status == 422 and body["error_type"] == "Validation"  # type: ignore[index]


async def test_one_model_by_its_served_name(
    http: aiohttp.ClientSession, pair: tuple[Process, Process]
) -> None:
    sim, proxy = pair
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    name = info.get("served_model_name", info["model_id"])
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    model = await client.models.retrieve(name)
    assert model.id == name and model.object == "model"
    listed = await client.models.list()
    assert [m.id for m in listed.data] == [name]
    async with http.get(proxy.url + "/v1/models/" + name.replace("/", "%2F")) as resp:
        assert resp.status == 200 and (await resp.json())["id"] == name
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("another-model")


def typed(model_type: dict[str, object], answers: dict[str, bytes]):  # type: ignore[no-untyped-def]
    """A scripted TEI of one model type: its /info, and a fixed answer per route (a list of one
    copy per input on the batching routes)."""
    info = orjson.dumps({**orjson.loads(INFO), "model_type": model_type})

    def script(request: Received) -> Reply:
        if request.target == "/info":
            return answer(200, info, JSON), False
        if request.method != "POST":
            return answer(200, b"ok"), False
        one = answers[request.target]
        if request.target == "/predict":
            inputs = orjson.loads(request.body)["inputs"]
            return answer(200, b"[" + b",".join([one] * len(inputs)) + b"]", JSON), False
        return answer(200, one, JSON), False

    return script


async def test_a_classifiers_root_is_batched_as_predict(start_proxy: Starter) -> None:
    label = b'[{"score":0.9,"label":"pos"},{"score":0.1,"label":"neg"}]'
    classifier = {"classifier": {"id2label": {"0": "neg", "1": "pos"}, "label2id": {}}}
    async with scripted(typed(classifier, {"/predict": label})) as upstream:
        proxy = start_proxy(upstream.url)  # /health: the peer runs on this test's loop
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            status, body = await post(s, proxy.url + "/", {"inputs": "great"})
            assert status == 200 and body == orjson.loads(label)  # unnested, as TEI's single
            status, body = await post(s, proxy.url + "/invocations", {"inputs": [["a"], ["b"]]})
            assert status == 200 and body == [orjson.loads(label)] * 2
        assert not upstream.requests_to("/invocations")
        assert [r.target for r in upstream.received if r.method == "POST"] == ["/predict"] * 2


async def test_a_rerankers_root_is_forwarded(start_proxy: Starter) -> None:
    ranks = b'[{"index":0,"score":0.5}]'
    reranker = {"reranker": {"id2label": {"0": "score"}, "label2id": {}}}
    async with scripted(typed(reranker, {"/": ranks})) as upstream:
        proxy = start_proxy(upstream.url)  # /health: the peer runs on this test's loop
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            body = {"query": "q", "texts": ["t"]}
            assert await post(s, proxy.url + "/", body) == (200, orjson.loads(ranks))
        (sent,) = [r for r in upstream.received if r.method == "POST"]
        assert sent.target == "/" and orjson.loads(sent.body) == body


@pytest.mark.parametrize(("served", "expected"), [("served-name", "served-name"), (None, "org/m")])
async def test_openai_answers_name_the_served_model(
    start_proxy: Starter, served: str | None, expected: str
) -> None:
    """TEI 1.9 answers OpenAI calls with its served_model_name (router/src/http/server.rs,
    `openai_embed`); TEI 1.8's /info has none, and its model id stands in."""
    info = {**orjson.loads(INFO), "model_id": "org/m"}
    if served is not None:
        info["served_model_name"] = served

    def script(request: Received) -> Reply:
        if request.target == "/info":
            return answer(200, orjson.dumps(info), JSON), False
        return tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url)
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            status, body = await post(s, proxy.url + "/v1/embeddings", {"input": "a"})
            assert status == 200 and body["model"] == expected  # type: ignore[index]
            async with s.get(proxy.url + "/v1/models") as resp:
                assert [m["id"] for m in (await resp.json())["data"]] == [expected]
