"""The simulator's own side, for tests: the /simulator/* routes (faults, stats), and the
middleware that plays the faults set there on the inference routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from .answers import json_response
from .faults import parse_fault
from .pipeline import SIMULATOR_KEY, Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INFERENCE_ROUTES = frozenset(
    {
        "/",
        "/invocations",
        "/embed",
        "/embed_all",
        "/embed_sparse",
        "/predict",
        "/rerank",
        "/similarity",
        "/tokenize",
        "/decode",
        "/embeddings",
        "/v1/embeddings",
        "/vertex",
    }
)


async def set_fault(sim: Simulator, request: web.Request) -> web.Response:
    try:
        sim.faults.set(parse_fault(orjson.loads(await request.read())))
    except (ValueError, orjson.JSONDecodeError) as e:
        return web.Response(status=400, text=str(e))
    return json_response(orjson.dumps(sim.faults.describe()))


async def clear_fault(sim: Simulator, request: web.Request) -> web.Response:
    sim.faults.clear()
    return json_response(orjson.dumps(sim.faults.describe()))


async def get_faults(sim: Simulator, request: web.Request) -> web.Response:
    return json_response(orjson.dumps(sim.faults.describe()))


async def get_stats(sim: Simulator, request: web.Request) -> web.Response:
    stats = sim.metrics.stats.as_json()
    stats["queue_size"] = len(sim.engine.queue)
    stats["inflight_inputs"] = sim.permits.in_use
    return json_response(orjson.dumps(stats))


async def reset_stats(sim: Simulator, request: web.Request) -> web.Response:
    sim.metrics.stats = type(sim.metrics.stats)()
    return await get_stats(sim, request)


@web.middleware
async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "POST" or request.path not in INFERENCE_ROUTES:
        return await handler(request)
    fault = request.app[SIMULATOR_KEY].faults.take(request.path)
    if fault is None:
        return await handler(request)
    if fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault.replaces_answer:
        status, body, content_type = fault.answer()
        return web.Response(status=status, body=body, content_type=content_type)
    response = await handler(request)
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        if fault.status is not None:
            response.set_status(fault.status)
        if response.status == 200 and (fault.wrong_count or fault.truncate_body):
            response.body = fault.mangle(response.body)
    return response
