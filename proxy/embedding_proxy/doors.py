"""The routes beside the batched ones: forwarding to TEI (a request that takes TEI's permits
waits for them among the batches'), TEI's other doors to the work the proxy batches, served as TEI
serves them (`POST /` and `POST /invocations`, SageMaker's and the Hugging Face clients', by the
model type in TEI's /info, and `POST /vertex`, `{"instances": [...]}`; whatever these cannot batch
as TEI would answer it is forwarded unchanged), and OpenAI's `GET /v1/models` and
`GET /v1/models/{id}`."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import unquote

from .api import inference
from .api import openai as openai_api
from .api import tei as tei_api
from .api.errors import VALIDATION, ProxyError, too_large
from .app import JSON, Proxy
from .batching.refusals import Refused
from .http.message import Answer, Request, Response
from .respond import Outcome, refusal
from .telemetry import logs, trace

MODELS = ("/v1/models/", "/models/")  # the second for OpenAI clients whose base URL lacks /v1


async def forward(proxy: Proxy, request: Request, outcome: Outcome) -> Response:
    """Any route the proxy does not serve itself: to TEI unchanged."""
    proxy.admit(request)
    return await pass_on(proxy, request)


async def pass_on(proxy: Proxy, request: Request) -> Response:
    """Forward an admitted request to TEI unchanged, and its answer back. One that takes TEI's
    permits (api/inference.py) waits for them among the batches' first, so that TEI is never
    asked for more than it has (TEI 1.9 answers 429 at once when short)."""
    if request.oversize:
        raise too_large(proxy.config.server.max_body_bytes)
    wanted = inference.permits(request.path, request.body) if request.method == "POST" else 0
    if not wanted:
        return await _pass_on(proxy, request)
    try:
        held = await proxy.batcher.hold(wanted, proxy.deadline(request))
    except Refused as e:
        raise refusal(e) from None
    try:
        return await _pass_on(proxy, request)
    finally:
        proxy.batcher.release(held)


async def _pass_on(proxy: Proxy, request: Request) -> Response:
    upstream_started = time.perf_counter()
    try:
        status, headers, data = await proxy.upstream.forward(
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            proxy.deadline(request),
            proxy.answers,
        )
    except Refused as e:  # over one request's answer budget (413) or all requests' (429)
        raise refusal(e) from None
    access = logs.current()
    if access is not None:
        access.upstream_s = time.perf_counter() - upstream_started
    return Response(status=status, body=data, headers=headers)


def root(proxy: Proxy, request: Request, outcome: Outcome) -> Answer:
    """`POST /` and `/invocations`: what TEI routes there by its model type (router/src/http/
    server.rs, `run`): an embedding model's /embed (SPLADE's /embed_sparse), a classifier's
    /predict, batched; a reranker's /rerank, or a type not known yet, forwarded."""
    info = proxy.upstream.info
    route = info.root_route if info is not None else None
    if route is None:
        return forward(proxy, request, outcome)
    body, who = proxy.read_body(request)
    data = tei_api.decode_object(body)
    if route == "/embed" and isinstance(data.get("inputs"), dict):
        # {"source_sentence": ..., "sentences": [...]}: TEI started with TASK=sentence-similarity
        # serves / as /similarity, which /info does not tell.
        return pass_on(proxy, request)
    req = tei_api.parse(route, body, proxy.config.limits, data=data, simple=False)
    return proxy.answer_batch(req, request, who, outcome)


def _reranks(instance: Any) -> bool:
    """Whether TEI reads an instance as a RerankRequest, which it tries first for any model."""
    texts = instance.get("texts") if isinstance(instance, dict) else None
    return (
        isinstance(instance, dict)
        and isinstance(instance.get("query"), str)
        and isinstance(texts, list)
        and all(isinstance(t, str) for t in texts)
    )


async def vertex(proxy: Proxy, request: Request, outcome: Outcome) -> Response:
    """`POST /vertex`: each instance a whole request for the route `/` stands for, answered
    `{"predictions": [...]}` in order; the first instance that fails fails the call, as TEI's
    `join_all(...).collect()` does. A reranker, or an instance TEI would rerank: forwarded."""
    info = proxy.upstream.info
    route = info.root_route if info is not None else None
    if route is None:
        return await forward(proxy, request, outcome)
    body, who = proxy.read_body(request)
    instances = tei_api.decode_object(body).get("instances")
    if not isinstance(instances, list):
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: instances: expected a list",
            VALIDATION,
        )
    if any(_reranks(i) for i in instances):
        return await pass_on(proxy, request)
    limits = proxy.config.limits
    reqs = [tei_api.parse_instance(route, i, limits) for i in instances]
    outcome.inputs = inputs = sum(len(r.items) for r in reqs)
    if inputs > limits.max_inputs_per_request:
        raise ProxyError(
            413,
            f"batch size {inputs} > maximum allowed batch size {limits.max_inputs_per_request}",
            VALIDATION,
        )
    deadline = proxy.deadline(request)
    context = trace.context(request.headers)
    answers = await asyncio.gather(
        *(proxy.run_batch(r, deadline, who, None, context) for r in reqs),
        return_exceptions=True,
    )
    parts = []
    for req, answer in zip(reqs, answers, strict=True):
        if isinstance(answer, BaseException):
            raise answer
        parts.append(tei_api.render(req, [p.fragment for p in answer]))
    body = b"".join(tei_api.delimited(b'{"predictions":[', parts, b"]}"))
    return Response(body=body, content_type=JSON)


async def models(proxy: Proxy, request: Request) -> Response:
    """OpenAI's `GET /v1/models`: the one model TEI serves, from its /info (read now if it was
    never read)."""
    try:
        proxy.admit(request)
        info = proxy.upstream.info or await proxy.upstream.fetch_info()
        body = openai_api.render_models(info.served_model_name, proxy.started_at)
        return Response(body=body, content_type=JSON)
    except ProxyError as e:
        return Response(e.status, e.openai_body(), JSON, headers=e.headers)


async def model(proxy: Proxy, request: Request) -> Response:
    """OpenAI's `GET /v1/models/{id}` (the client's `models.retrieve`): the model TEI serves,
    by its served name (percent-encoded or not: ids hold a `/`); any other id, 404."""
    try:
        proxy.admit(request)
        info = proxy.upstream.info or await proxy.upstream.fetch_info()
        name = unquote(request.path.partition("/models/")[2])
        if name != info.served_model_name:
            raise ProxyError(
                404,
                f"The model `{name}` does not exist; this server serves `{info.served_model_name}`",
                "NotFound",
            )
        body = openai_api.render_model(info.served_model_name, proxy.started_at)
        return Response(body=body, content_type=JSON)
    except ProxyError as e:
        return Response(e.status, e.openai_body(), JSON, headers=e.headers)
