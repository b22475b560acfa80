"""`POST /vertex`: Google Vertex AI's shape, `{"instances": [...]}` in, `{"predictions": [...]}`
out, each instance answered by the route the model type serves (router/src/http/server.rs,
`vertex_compatibility`).

An instance that reads as a re-rank request goes to /rerank whatever the model; any other is read as
the model's own request (/predict for a classifier or re-ranker, /embed_sparse for SPLADE, /embed
otherwise). One that does not read refuses the whole request with serde's message as a Validation
error, before anything runs. The instances then run together; the answer is the first error in
instance order, or every answer. No limit on the number of instances, and no timing headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import models, schema
from .answers import Answer, json_response
from .embed_routes import embed_answer, embed_sparse_answer
from .errors import ErrorType, Rejection, TeiError
from .pipeline import Simulator
from .score_routes import predict_answer, rerank_answer


def _instances(body: Any) -> list[Any]:
    b = schema.struct(body, "VertexRequest")
    instances = schema.required(b, "instances")
    if not isinstance(instances, list):
        raise schema.data_error(
            "instances", f"invalid type: {schema.kind(instances)}, expected a sequence"
        )
    return instances


def _plan(sim: Simulator, instance: Any) -> Callable[[], Awaitable[Answer]]:
    """The route one instance goes to, with its request read (or TEI's Validation error)."""
    try:
        req = schema.rerank_request(instance)
        return lambda: rerank_answer(sim, req)
    except Rejection:
        pass
    model_type = sim.settings.model_type
    try:
        if models.is_classifier(model_type):
            predict = schema.predict_request(instance)
            return lambda: predict_answer(sim, predict)
        embed = schema.embed_request(instance, pooled=model_type != models.SPLADE)
    except Rejection as e:
        raise TeiError(ErrorType.VALIDATION, e.detail) from None
    if model_type == models.SPLADE:
        return lambda: embed_sparse_answer(sim, embed)
    return lambda: embed_answer(sim, embed)


async def vertex(sim: Simulator, request: web.Request) -> web.Response:
    plans = [_plan(sim, instance) for instance in _instances(await sim.read_json(request))]
    results = await asyncio.gather(*(plan() for plan in plans), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    bodies = [body for body, _ in results]  # type: ignore[misc]
    return json_response(b'{"predictions":[' + b",".join(bodies) + b"]}")
