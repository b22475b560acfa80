"""After a proxy run: do the proxy's answers still equal the upstream's own? Callers at once, each
with its own texts, through the proxy and straight to the upstream; each vector compared."""

from __future__ import annotations

import asyncio
import math
import urllib.request

import aiohttp

CALLERS = 128
PER_CALLER = 3  # inputs a request, so that order within an answer is checked too


def _same(a: list[float], b: list[float]) -> bool:
    # A GPU's batch of another size may differ in the last bits; a wrong vector differs wholly.
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-5) for x, y in zip(a, b, strict=True)
    )


async def _check(proxy: str, upstream: str, salt: str) -> tuple[int, int]:
    texts = [[f"check {salt} {c} {i}" for i in range(PER_CALLER)] for c in range(CALLERS)]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def embed(url: str, inputs: list[str]) -> list[list[float]] | None:
            async with http.post(url + "/embed", json={"inputs": inputs}) as resp:
                return await resp.json() if resp.status == 200 else None

        through = await asyncio.gather(*(embed(proxy, t) for t in texts))
        direct = [await embed(upstream, t) for t in texts]  # one at a time: the reference
    wrong = 0
    for got, want in zip(through, direct, strict=True):
        ok = got is not None and want is not None and len(got) == len(want)
        if not ok or not all(_same(g, w) for g, w in zip(got, want, strict=True)):  # type: ignore[arg-type]
            wrong += 1
    return CALLERS, wrong


def answers(proxy: str, upstream: str, salt: str) -> tuple[int, int]:
    """(requests checked, requests whose answer differed from the upstream's or failed)."""
    return asyncio.run(_check(proxy, upstream, salt))


def inputs_per_call(proxy: str) -> float | None:
    """Inputs per upstream call so far, from the proxy's /metrics (the pod's, with workers)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(proxy + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("embedding_proxy_batch_size_sum", "embedding_proxy_batch_size_count")
    }
    calls = values.get("embedding_proxy_batch_size_count")
    return values["embedding_proxy_batch_size_sum"] / calls if calls else None
