"""TEI's scoring routes on the simulator: /predict (a classifier's labels, or a re-ranker's one
label) and /rerank. Scores are deterministic per input, float32, and written as TEI writes them.

The order of TEI's checks (router/src/http/server.rs): /rerank refuses an empty `texts`, then a
model that is not a re-ranker, then too many texts; /predict a batch that is too large. Then each
input takes its own permit (TEI 1.9: `try_acquire`, 429 for those that find none) and runs
`Infer::predict`, which refuses a model that is not a classifier.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from aiohttp import web

from . import f32json, models, schema
from .answers import Answer, respond, tei_headers
from .pipeline import Simulator
from .tokens import Encoded, encode, encode_pair
from .vectors import unit_score


def _logits(key: bytes, model_type: str) -> list[float]:
    """A re-ranker's one logit is the one /rerank scores the same pair with."""
    if model_type == models.RERANKER:
        return [12.0 * unit_score(key, b"rerank") - 6.0]
    return [8.0 * unit_score(key, b"label%d" % i) - 4.0 for i in range(2)]


def _scores(logits: list[float], raw: bool) -> list[float]:
    """`Infer::predict`: softmax over several labels, a sigmoid for one, in float32."""
    if raw:
        return f32json.rounded(logits)
    if len(logits) == 1:
        return f32json.rounded([1 / (1 + math.exp(-logits[0]))])
    top = max(logits, key=abs)
    exps = [math.exp(x - top) for x in logits]
    return f32json.rounded([x / sum(exps) for x in exps])


def _best_first(scores: list[float]) -> list[int]:
    """TEI sorts ascending, then reverses: equal scores come last index first."""
    return sorted(range(len(scores)), key=scores.__getitem__)[::-1]


async def predict_answer(sim: Simulator, req: schema.PredictRequest) -> Answer:
    started = time.monotonic()
    s = sim.settings
    if req.batch:
        sim.check_batch(len(req.inputs))
    truncate = bool(s.auto_truncate if req.truncate is None else req.truncate)
    refusal = models.predict_error(s.model_type)

    def prepare(seq: schema.Sequence) -> Encoded:
        if refusal is not None:
            raise refusal
        if isinstance(seq, tuple):
            return encode_pair(
                *seq,
                truncate=truncate,
                direction=req.truncation_direction,
                max_input_length=s.max_input_length,
                prompt=s.default_prompt,
            )
        return encode(
            seq,
            truncate=truncate,
            direction=req.truncation_direction,
            max_input_length=s.max_input_length,
            prompt=s.default_prompt,
        )

    done = await sim.run(req.inputs, single=not req.batch, prepare=prepare, each=True)
    labels = models.LABELS[s.model_type]
    answers = []
    for d in done:
        scores = _scores(_logits(d.encoded.key, s.model_type), req.raw_scores)
        texts = f32json.fragments(scores)
        answers.append([{"score": texts[i], "label": labels[i]} for i in _best_first(scores)])
    return orjson.dumps(answers if req.batch else answers[0]), tei_headers(started, done)


async def predict(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.predict_request(await sim.read_json(request))
    return respond(await predict_answer(sim, req))


async def rerank_answer(sim: Simulator, req: schema.RerankRequest) -> Answer:
    started = time.monotonic()
    s = sim.settings
    if not req.texts:
        sim.check_batch(0, "texts")
    refusal = models.rerank_error(s.model_type)
    if refusal is not None:
        raise refusal
    sim.check_batch(len(req.texts), "texts")
    truncate = bool(s.auto_truncate if req.truncate is None else req.truncate)

    def prepare(text: str) -> Encoded:
        return encode_pair(
            req.query,
            text,
            truncate=truncate,
            direction=req.truncation_direction,
            max_input_length=s.max_input_length,
            prompt=s.default_prompt,
        )

    done = await sim.run(req.texts, single=False, prepare=prepare, each=True)
    logits = [_logits(d.encoded.key, models.RERANKER)[0] for d in done]
    scores = _scores(logits, True) if req.raw_scores else [_scores([x], False)[0] for x in logits]
    texts = f32json.fragments(scores)
    ranks = []
    for i in _best_first(scores):
        rank: dict[str, Any] = {"index": i}
        if req.return_text:
            rank["text"] = req.texts[i]
        rank["score"] = texts[i]
        ranks.append(rank)
    return orjson.dumps(ranks), tei_headers(started, done)


async def rerank(sim: Simulator, request: web.Request) -> web.Response:
    req = schema.rerank_request(await sim.read_json(request))
    return respond(await rerank_answer(sim, req))
