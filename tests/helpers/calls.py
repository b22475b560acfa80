"""HTTP calls and checks shared by the integration tests."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers.processes import Process

JSON = {"Content-Type": "application/json"}


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


async def embed(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, object]:
    async with http.post(url + "/embed", json=body) as resp:
        return resp.status, await resp.json()


async def post(
    http: aiohttp.ClientSession, url: str, body: object, **kwargs: object
) -> tuple[int, object, aiohttp.typedefs.LooseHeaders]:
    """POST `body` as JSON: the status, the answer (parsed when JSON, else text), the headers."""
    async with http.post(url, json=body, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json(), resp.headers
        return resp.status, await resp.text(), resp.headers


async def metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample of a /metrics page, keyed `name{label=value,...}` (labels sorted)."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(400):
        async with session.get(f"{url}/ready") as resp:
            if resp.status == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url}/ready never answered 200")


async def upstream_calls(http: aiohttp.ClientSession, sim: Process) -> dict[str, float]:
    """The simulator's answered requests by route (its `tei_simulator_requests_total`)."""
    counts: dict[str, float] = {}
    for name, value in (await metrics(http, sim.url)).items():
        if name.startswith("tei_simulator_requests_total{"):
            route = name.split("route=")[1].split(",")[0].rstrip("}")
            counts[route] = counts.get(route, 0) + value
    return counts
