"""The simulator answers as TEI 1.9.3 does, read against TEI's router (router/src/http/server.rs,
types.rs, lib.rs) and core (core/src/infer.rs, tokenization.rs): one model type at a time, its
permits, CORS, the API key, HEAD, /vertex, mixed inputs; and as TEI 1.8 with `--tei-version 1.8`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
from tests.helpers.calls import post
from tests.helpers.processes import Process, Starter, free_port, simulator_args, start_process

from embedding_proxy.simulator.vectors import embedding

INFERENCE = {
    "/embed": {"inputs": "a b"},
    "/v1/embeddings": {"input": "a b"},
    "/embed_all": {"inputs": "a b"},
    "/embed_sparse": {"inputs": "a b"},
    "/similarity": {"inputs": {"source_sentence": "a", "sentences": ["b"]}},
    "/predict": {"inputs": ["q", "a"]},
    "/rerank": {"query": "q", "texts": ["a"]},
}
# server.rs and core/src/infer.rs: what each model type refuses, with TEI's message.
REFUSED = {
    "embedding": {
        "/embed_sparse": "Model is not an embedding model with SPLADE pooling",
        "/predict": "Model is not a classifier model",
        "/rerank": "model is not a re-ranker model",
    },
    "splade": {
        "/embed": "`normalize` is not available for SPLADE models",
        "/v1/embeddings": "`normalize` is not available for SPLADE models",
        "/embed_all": "`embed_all` is not available for SPLADE models",
        "/predict": "Model is not a classifier model",
        "/rerank": "model is not a re-ranker model",
    },
    "classifier": {
        "/embed": "Model is not an embedding model",
        "/v1/embeddings": "Model is not an embedding model",
        "/embed_all": "Model is not an embedding model",
        "/embed_sparse": "Model is not an embedding model with SPLADE pooling",
        "/similarity": "Model is not an embedding model",
        "/rerank": "model is not a re-ranker model",
    },
    "reranker": {
        "/embed": "Model is not an embedding model",
        "/v1/embeddings": "Model is not an embedding model",
        "/embed_all": "Model is not an embedding model",
        "/embed_sparse": "Model is not an embedding model with SPLADE pooling",
        "/similarity": "Model is not an embedding model",
    },
}


@pytest.fixture(scope="module", params=list(REFUSED))
def typed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    port = free_port()
    log = tmp_path_factory.mktemp("typed") / "simulator.log"
    process = start_process(simulator_args(port, "--model-type", request.param), port, log)
    process.args.append(request.param)
    yield process
    process.stop()


async def test_each_model_type_serves_its_routes_and_refuses_the_others_with_424(
    http: aiohttp.ClientSession, typed: Process
) -> None:
    model_type = typed.args[-1]
    for route, body in INFERENCE.items():
        status, answer, _ = await post(http, typed.url + route, body)
        refusal = REFUSED[model_type].get(route)
        if refusal is None:
            assert status == 200, (route, answer)
        elif route == "/v1/embeddings":
            assert (status, answer) == (
                424,
                {"message": f"Backend error: {refusal}", "code": 424, "type": "Backend"},
            )
        else:
            assert (status, answer) == (
                424,
                {"error": f"Backend error: {refusal}", "error_type": "Backend"},
            ), route
    async with http.get(typed.url + "/info") as resp:
        shape = (await resp.json())["model_type"]
    expected = {
        "embedding": {"embedding": {"pooling": "cls"}},
        "splade": {"embedding": {"pooling": "splade"}},
        "classifier": {
            "classifier": {
                "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
                "label2id": {"LABEL_0": 0, "LABEL_1": 1},
            }
        },
        "reranker": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
    }
    assert shape == expected[model_type]
    # POST / and /invocations run the type's own route.
    own = {"embedding": "/embed", "splade": "/embed_sparse", "classifier": "/predict"}
    route = own.get(model_type, "/rerank")
    want = await post(http, typed.url + route, INFERENCE[route])
    for path in ("/", "/invocations"):
        got = await post(http, typed.url + path, INFERENCE[route])
        assert got[:2] == want[:2] and got[0] == 200


async def test_a_rerankers_predict_scores_a_pair_as_rerank_does(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--model-type", "reranker")
    _, ranks, _ = await post(http, sim.url + "/rerank", {"query": "q", "texts": ["a", "b", "a"]})
    _, labels, _ = await post(http, sim.url + "/predict", {"inputs": [["q", "a"], ["q", "b"]]})
    by_index = {r["index"]: r["score"] for r in ranks}
    assert [label[0]["score"] for label in labels] == [by_index[0], by_index[1]]
    assert labels[0][0]["label"] == "LABEL_0" and 0 < by_index[0] < 1  # a sigmoid
    # Equal scores: TEI sorts ascending and reverses, so the later index comes first.
    assert [r["index"] for r in ranks if r["score"] == by_index[0]] == [2, 0]


async def test_predict_and_rerank_compute_the_inputs_that_got_permits_then_answer_429(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    # server.rs: each input of /rerank tries for its own permit inside the joined futures.
    sim = start_simulator("--model-type", "reranker", "--max-concurrent-requests", "3")
    status, body, _ = await post(http, sim.url + "/rerank", {"query": "q", "texts": list("abcde")})
    assert (status, body) == (429, {"error": "Model is overloaded", "error_type": "Overloaded"})
    async with http.get(sim.url + "/simulator/stats") as resp:
        assert (await resp.json())["inputs_total"] == 3


async def test_mixed_batches_and_headers_for_token_ids(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--served-model-name", "served", "--default-prompt", "query: ")
    status, body, headers = await post(http, sim.url + "/embed", {"inputs": ["a b", [7, 8, 9]]})
    assert status == 200
    # The default prompt applies to texts and ids alike (core/src/tokenization.rs).
    assert body[0] == embedding("query: a b")
    assert headers["x-compute-characters"] == str(3 + 3)  # a text's characters, one per id
    assert headers["x-compute-tokens"] == str(5 + 6)
    _, answer, _ = await post(http, sim.url + "/v1/embeddings", {"input": "x", "model": "other"})
    assert answer["model"] == "served"
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    assert info["served_model_name"] == "served" and info["model_id"] != "served"


async def test_cors_any_origin_by_default_and_narrowed_on_request(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    sim = start_simulator("--api-key", "k")
    async with http.options(sim.url + "/embed", headers=preflight) as resp:
        # tower-http's CorsLayer answers the preflight itself, before the API key is asked.
        assert resp.status == 200 and await resp.read() == b""
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Allow-Methods"] == "GET,POST"
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
    status, _, headers = await post(http, sim.url + "/embed", {"inputs": "x"}, headers=preflight)
    assert status == 401 and headers["Access-Control-Allow-Origin"] == "*"
    assert "origin" in headers["Vary"]

    narrow = start_simulator("--cors-allow-origin", "https://a.example")
    for origin, allowed in (("https://a.example", True), ("https://b.example", False)):
        status, _, headers = await post(
            http, narrow.url + "/embed", {"inputs": "x"}, headers={"Origin": origin}
        )
        assert status == 200
        assert headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


async def test_api_key_head_and_unknown_paths(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--api-key", "k")
    auth = {"Authorization": "Bearer k"}
    assert (await post(http, sim.url + "/", {"inputs": "x"}))[0] == 401  # POST / is TEI's embed
    assert (await post(http, sim.url + "/", {"inputs": "x"}, headers=auth))[0] == 200
    assert (await post(http, sim.url + "/vertex", {"instances": []}))[0] == 401
    for path, status in (("/", 200), ("/health", 200), ("/info", 401), ("/nothing", 404)):
        async with http.get(sim.url + path) as resp:
            assert resp.status == status, path
    async with http.head(sim.url + "/info", headers=auth) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) > 100
        assert await resp.read() == b""
    async with http.head(sim.url + "/metrics") as resp:
        assert resp.status == 200


async def test_vertex_answers_each_instance_by_the_route_the_model_serves(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator()
    body = {"instances": [{"inputs": "a"}, {"inputs": ["b", "c"], "dimensions": 8}]}
    status, answer, headers = await post(http, sim.url + "/vertex", body)
    assert status == 200 and "x-compute-tokens" not in headers
    assert answer == {"predictions": [[embedding("a")], [embedding(t, dimensions=8) for t in "bc"]]}
    # A re-rank request goes to /rerank whatever the model: here an embedding model refuses it.
    status, answer, _ = await post(
        http, sim.url + "/vertex", {"instances": [{"inputs": "a"}, {"query": "q", "texts": []}]}
    )
    assert (status, answer["error_type"]) == (400, "Empty")
    # An instance that does not read is a Validation error with serde's own message.
    status, answer, _ = await post(http, sim.url + "/vertex", {"instances": [{"input": "a"}]})
    assert (status, answer) == (
        422,
        {"error": "missing field `inputs`", "error_type": "Validation"},
    )


async def test_tei_1_8(http: aiohttp.ClientSession, start_simulator: Starter) -> None:
    sim = start_simulator("--tei-version", "1.8", "--served-model-name", "ignored")
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    assert info["version"] == "1.8.3" and "served_model_name" not in info
    assert info["auto_truncate"] is False  # off by default before 1.9
    status, body, _ = await post(http, sim.url + "/embed", {"inputs": "w " * 600})
    assert (status, body["error_type"]) == (413, "Validation")  # 413, not 422, up to 1.8
    status, body, _ = await post(http, sim.url + "/v1/embeddings", {"input": ["x"] * 33})
    assert status == 413 and body["code"] == 413
    _, answer, _ = await post(http, sim.url + "/v1/embeddings", {"input": "x"})
    assert answer["model"] == info["model_id"]


async def test_a_caller_that_leaves_a_vertex_request_leaves_no_permit_behind(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--base-ms", "300", "--max-concurrent-requests", "2")
    with pytest.raises(asyncio.TimeoutError):
        await post(
            http,
            sim.url + "/vertex",
            {"instances": [{"inputs": "a"}, {"inputs": "b"}]},
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    await asyncio.sleep(0.5)
    status, _, _ = await post(http, sim.url + "/embed", {"inputs": ["c", "d"]})
    assert status == 200
