"""TEI's routes on the simulator: each parses its request (schema.py), runs it through the
pipeline (pipeline.py) and answers in TEI's shape, with TEI's timing and size headers."""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import schema
from .errors import ErrorType, TeiError
from .pipeline import Done, Simulator
from .tokens import (
    CLS_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    Encoded,
    encode,
    encode_pair,
    token_id,
    word_spans,
)
from .vectors import model_vector, unit_score, vector_bytes, vector_from_key

ID2LABEL = {"0": "LABEL_0", "1": "LABEL_1"}


async def embed(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.embed_request(await sim.read_json(request))
    done = await sim.embed_inputs(
        req.inputs,
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
        dimensions=req.dimensions,
    )
    vectors = [sim.vectors.json(e.key, req.normalize, req.dimensions, f.vector) for e, f in done]
    return json_response(b"[" + b",".join(vectors) + b"]", _headers(started, done))


async def openai_embed(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.openai_request(await sim.read_json(request))
    done = await sim.embed_inputs(
        req.inputs,
        truncate=None,
        direction="Right",
        prompt_name=None,
        dimensions=req.dimensions,
    )
    items = []
    for i, (e, f) in enumerate(done):
        if req.base64 and f.vector is not None:
            raw = model_vector(f.vector, True, req.dimensions).tobytes()
            vector = b'"' + base64.b64encode(raw) + b'"'
        elif req.base64:
            raw = vector_bytes(
                e.key, dimensions=req.dimensions, model_dimensions=sim.settings.dimensions
            )
            vector = b'"' + base64.b64encode(raw) + b'"'
        else:
            vector = sim.vectors.json(e.key, True, req.dimensions, f.vector)
        items.append(b'{"object":"embedding","embedding":%b,"index":%d}' % (vector, i))
    tokens = sum(e.tokens for e, _ in done)
    body = b'{"object":"list","data":[%b],"model":%b,"usage":%b}' % (
        b",".join(items),
        orjson.dumps(sim.settings.model_id),
        orjson.dumps({"prompt_tokens": tokens, "total_tokens": tokens}),
    )
    return json_response(body, _headers(started, done))


async def _embed_unpooled(sim: Simulator, request: web.Request) -> list[Done]:
    """/embed_all's and /embed_sparse's request: /embed's without pooling's fields."""
    req = schema.embed_request(await sim.read_json(request), pooled=False)
    return await sim.embed_inputs(
        req.inputs,
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
    )


async def embed_all(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    done = await _embed_unpooled(sim, request)
    d = sim.settings.dimensions
    answer = [
        [
            vector_from_key(e.key + b"\x00token%d" % i, normalize=False, model_dimensions=d)
            for i in range(e.tokens)
        ]
        for e, _ in done
    ]
    return json_response(orjson.dumps(answer), _headers(started, done))


async def embed_sparse(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    done = await _embed_unpooled(sim, request)
    answer = []
    for e, _ in done:
        weights: dict[int, float] = {}
        for piece in e.pieces:
            index = piece if isinstance(piece, int) else token_id(piece)
            weight = 0.05 + 2.95 * unit_score(str(piece).encode(), b"sparse")
            weights[index] = max(weight, weights.get(index, 0.0))
        indices = sorted(weights)
        values = _f32([weights[i] for i in indices])
        answer.append([{"index": i, "value": v} for i, v in zip(indices, values, strict=True)])
    return json_response(orjson.dumps(answer), _headers(started, done))


async def predict(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.predict_request(await sim.read_json(request))
    if req.batch and len(req.inputs) > sim.settings.max_client_batch_size:
        sim.check_batch(len(req.inputs))
    s = sim.settings
    truncate = s.auto_truncate if req.truncate is None else req.truncate

    def prepare(seq: schema.Sequence) -> Encoded:
        if isinstance(seq, tuple):
            return encode_pair(
                *seq,
                truncate=truncate,
                direction=req.truncation_direction,
                max_input_length=s.max_input_length,
            )
        return encode(
            seq,
            truncate=truncate,
            direction=req.truncation_direction,
            max_input_length=s.max_input_length,
        )

    done = await sim.run(req.inputs, single=not req.batch, prepare=prepare)
    answers = []
    for e, _ in done:
        logits = [8.0 * unit_score(e.key, b"label%d" % i) - 4.0 for i in range(len(ID2LABEL))]
        scores = logits if req.raw_scores else _softmax(logits)
        ranked = sorted(zip(_f32(scores), ID2LABEL.values(), strict=True), reverse=True)
        answers.append([{"score": score, "label": label} for score, label in ranked])
    return json_response(
        orjson.dumps(answers if req.batch else answers[0]), _headers(started, done)
    )


async def rerank(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.rerank_request(await sim.read_json(request))
    sim.check_batch(len(req.texts), "texts")
    s = sim.settings
    truncate = s.auto_truncate if req.truncate is None else req.truncate

    def prepare(text: str) -> Encoded:
        return encode_pair(
            req.query,
            text,
            truncate=truncate,
            direction=req.truncation_direction,
            max_input_length=s.max_input_length,
        )

    done = await sim.run(req.texts, single=False, prepare=prepare)
    logits = [12.0 * unit_score(e.key, b"rerank") - 6.0 for e, _ in done]
    scores = _f32(logits if req.raw_scores else [1 / (1 + math.exp(-x)) for x in logits])
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    ranks = []
    for i in order:
        rank: dict[str, Any] = {"index": i}
        if req.return_text:
            rank["text"] = req.texts[i]
        rank["score"] = scores[i]
        ranks.append(rank)
    return json_response(orjson.dumps(ranks), _headers(started, done))


async def similarity(sim: Simulator, request: web.Request) -> web.Response:
    started = time.monotonic()
    req = schema.similarity_request(await sim.read_json(request))
    if not req.sentences:
        raise TeiError(ErrorType.EMPTY, "`inputs.sentences` cannot be empty")
    texts = [req.source, *req.sentences]
    sim.check_batch(len(texts))
    done = await sim.embed_inputs(
        schema.Inputs(texts, batch=True),
        truncate=req.truncate,
        direction=req.truncation_direction,
        prompt_name=req.prompt_name,
    )
    d = sim.settings.dimensions
    vectors = [
        vector_from_key(e.key, model_dimensions=d)
        if f.vector is None
        else model_vector(f.vector, True, None).tolist()
        for e, f in done
    ]
    source = vectors[0]
    cosines = [sum(a * b for a, b in zip(source, v, strict=True)) for v in vectors[1:]]
    return json_response(orjson.dumps(_f32(cosines)), _headers(started, done))


async def tokenize(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.tokenize_request(await sim.read_json(request))
    if req.batch:
        sim.check_batch(len(req.inputs))
    answer = []
    for text in req.inputs:
        if not text:
            raise TeiError(ErrorType.EMPTY, "`inputs` cannot be empty", prefixed=True)
        prompt = sim.prompt(req.prompt_name)
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
    s = sim.settings
    return json_response(
        orjson.dumps(
            {
                "model_id": s.model_id,
                "model_sha": None,
                "model_dtype": sim.engine.model_dtype,
                "model_type": {"embedding": {"pooling": sim.engine.pooling}},
                "max_concurrent_requests": s.max_concurrent_requests,
                "max_input_length": s.max_input_length,
                "max_batch_tokens": s.max_batch_tokens,
                "max_batch_requests": s.max_batch_requests,
                "max_client_batch_size": s.max_client_batch_size,
                "auto_truncate": s.auto_truncate,
                "tokenization_workers": 1,
                "version": "1.8.0",
                "sha": None,
                "docker_label": "embedding-proxy-tei-simulator",
            }
        )
    )


async def health(sim: Simulator, request: web.Request) -> web.Response:
    return web.Response(status=200)


async def prometheus(sim: Simulator, request: web.Request) -> web.Response:
    body = generate_latest(sim.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _special(tid: int) -> dict[str, Any]:
    return {"id": tid, "text": SPECIAL_TOKENS[tid], "special": True, "start": None, "stop": None}


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [x / total for x in exps]


def json_response(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=headers)


def _headers(started: float, done: list[Done]) -> dict[str, str]:
    """TEI's timing and size headers; per-input times are averaged over a batch, as TEI does."""
    n = max(len(done), 1)
    total_ms = str(int((time.monotonic() - started) * 1000))
    queue_ms = sum(f.queue_seconds for _, f in done) / n * 1000
    inference_ms = sum(f.inference_seconds for _, f in done) / n * 1000
    return {
        "x-compute-type": "gpu+optimized",
        "x-compute-time": total_ms,
        "x-compute-characters": str(sum(e.chars for e, _ in done)),
        "x-compute-tokens": str(sum(e.tokens for e, _ in done)),
        "x-total-time": total_ms,
        "x-tokenization-time": "0",
        "x-queue-time": str(int(queue_ms)),
        "x-inference-time": str(int(inference_ms)),
    }


def _f32(values: list[float]) -> list[float]:
    from array import array

    return array("f", values).tolist()
