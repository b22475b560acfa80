"""TEI's other routes on the simulator: /tokenize, /decode, /info, /health and /metrics. The
inference routes live in embed_routes.py and score_routes.py, /vertex in vertex.py."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import models, schema
from .answers import json_response
from .errors import ErrorType, TeiError
from .pipeline import Simulator
from .tokens import CLS_ID, SEP_ID, SPECIAL_TOKENS, check_characters, token_id, word_spans


async def tokenize(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.tokenize_request(await sim.read_json(request))
    if req.batch:
        sim.check_batch(len(req.inputs))
    answer = []
    for text in req.inputs:
        if not text:
            raise TeiError(ErrorType.EMPTY, "`inputs` cannot be empty", prefixed=True)
        prompt = sim.prompt(req.prompt_name)
        check_characters(len(text), sim.settings.max_input_length)  # no truncation here
        full = text if prompt is None else prompt + text
        tokens: list[dict[str, Any]] = []
        for word, start, stop in word_spans(full):
            tid = token_id(word)
            sim.learn(tid, word)
            tokens.append({"id": tid, "text": word, "special": False, "start": start, "stop": stop})
        if req.add_special_tokens:
            tokens.insert(0, _special(CLS_ID))
            tokens.append(_special(SEP_ID))
        answer.append(tokens)
    return json_response(orjson.dumps(answer))


async def decode(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.decode_request(await sim.read_json(request))
    if req.batch:
        sim.check_batch(len(req.ids), "ids")
    texts = []
    for ids in req.ids:
        if not ids:
            raise TeiError(ErrorType.EMPTY, "`input_ids` cannot be empty", prefixed=True)
        words = []
        for i in ids:
            if i in SPECIAL_TOKENS:
                if not req.skip_special_tokens:
                    words.append(SPECIAL_TOKENS[i])
            else:
                words.append(sim.vocabulary.get(i, SPECIAL_TOKENS[100]))
        texts.append(" ".join(words))
    return json_response(orjson.dumps(texts))


async def info(sim: Simulator, request: web.Request) -> web.Response:
    """TEI's `Info` (router/src/lib.rs), every field in its order; `served_model_name` since 1.9."""
    s = sim.settings
    answer: dict[str, Any] = {
        "model_id": s.model_id,
        "model_sha": None,
        "model_dtype": sim.engine.model_dtype,
        "served_model_name": s.served_model_name,
        "model_type": models.info(s.model_type, sim.engine.pooling),
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_input_length": s.max_input_length,
        "max_batch_tokens": s.max_batch_tokens,
        "max_batch_requests": s.max_batch_requests,
        "max_client_batch_size": s.max_client_batch_size,
        "auto_truncate": s.auto_truncate,
        "tokenization_workers": 1,
        "version": s.tei_version,
        "sha": None,
        "docker_label": "embedding-proxy-tei-simulator",
    }
    if s.before_1_9:
        del answer["served_model_name"]
    return json_response(orjson.dumps(answer))


async def health(sim: Simulator, request: web.Request) -> web.Response:
    return web.Response(status=200)


async def prometheus(sim: Simulator, request: web.Request) -> web.Response:
    body = generate_latest(sim.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _special(tid: int) -> dict[str, Any]:
    return {"id": tid, "text": SPECIAL_TOKENS[tid], "special": True, "start": None, "stop": None}
