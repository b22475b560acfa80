"""What a caller sends reaches TEI as TEI would read it: no parameter is dropped that TEI reads
differently when absent. TEI 1.9 reads a missing `truncate` as its `--auto-truncate`, on by
default (router/src/http/server.rs: `req.truncate.unwrap_or(info.auto_truncate)`), so an explicit
`"truncate": false` must reach it. Real processes: the simulator with `--auto-truncate`, as TEI
1.9 runs by default, and the proxy in front of it."""

from __future__ import annotations

import aiohttp
import pytest
from tests.helpers.processes import Process, Starter

TOO_LONG = "word " * 3000  # far beyond the simulator's 512-token max_input_length


@pytest.fixture
def pairs(start_simulator: Starter, start_proxy: Starter) -> dict[str, tuple[Process, Process]]:
    """An embedding model and a classifier, each behind its own proxy (TEI serves /predict for
    a classifier only)."""
    out = {}
    for model_type in ("embedding", "classifier"):
        sim = start_simulator("--auto-truncate", "--model-type", model_type)
        out[model_type] = (sim, start_proxy(sim.url, ready_path="/ready"))
    return out


async def answer(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, object]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


CASES = [
    ("/predict", {"inputs": TOO_LONG, "truncate": False}),
    ("/predict", {"inputs": [[TOO_LONG], ["short"]], "truncate": False}),
    ("/embed", {"inputs": [TOO_LONG], "truncate": False}),
    ("/embed_all", {"inputs": TOO_LONG, "truncate": False}),
    ("/predict", {"inputs": TOO_LONG}),  # absent: auto-truncate, answered
    ("/predict", {"inputs": TOO_LONG, "truncate": True}),
]


async def test_truncate_reaches_tei_as_the_caller_gave_it(
    http: aiohttp.ClientSession, pairs: dict[str, tuple[Process, Process]]
) -> None:
    for route, body in CASES:
        sim, proxy = pairs["classifier" if route == "/predict" else "embedding"]
        direct = await answer(http, sim.url + route, body)
        through = await answer(http, proxy.url + route, body)
        assert through == direct, (route, body)
        assert (direct[0] == 200) == body.get("truncate", True), (route, body, direct)
