"""A key-protected TEI stays protected through the proxy: with `upstream.api_key_file` and no keys
of its own, the proxy lets through only callers who present TEI's own key, checked as TEI checks
it (the whole `Authorization` header equal to `Bearer <key>`: router/src/http/server.rs, the
`auth` middleware), on batched and forwarded routes alike. Real processes: the simulator with
`--api-key`, the proxy in front of it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from tests.helpers.processes import Process, Starter

KEY = "s3cret-key"
# (method, path, body): batched routes, OpenAI's, and routes the proxy forwards.
CALLS = [
    ("POST", "/embed", {"inputs": ["a", "b"]}),
    ("POST", "/embed", {"input": "a"}),  # the proxy's own short form
    ("POST", "/v1/embeddings", {"input": "a"}),
    ("POST", "/tokenize", {"inputs": "a"}),
    ("POST", "/rerank", {"query": "q", "texts": ["t"]}),
    ("POST", "/decode", {"ids": [1, 2]}),
    ("POST", "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    ("GET", "/info", None),
    ("GET", "/v1/models", None),
]


@pytest.fixture
def guarded(
    start_simulator: Starter, start_proxy: Starter, tmp_path: Path
) -> tuple[Process, Process]:
    sim = start_simulator("--api-key", KEY)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    proxy = start_proxy(sim.url, "--upstream-api-key-file", str(key_file), ready_path="/ready")
    return sim, proxy


async def call(
    http: aiohttp.ClientSession, url: str, method: str, body: object, auth: str | None
) -> int:
    headers = {"Authorization": auth} if auth is not None else {}
    async with http.request(method, url, json=body, headers=headers) as resp:
        await resp.read()
        return resp.status


WRONG = [
    None,
    "Bearer no",
    f"bearer {KEY}",
    f"Bearer  {KEY}",
    f"Basic {KEY}",
    KEY,
    f"Bearer {KEY}x",
]


async def test_without_teis_key_every_route_is_refused_as_tei_refuses_it(
    http: aiohttp.ClientSession, guarded: tuple[Process, Process]
) -> None:
    sim, proxy = guarded
    for auth in WRONG:
        for method, path, body in CALLS:
            if path != "/v1/models":  # TEI has no such route; the rest it refuses itself
                assert await call(http, sim.url + path, method, body, auth) == 401, (path, auth)
            assert await call(http, proxy.url + path, method, body, auth) == 401, (path, auth)


async def test_with_teis_key_every_route_answers_as_tei_does(
    http: aiohttp.ClientSession, guarded: tuple[Process, Process]
) -> None:
    sim, proxy = guarded
    auth = f"Bearer {KEY}"
    for method, path, body in CALLS:
        through = await call(http, proxy.url + path, method, body, auth)
        if path == "/v1/models" or body == {"input": "a"}:
            assert through == 200, path  # the proxy's own answers
        else:
            assert through == await call(http, sim.url + path, method, body, auth), path
            assert through != 401, path


async def test_probes_and_metrics_need_no_key(
    http: aiohttp.ClientSession, guarded: tuple[Process, Process]
) -> None:
    _, proxy = guarded
    for path in ("/health", "/ready", "/metrics"):
        async with http.get(proxy.url + path) as resp:
            assert resp.status == 200, path
