"""`simulate-tei --backend torch`: a real (tiny, random-weight) encoder behind TEI's API, as a real
process over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest
from tests.helpers.processes import PYTHON, Process, free_port, start_process
from tests.helpers.tools import require_torch

from embedding_proxy.simulator.torch_backend import MODELS

JSON = {"Content-Type": "application/json"}
TINY = MODELS["tiny"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    require_torch()
    port = free_port()
    args = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--backend", "torch", "--model", "tiny", "--device", "cpu", "--torch-threads", "1"]
    log = tmp_path_factory.mktemp("torch-sim") / "simulator.log"
    # Importing torch and building the model takes seconds on a busy machine.
    process = start_process(args, port, log, timeout=120)
    yield process
    process.stop()


async def embed(http: aiohttp.ClientSession, sim: Process, body: object) -> list[list[float]]:
    async with http.post(sim.url + "/embed", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


async def test_info_names_the_model(http: aiohttp.ClientSession, sim: Process) -> None:
    async with http.get(sim.url + "/info") as resp:
        info = await resp.json()
    assert info["model_id"] == "embedding-proxy/random-tiny"
    assert info["model_dtype"] == "float32"  # on the CPU
    assert info["model_type"] == {"embedding": {"pooling": TINY.pooling}}
    assert "tiny" in sim.output() and "float32 on CPU" in sim.output()


async def test_vectors_are_the_models_normalised_deterministic_and_distinct(
    http: aiohttp.ClientSession, sim: Process
) -> None:
    texts = ["the cat sat", "the cat sat on the mat", "sat cat the", "a", "the cat sat"]
    first = await embed(http, sim, {"inputs": texts})
    assert all(len(v) == TINY.hidden for v in first)
    assert all(math.isclose(norm(v), 1.0, abs_tol=1e-5) for v in first)
    assert first[0] == first[4]  # the same text in one batch
    assert await embed(http, sim, {"inputs": texts}) == first  # and the same batch again
    distinct = {tuple(v) for v in first[:4]}
    assert len(distinct) == 4  # word order matters to an encoder: "sat cat the" differs too

    raw = await embed(http, sim, {"inputs": texts[0], "normalize": False})
    assert not math.isclose(norm(raw[0]), 1.0, abs_tol=1e-3)
    assert close([x / norm(raw[0]) for x in raw[0]], first[0], 1e-5)
    cut = await embed(http, sim, {"inputs": texts[0], "normalize": False, "dimensions": 8})
    assert close(cut[0], raw[0][:8], 1e-6)  # Matryoshka: first d components ...
    short = await embed(http, sim, {"inputs": texts[0], "dimensions": 8})
    assert close(short[0], [x / norm(cut[0]) for x in cut[0]], 1e-5)  # ... then normalised


async def test_batch_answers_equal_single_answers(
    http: aiohttp.ClientSession, sim: Process
) -> None:
    # Different lengths, so the batch pads the shorter inputs: the mask must make that invisible.
    texts = [" ".join(f"w{j}" for j in range(i + 1)) for i in range(24)]
    batch = await embed(http, sim, {"inputs": texts})
    singles = await asyncio.gather(*(embed(http, sim, {"inputs": t}) for t in texts))
    for b, (s,) in zip(batch, singles, strict=True):
        assert close(b, s), "a vector changed with the batch it was computed in"
    ids = await embed(http, sim, {"inputs": [[1000, 2000, 3000]]})
    assert len(ids[0]) == TINY.hidden and ids[0] not in batch


async def test_openai_and_similarity_answer_the_same_vectors(
    http: aiohttp.ClientSession, sim: Process
) -> None:
    (vector,) = await embed(http, sim, {"inputs": "query text"})
    body = {"input": ["query text"], "encoding_format": "base64"}
    async with http.post(sim.url + "/v1/embeddings", json=body) as resp:
        answer = await resp.json()
    raw = base64.b64decode(answer["data"][0]["embedding"])
    assert close(list(struct.unpack(f"<{TINY.hidden}f", raw)), vector, 1e-6)
    body = {"inputs": {"source_sentence": "query text", "sentences": ["query text", "other"]}}
    async with http.post(sim.url + "/similarity", json=body) as resp:
        same, other = await resp.json()
    assert math.isclose(same, 1.0, abs_tol=1e-5) and other < same


def test_missing_torch_is_one_clear_line() -> None:
    # torch made unimportable in the child: the backend must say what to install, not trace back.
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from embedding_proxy.simulator.__main__ import main; "
        "sys.exit(main(['--backend', 'torch', '--port', '0']))"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "needs torch and transformers" in done.stderr
    assert "embedding-proxy[torch]" in done.stderr and "Traceback" not in done.stderr
