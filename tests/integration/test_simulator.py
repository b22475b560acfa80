"""The TEI simulator as a real process on loopback, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from array import array
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from tests.helpers.calls import metrics, post
from tests.helpers.processes import Process, Starter, free_port, simulator_args, start_process

from embedding_proxy.simulator.tokens import count_tokens
from embedding_proxy.simulator.vectors import embedding

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One default simulator shared by the tests that do not change its state."""
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    process = start_process(simulator_args(port), port, log)
    yield process
    process.stop()


async def test_embed_answers_each_input_its_own_vector_in_order(
    http: aiohttp.ClientSession, sim: Process
) -> None:
    status, body, headers = await post(http, sim.url + "/embed", {"inputs": "What is it?"})
    assert status == 200 and body == [embedding("What is it?")]
    assert headers["x-compute-tokens"] == str(count_tokens("What is it?"))
    assert headers["x-compute-characters"] == str(len("What is it?"))
    assert headers["x-compute-type"] == "gpu+optimized"
    for name in ("x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert int(headers[name]) >= 0

    texts = [f"text number {i}" for i in range(32)]
    status, body, headers = await post(http, sim.url + "/embed", {"inputs": texts})
    assert status == 200 and body == [embedding(t) for t in texts]
    assert headers["x-compute-tokens"] == str(sum(count_tokens(t) for t in texts))

    status, body, _ = await post(
        http, sim.url + "/embed", {"inputs": ["a", "b"], "normalize": False, "dimensions": 16}
    )
    assert body == [embedding(t, normalize=False, dimensions=16) for t in "ab"]
    status, body, _ = await post(http, sim.url + "/embed", {"inputs": [[7, 8, 9], [10]]})
    assert body == [embedding([7, 8, 9]), embedding([10])]
    status, body, _ = await post(http, sim.url + "/embed", {"inputs": "x", "prompt_name": "query"})
    assert body == [embedding("query: x")]


async def test_openai_route_float_and_base64(http: aiohttp.ClientSession, sim: Process) -> None:
    request = {"input": ["alpha", "beta gamma"], "model": "whatever", "dimensions": 32}
    _, floats, headers = await post(http, sim.url + "/v1/embeddings", request)
    assert floats["object"] == "list" and floats["model"] == "embedding-proxy/tei-simulator"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["data"][1] == {
        "object": "embedding",
        "embedding": embedding("beta gamma", dimensions=32),
        "index": 1,
    }
    tokens = count_tokens("alpha") + count_tokens("beta gamma")
    assert floats["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert headers["x-compute-tokens"] == str(tokens)
    _, b64, _ = await post(http, sim.url + "/embeddings", {**request, "encoding_format": "base64"})
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert array("f", raw) == array("f", embedding("alpha", dimensions=32))  # the same float32s


@pytest.mark.parametrize(
    ("route", "body", "status", "error_type", "message"),
    [
        ("/embed", {"inputs": ["x"] * 33}, 422, "Validation", "batch size 33 > maximum allowed"),
        (
            "/embed",
            {"inputs": "w " * 600, "truncate": False},
            422,
            "Validation",
            "must have less than 512 tokens",
        ),
        ("/embed", {"inputs": [""] * 40}, 422, "Validation", "batch size 40 > maximum allowed"),
        ("/embed", {"inputs": []}, 400, "Empty", "Input validation error: `inputs` cannot be"),
        ("/embed", {"inputs": ["ok", ""]}, 400, "Empty", "`inputs` cannot be empty"),
        ("/embed", {"inputs": "x", "dimensions": 0}, 422, "Validation", "should be positive"),
        ("/embed", {"inputs": "x", "dimensions": 769}, 422, "Validation", "maximum embedding"),
        ("/embed", {"inputs": "x", "prompt_name": "nope"}, 422, "Validation", "Available prompts"),
        ("/tokenize", {"inputs": "x" * 128_001}, 422, "Validation", "less than 128000 characters"),
        ("/tokenize", {"inputs": [""]}, 400, "Empty", "cannot be empty"),
        ("/decode", {"ids": []}, 400, "Empty", "`input_ids` cannot be empty"),
    ],
)
async def test_tei_errors(
    http: aiohttp.ClientSession,
    sim: Process,
    route: str,
    body: object,
    status: int,
    error_type: str,
    message: str,
) -> None:
    got_status, got, _ = await post(http, sim.url + route, body)
    assert got_status == status
    assert set(got) == {"error", "error_type"}
    assert got["error_type"] == error_type and message in got["error"]


async def test_openai_errors_have_the_openai_shape(
    http: aiohttp.ClientSession, sim: Process
) -> None:
    status, body, _ = await post(http, sim.url + "/v1/embeddings", {"input": ["x"] * 40})
    assert status == 422
    assert body == {
        "message": "batch size 40 > maximum allowed batch size 32",
        "code": 422,
        "type": "Validation",
    }


@pytest.mark.parametrize(
    ("data", "headers", "status", "text"),
    [
        (b"{nope", JSON, 400, "Failed to parse the request body as JSON"),
        (b'{"inputs": 3}', JSON, 422, "Failed to deserialize the JSON body into the target type"),
        (b'{"inputs": "x"}', {"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
        (b'{"inputs": "x"}', {}, 415, "Content-Type: application/json"),
        (b'{"inputs": "' + b"x" * 2_000_001 + b'"}', JSON, 413, "length limit exceeded"),
    ],
)
async def test_bodies_refused_before_the_handler_get_plain_text(
    http: aiohttp.ClientSession,
    sim: Process,
    data: bytes,
    headers: dict[str, str],
    status: int,
    text: str,
) -> None:
    async with http.post(sim.url + "/embed", data=data, headers=headers) as resp:
        assert resp.status == status
        assert resp.content_type == "text/plain"
        assert text in await resp.text()


async def test_truncation(http: aiohttp.ClientSession, sim: Process) -> None:
    words = [f"w{i}" for i in range(600)]
    for direction, kept in (("Right", words[:510]), ("left", words[-510:])):
        status, body, headers = await post(
            http,
            sim.url + "/embed",
            {"inputs": " ".join(words), "truncate": True, "truncation_direction": direction},
        )
        assert status == 200 and body == [embedding(" ".join(kept))]
        assert headers["x-compute-tokens"] == "512"


async def test_info_health_and_unknown_routes(http: aiohttp.ClientSession, sim: Process) -> None:
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    assert info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["max_client_batch_size"] == 32 and info["max_batch_tokens"] == 16384
    assert info["max_concurrent_requests"] == 512 and info["max_input_length"] == 512
    assert info["auto_truncate"] is True and info["max_batch_requests"] is None
    assert info["version"] == "1.9.3" and info["served_model_name"] == info["model_id"]
    assert {"model_id", "model_dtype", "version", "tokenization_workers"} <= set(info)
    async with http.get(sim.url + "/health") as resp:
        assert resp.status == 200
    async with http.get(sim.url + "/nothing") as resp:
        assert resp.status == 404 and await resp.read() == b""
    async with http.get(sim.url + "/embed") as resp:
        assert resp.status == 405


async def test_tokenizer_and_unpooled_routes(http: aiohttp.ClientSession, sim: Process) -> None:
    _, tokens, _ = await post(http, sim.url + "/tokenize", {"inputs": ["hello big world"]})
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "hello", "big", "world", "[SEP]"]
    assert tokens[0][2] == {**tokens[0][2], "special": False, "start": 6, "stop": 9}
    _, texts, _ = await post(http, sim.url + "/decode", {"ids": [[t["id"] for t in tokens[0]]]})
    assert texts == ["hello big world"]

    _, every, _ = await post(http, sim.url + "/embed_all", {"inputs": "a b"})
    assert len(every) == 1 and len(every[0]) == 4 and len(every[0][0]) == 768
    _, sims, _ = await post(
        http, sim.url + "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["a", "b"]}}
    )
    assert abs(sims[0] - 1) < 1e-5 and abs(sims[1]) < 0.5


async def test_concurrent_callers_share_forward_passes(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--base-ms", "20")
    texts = [f"caller {i}" for i in range(64)]
    answers = await asyncio.gather(*(post(http, sim.url + "/embed", {"inputs": t}) for t in texts))
    assert [body for _, body, _ in answers] == [[embedding(t)] for t in texts]
    m = await metrics(http, sim.url)
    passes = m["tei_simulator_forward_passes_total"]
    assert m["tei_simulator_inputs_total"] == m["tei_simulator_batch_size_sum"] == 64
    assert passes < 64 and m["tei_simulator_batch_size_bucket{le=1.0}"] < passes
    assert m["tei_simulator_requests_total{route=/embed,status=200}"] == 64
    async with http.get(sim.url + "/simulator/stats") as resp:
        stats = await resp.json()
    assert stats["inputs_total"] == 64 and stats["forward_passes"] == passes
    assert stats["max_batch_size"] > 1


async def test_without_internal_batching_every_pass_is_one_request(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--no-internal-batching", "--base-ms", "2")
    await asyncio.gather(*(post(http, sim.url + "/embed", {"inputs": f"t{i}"}) for i in range(24)))
    await post(http, sim.url + "/embed", {"inputs": ["a", "b", "c"]})
    async with http.get(sim.url + "/simulator/stats") as resp:
        stats = await resp.json()
    assert stats["batch_sizes"] == {"1": 24, "3": 1}


async def singles_then_a_batch(
    http: aiohttp.ClientSession, sim: Process
) -> tuple[list[int], tuple[int, object, float]]:
    """Ten single inputs at once against 4 permits, then, while 2 of them are still held, a batch
    of 3 inputs: the singles' statuses, and the batch's status, body and seconds taken."""
    loop = asyncio.get_running_loop()
    singles = [post(http, sim.url + "/embed", {"inputs": f"s{i}"}) for i in range(10)]
    answers = await asyncio.gather(*singles)
    holders = [
        asyncio.create_task(post(http, sim.url + "/embed", {"inputs": f"h{i}"})) for i in range(2)
    ]
    await asyncio.sleep(0.1)
    started = loop.time()
    status, body, _ = await post(http, sim.url + "/embed", {"inputs": ["b0", "b1", "b2"]})
    took = loop.time() - started
    await asyncio.gather(*holders)
    refused = next(body for status, body, _ in answers if status == 429)
    assert refused == {"error": "Model is overloaded", "error_type": "Overloaded"}
    return sorted(status for status, _, _ in answers), (status, body, took)


async def test_without_permits_single_inputs_and_batches_get_429_at_once(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    # TEI 1.9 takes a permit per input with try_acquire, in a batch too (server.rs `embed`).
    # Permits are held for at least 400 ms: time enough for all ten callers to arrive.
    sim = start_simulator("--max-concurrent-requests", "4", "--base-ms", "400")
    statuses, (status, body, took) = await singles_then_a_batch(http, sim)
    assert statuses.count(200) == 4 and statuses.count(429) == 6
    assert status == 429 and body["error_type"] == "Overloaded" and took < 0.3
    async with http.get(sim.url + "/simulator/stats") as resp:
        assert (await resp.json())["inputs_total"] == 6  # the refused batch computed nothing


async def test_tei_1_8_batches_wait_for_permits(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator(
        "--tei-version", "1.8", "--max-concurrent-requests", "4", "--base-ms", "400"
    )
    statuses, (status, body, took) = await singles_then_a_batch(http, sim)
    assert statuses.count(200) == 4 and statuses.count(429) == 6
    assert status == 200 and len(body) == 3 and took > 0.3  # waited for the holders' permits


async def test_callers_that_leave_are_not_computed(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--no-internal-batching", "--base-ms", "300")
    first = asyncio.create_task(post(http, sim.url + "/embed", {"inputs": "stays"}))
    await asyncio.sleep(0.1)
    for i in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await post(
                http,
                sim.url + "/embed",
                {"inputs": f"leaves {i}"},
                timeout=aiohttp.ClientTimeout(total=0.05),
            )
    assert (await first)[0] == 200
    await asyncio.sleep(0.8)  # time for any leftover to be (wrongly) computed
    async with http.get(sim.url + "/simulator/stats") as resp:
        stats = await resp.json()
    assert stats["inputs_total"] == 1 and stats["inflight_inputs"] == 0


async def test_faults(http: aiohttp.ClientSession, start_simulator: Starter) -> None:
    sim = start_simulator("--base-ms", "1")
    faults = sim.url + "/simulator/faults"

    async with http.post(faults, json={"status": 503, "times": 2}) as resp:
        assert resp.status == 200 and (await resp.json())["left"] == 2
    for _ in range(2):
        status, body, _ = await post(http, sim.url + "/embed", {"inputs": "x"})
        assert status == 503 and body["error_type"] == "Unhealthy"
    assert (await post(http, sim.url + "/embed", {"inputs": "x"}))[0] == 200

    async with http.post(faults, json={"body": "<html>oops</html>", "times": 1}):
        pass
    async with http.post(sim.url + "/embed", json={"inputs": "x"}) as resp:
        assert resp.status == 200 and await resp.text() == "<html>oops</html>"

    async with http.post(faults, json={"wrong_count": True, "times": 1}):
        pass
    status, body, _ = await post(http, sim.url + "/embed", {"inputs": ["a", "b"]})
    assert status == 200 and body == [embedding("a")]

    async with http.post(faults, json={"truncate_body": True, "times": 1}):
        pass
    async with http.post(sim.url + "/embed", json={"inputs": ["a", "b"]}) as resp:
        with pytest.raises(ValueError):
            await resp.json()

    async with http.post(faults, json={"delay_ms": 300, "routes": ["/v1/embeddings"]}):
        pass
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await post(http, sim.url + "/embed", {"inputs": "x"}))[0] == 200
    fast = loop.time() - started
    started = loop.time()
    assert (await post(http, sim.url + "/v1/embeddings", {"input": "x"}))[0] == 200
    assert loop.time() - started >= 0.3 > fast
    async with http.delete(faults) as resp:
        assert (await resp.json())["active"] is False

    async with http.post(faults, json={"status": "bad"}) as resp:
        assert resp.status == 400 and "status" in await resp.text()


async def test_api_key(http: aiohttp.ClientSession, start_simulator: Starter) -> None:
    sim = start_simulator("--api-key", "secret")
    assert (await post(http, sim.url + "/embed", {"inputs": "x"}))[0] == 401
    auth = {"Authorization": "Bearer secret"}
    assert (await post(http, sim.url + "/embed", {"inputs": "x"}, headers=auth))[0] == 200
    async with http.get(sim.url + "/health") as resp:
        assert resp.status == 200


def test_bad_flags_exit_2_with_one_line(tmp_path: Path) -> None:
    # An input longer than a batch could never run: without auto-truncate TEI refuses to start.
    flags = ("--max-input-length", "100000", "--auto-truncate", "false")
    result = subprocess.run(
        simulator_args(free_port(), *flags), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "The maximum input length is `100000` which exceeds `--max-batch-tokens=16384`" in (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


async def test_auto_truncate_clamps_the_input_length_to_a_batch(
    http: aiohttp.ClientSession, start_simulator: Starter
) -> None:
    sim = start_simulator("--max-input-length", "100000", "--max-batch-tokens", "64")
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    assert info["max_input_length"] == 64 and info["auto_truncate"] is True
    status, _, headers = await post(http, sim.url + "/embed", {"inputs": "w " * 100})
    assert status == 200 and headers["x-compute-tokens"] == "64"


def test_sigterm_stops_it_cleanly(start_simulator: Starter) -> None:
    sim = start_simulator()
    assert sim.stop() == 0
