"""TEI's embedding routes on the simulator: /embed, /v1/embeddings, /embed_all, /embed_sparse and
/similarity. Each parses its request (schema.py), runs it through the pipeline (pipeline.py), which
refuses what the model type cannot serve (models.py), and answers in TEI's shape with its headers.
"""

from __future__ import annotations

import base64
import math
import time

import orjson
from aiohttp import web

from . import f32json, models, schema
from .answers import Answer, respond, tei_headers
from .errors import ErrorType, TeiError
from .pipeline import Simulator
from .tokens import token_id
from .vectors import model_vector, unit_score, vector_bytes, vector_from_key, vector_json


async def embed_answer(sim: Simulator, req: schema.EmbedRequest) -> Answer:
    started = time.monotonic()
    mt = sim.settings.model_type
    done = await sim.embed_inputs(
        req.inputs,
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
        dimensions=req.dimensions,
        refuse=(models.pooled_error(mt, req.normalize), models.embed_error(mt)),
    )
    vectors = [
        sim.vectors.json(d.encoded.key, req.normalize, req.dimensions, d.forward.vector)
        for d in done
    ]
    return b"[" + b",".join(vectors) + b"]", tei_headers(started, done)


async def embed(sim: Simulator, request: web.Request) -> web.Response:
    return respond(await embed_answer(sim, schema.embed_request(await sim.read_json(request))))


async def openai_embed(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.openai_request(await sim.read_json(request))
    s, mt = sim.settings, sim.settings.model_type
    done = await sim.embed_inputs(
        req.inputs,
        truncate=None,  # TEI's OpenAI route always truncates as `--auto-truncate` says
        direction="Right",
        prompt_name=None,
        dimensions=req.dimensions,
        refuse=(models.pooled_error(mt, True), models.embed_error(mt)),
    )
    items = []
    for i, d in enumerate(done):
        key, pooled = d.encoded.key, d.forward.vector
        if req.base64:
            raw = (
                vector_bytes(key, dimensions=req.dimensions, model_dimensions=s.dimensions)
                if pooled is None
                else model_vector(pooled, True, req.dimensions).tobytes()
            )
            vector = b'"' + base64.b64encode(raw) + b'"'
        else:
            vector = sim.vectors.json(key, True, req.dimensions, pooled)
        items.append(b'{"object":"embedding","embedding":%b,"index":%d}' % (vector, i))
    tokens = sum(d.encoded.tokens for d in done)
    # TEI 1.9 names the model `--served-model-name`; 1.8 had only the model id.
    model = s.model_id if s.before_1_9 else s.served_model_name
    body = b'{"object":"list","data":[%b],"model":%b,"usage":%b}' % (
        b",".join(items),
        orjson.dumps(model),
        orjson.dumps({"prompt_tokens": tokens, "total_tokens": tokens}),
    )
    return respond((body, tei_headers(started, done)))


async def embed_all(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.embed_request(await sim.read_json(request), pooled=False)
    mt = sim.settings.model_type
    done = await sim.embed_inputs(
        req.inputs,
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
        refuse=(models.all_error(mt), models.embed_error(mt)),
    )
    d = sim.settings.dimensions
    inputs = []
    for one in done:
        key = one.encoded.key
        tokens = [
            vector_json(key + b"\x00token%d" % i, normalize=False, model_dimensions=d)
            for i in range(one.encoded.tokens)
        ]
        inputs.append(b"[" + b",".join(tokens) + b"]")
    return respond((b"[" + b",".join(inputs) + b"]", tei_headers(started, done)))


async def embed_sparse_answer(sim: Simulator, req: schema.EmbedRequest) -> Answer:
    started = time.monotonic()
    mt = sim.settings.model_type
    done = await sim.embed_inputs(
        req.inputs,
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
        refuse=(models.sparse_error(mt), models.embed_error(mt)),
    )
    answer = []
    for one in done:
        weights: dict[int, float] = {}
        for piece in one.encoded.pieces:
            index = piece if isinstance(piece, int) else token_id(piece)
            weight = 0.05 + 2.95 * unit_score(str(piece).encode(), b"sparse")
            weights[index] = max(weight, weights.get(index, 0.0))
        indices = sorted(weights)
        values = f32json.fragments(f32json.rounded([weights[i] for i in indices]))
        answer.append([{"index": i, "value": v} for i, v in zip(indices, values, strict=True)])
    return orjson.dumps(answer), tei_headers(started, done)


async def embed_sparse(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.embed_request(await sim.read_json(request), pooled=False)
    return respond(await embed_sparse_answer(sim, req))


async def similarity(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.similarity_request(await sim.read_json(request))
    if not req.sentences:
        raise TeiError(ErrorType.EMPTY, "`inputs.sentences` cannot be empty")
    texts = [req.source, *req.sentences]
    sim.check_batch(len(texts))
    mt = sim.settings.model_type
    # TEI runs the texts through `embed`, unnormalised, then takes cosines.
    done = await sim.embed_inputs(
        schema.Inputs(texts, batch=True),
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
        refuse=(models.pooled_error(mt, False), models.embed_error(mt)),
    )
    d = sim.settings.dimensions
    vectors = [
        vector_from_key(one.encoded.key, model_dimensions=d)
        if one.forward.vector is None
        else model_vector(one.forward.vector, True, None).tolist()
        for one in done
    ]
    source = vectors[0]
    cosines = [math.fsum(a * b for a, b in zip(source, v, strict=True)) for v in vectors[1:]]
    body = f32json.dumps(f32json.rounded(cosines))
    return respond((body, tei_headers(started, done)))
