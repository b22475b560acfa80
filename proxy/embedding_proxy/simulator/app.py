"""The simulator's HTTP API: TEI's routes, shapes, status codes and headers, plus its own
`/simulator/*` routes for tests (faults, stats)."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..failure import cannot_listen
from . import schema
from .errors import (
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    ErrorType,
    Rejection,
    TeiError,
    overloaded,
    syntax_error,
)
from .faults import Faults, parse_fault
from .gpu import CostModel, Engine, Forward, Permits
from .metrics import SimulatorMetrics
from .settings import SimulatorSettings
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
from .vectors import unit_score, vector_bytes, vector_from_key

T = TypeVar("T")
Done = tuple[Encoded, Forward]
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
    }
)
# TEI asks for the API key everywhere but on its health and metrics routes.
PUBLIC_ROUTES = frozenset({"/health", "/", "/ping", "/metrics"})
ID2LABEL = {"0": "LABEL_0", "1": "LABEL_1"}
SIMULATOR_KEY: web.AppKey[Simulator] = web.AppKey("simulator")


class VectorCache:
    """Serialized JSON of recent vectors: answering a repeated input costs a dict lookup."""

    def __init__(self, size: int, model_dimensions: int) -> None:
        self.size = size
        self.model_dimensions = model_dimensions
        self._items: OrderedDict[tuple[bytes, bool, int | None], bytes] = OrderedDict()

    def json(self, key: bytes, normalize: bool, dimensions: int | None) -> bytes:
        k = (key, normalize, dimensions)
        hit = self._items.get(k)
        if hit is not None:
            self._items.move_to_end(k)
            return hit
        vector = vector_from_key(
            key,
            normalize=normalize,
            dimensions=dimensions,
            model_dimensions=self.model_dimensions,
        )
        out = orjson.dumps(vector)
        if self.size:
            self._items[k] = out
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return out


def _f32(values: list[float]) -> list[float]:
    from array import array

    return array("f", values).tolist()


class Simulator:
    """One simulated TEI: settings, the GPU engine, permits, caches, faults and metrics."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.permits = Permits(settings.max_concurrent_requests)
        self.metrics = SimulatorMetrics(
            queue_size=lambda: len(self.engine.queue), in_flight=lambda: self.permits.in_use
        )
        self.engine = Engine(
            cost=CostModel(settings.base_ms, settings.knee_tokens, settings.per_token_us),
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_requests=settings.max_batch_requests,
            internal_batching=settings.internal_batching,
            replicas=settings.backend_replicas,
            on_forward=self.metrics.record_forward,
        )
        self.vectors = VectorCache(settings.vector_cache_size, settings.dimensions)
        self.faults = Faults()
        self.vocabulary: OrderedDict[int, str] = OrderedDict()  # for /decode, learned by /tokenize

    # -- request bodies -------------------------------------------------------------------------

    async def read_json(self, request: web.Request) -> Any:
        """The body as JSON, refused as axum's `Json` extractor refuses it."""
        mime = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        kind, _, subtype = mime.partition("/")
        if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
            raise UNSUPPORTED_MEDIA_TYPE
        limit = self.settings.payload_limit
        if request.content_length is not None and request.content_length > limit:
            raise BODY_TOO_LARGE
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                raise BODY_TOO_LARGE
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise syntax_error(str(e)) from None

    # -- TEI's per-input pipeline: permit, tokenization, queue, forward pass --------------------

    async def run(
        self,
        items: Sequence[T],
        *,
        single: bool,
        prepare: Callable[[T], Encoded],
        after: TeiError | None = None,
    ) -> list[Done]:
        """Compute `items` as TEI does and return them in order, or raise the first error.

        A single input needs a permit at once (else 429); the inputs of a batch wait for theirs.
        Inputs that fail validation are not computed; the others are, even when the answer is
        the error of another input (TEI awaits them all). `after` is an error found only once an
        input is computed (such as `dimensions` larger than the model's).
        """
        n = len(items)
        if single:
            if not self.permits.try_acquire():
                raise overloaded()
        elif not self.permits.try_acquire(n):
            return await self._run_waiting(items, prepare, after)
        try:
            outcomes: list[Encoded | TeiError] = []
            for item in items:
                try:
                    outcomes.append(prepare(item))
                except TeiError as e:
                    outcomes.append(e)
            valid = [o for o in outcomes if isinstance(o, Encoded)]
            futures = self.engine.submit([o.tokens for o in valid]) if valid else []
            forwards = iter(await asyncio.gather(*futures))
        finally:
            self.permits.release(n)
        done: list[Done] = []
        for outcome in outcomes:
            if isinstance(outcome, TeiError):
                raise outcome
            if after is not None:
                raise after
            done.append((outcome, next(forwards)))
        return done

    async def _run_waiting(
        self, items: Sequence[T], prepare: Callable[[T], Encoded], after: TeiError | None
    ) -> list[Done]:
        async def one(item: T) -> Done:
            await self.permits.acquire()
            try:
                encoded = prepare(item)
                (future,) = self.engine.submit([encoded.tokens])
                forward = await future
            finally:
                self.permits.release()
            if after is not None:
                raise after
            return encoded, forward

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def check_batch(self, n: int, what: str = "inputs") -> None:
        if n == 0:
            raise TeiError(ErrorType.EMPTY, f"`{what}` cannot be empty")
        if n > self.settings.max_client_batch_size:
            raise TeiError(
                ErrorType.VALIDATION,
                f"batch size {n} > maximum allowed batch size "
                f"{self.settings.max_client_batch_size}",
            )

    def prompt(self, name: str | None) -> str | None:
        if name is None:
            return None
        prompts = self.settings.prompts
        if not prompts:
            raise TeiError(
                ErrorType.VALIDATION,
                f"`default-prompt-name` is set to `{name}` but no prompts were found in the "
                "Sentence Transformers configuration",
                prefixed=True,
            )
        if name not in prompts:
            available = ", ".join(f'"{k}"' for k in sorted(prompts))
            raise TeiError(
                ErrorType.VALIDATION,
                f"`default-prompt-name` is set to `{name}` but it was not found in the Sentence "
                f"Transformers prompts. Available prompts: [{available}]",
                prefixed=True,
            )
        return prompts[name]

    async def embed_inputs(
        self,
        inputs: schema.Inputs,
        *,
        truncate: bool | None,
        direction: str,
        prompt_name: str | None,
        dimensions: int | None = None,
    ) -> list[Done]:
        """The shared path of /embed, /v1/embeddings, /embed_all, /embed_sparse, /similarity."""
        if inputs.batch:
            self.check_batch(len(inputs.items))
        s = self.settings
        truncate = s.auto_truncate if truncate is None else truncate

        def prepare(value: schema.Model) -> Encoded:
            if dimensions == 0:
                raise TeiError(
                    ErrorType.VALIDATION, "`dimensions` should be positive", prefixed=True
                )
            return encode(
                value,
                truncate=truncate,
                direction=direction,
                max_input_length=s.max_input_length,
                prompt=self.prompt(prompt_name),
            )

        after = None
        if dimensions is not None and dimensions > s.dimensions:
            after = TeiError(
                ErrorType.VALIDATION,
                "`dimensions` should be smaller than the maximum embedding dimension.",
                prefixed=True,
            )
        return await self.run(inputs.items, single=not inputs.batch, prepare=prepare, after=after)

    # -- TEI routes ------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.embed_request(await self.read_json(request))
        done = await self.embed_inputs(
            req.inputs,
            truncate=req.truncate,
            direction=req.truncation_direction,
            prompt_name=req.prompt_name,
            dimensions=req.dimensions,
        )
        vectors = [self.vectors.json(e.key, req.normalize, req.dimensions) for e, _ in done]
        return _json(b"[" + b",".join(vectors) + b"]", _headers(started, done))

    async def openai_embed(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.openai_request(await self.read_json(request))
        done = await self.embed_inputs(
            req.inputs,
            truncate=None,
            direction="Right",
            prompt_name=None,
            dimensions=req.dimensions,
        )
        items = []
        for i, (e, _) in enumerate(done):
            if req.base64:
                raw = vector_bytes(
                    e.key, dimensions=req.dimensions, model_dimensions=self.settings.dimensions
                )
                vector = b'"' + base64.b64encode(raw) + b'"'
            else:
                vector = self.vectors.json(e.key, True, req.dimensions)
            items.append(b'{"object":"embedding","embedding":%b,"index":%d}' % (vector, i))
        tokens = sum(e.tokens for e, _ in done)
        body = b'{"object":"list","data":[%b],"model":%b,"usage":%b}' % (
            b",".join(items),
            orjson.dumps(self.settings.model_id),
            orjson.dumps({"prompt_tokens": tokens, "total_tokens": tokens}),
        )
        return _json(body, _headers(started, done))

    async def embed_all(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.embed_request(await self.read_json(request), pooled=False)
        done = await self.embed_inputs(
            req.inputs,
            truncate=req.truncate,
            direction=req.truncation_direction,
            prompt_name=req.prompt_name,
        )
        d = self.settings.dimensions
        answer = [
            [
                vector_from_key(e.key + b"\x00token%d" % i, normalize=False, model_dimensions=d)
                for i in range(e.tokens)
            ]
            for e, _ in done
        ]
        return _json(orjson.dumps(answer), _headers(started, done))

    async def embed_sparse(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.embed_request(await self.read_json(request), pooled=False)
        done = await self.embed_inputs(
            req.inputs,
            truncate=req.truncate,
            direction=req.truncation_direction,
            prompt_name=req.prompt_name,
        )
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
        return _json(orjson.dumps(answer), _headers(started, done))

    async def predict(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.predict_request(await self.read_json(request))
        if req.batch and len(req.inputs) > self.settings.max_client_batch_size:
            self.check_batch(len(req.inputs))
        s = self.settings
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

        done = await self.run(req.inputs, single=not req.batch, prepare=prepare)
        answers = []
        for e, _ in done:
            logits = [8.0 * unit_score(e.key, b"label%d" % i) - 4.0 for i in range(len(ID2LABEL))]
            scores = logits if req.raw_scores else _softmax(logits)
            ranked = sorted(zip(_f32(scores), ID2LABEL.values(), strict=True), reverse=True)
            answers.append([{"score": score, "label": label} for score, label in ranked])
        return _json(orjson.dumps(answers if req.batch else answers[0]), _headers(started, done))

    async def rerank(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.rerank_request(await self.read_json(request))
        self.check_batch(len(req.texts), "texts")
        s = self.settings
        truncate = s.auto_truncate if req.truncate is None else req.truncate

        def prepare(text: str) -> Encoded:
            return encode_pair(
                req.query,
                text,
                truncate=truncate,
                direction=req.truncation_direction,
                max_input_length=s.max_input_length,
            )

        done = await self.run(req.texts, single=False, prepare=prepare)
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
        return _json(orjson.dumps(ranks), _headers(started, done))

    async def similarity(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        req = schema.similarity_request(await self.read_json(request))
        if not req.sentences:
            raise TeiError(ErrorType.EMPTY, "`inputs.sentences` cannot be empty")
        texts = [req.source, *req.sentences]
        self.check_batch(len(texts))
        done = await self.embed_inputs(
            schema.Inputs(texts, batch=True),
            truncate=req.truncate,
            direction=req.truncation_direction,
            prompt_name=req.prompt_name,
        )
        d = self.settings.dimensions
        vectors = [vector_from_key(e.key, model_dimensions=d) for e, _ in done]
        source = vectors[0]
        cosines = [sum(a * b for a, b in zip(source, v, strict=True)) for v in vectors[1:]]
        return _json(orjson.dumps(_f32(cosines)), _headers(started, done))

    async def tokenize(self, request: web.Request) -> web.Response:
        req = schema.tokenize_request(await self.read_json(request))
        if req.batch:
            self.check_batch(len(req.inputs))
        answer = []
        for text in req.inputs:
            if not text:
                raise TeiError(ErrorType.EMPTY, "`inputs` cannot be empty", prefixed=True)
            prompt = self.prompt(req.prompt_name)
            full = text if prompt is None else prompt + text
            tokens: list[dict[str, Any]] = []
            for word, start, stop in word_spans(full):
                tid = token_id(word)
                self._learn(tid, word)
                tokens.append(
                    {"id": tid, "text": word, "special": False, "start": start, "stop": stop}
                )
            if req.add_special_tokens:
                tokens.insert(0, _special(CLS_ID))
                tokens.append(_special(SEP_ID))
            answer.append(tokens)
        return _json(orjson.dumps(answer))

    async def decode(self, request: web.Request) -> web.Response:
        req = schema.decode_request(await self.read_json(request))
        if req.batch:
            self.check_batch(len(req.ids), "ids")
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
                    words.append(self.vocabulary.get(i, SPECIAL_TOKENS[100]))
            texts.append(" ".join(words))
        return _json(orjson.dumps(texts))

    def _learn(self, tid: int, word: str) -> None:
        self.vocabulary[tid] = word
        if len(self.vocabulary) > 65536:
            self.vocabulary.popitem(last=False)

    async def info(self, request: web.Request) -> web.Response:
        s = self.settings
        return _json(
            orjson.dumps(
                {
                    "model_id": s.model_id,
                    "model_sha": None,
                    "model_dtype": "float16",
                    "model_type": {"embedding": {"pooling": "cls"}},
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

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the simulator's own routes ---------------------------------------------------------------

    async def set_fault(self, request: web.Request) -> web.Response:
        try:
            self.faults.set(parse_fault(orjson.loads(await request.read())))
        except (ValueError, orjson.JSONDecodeError) as e:
            return web.Response(status=400, text=str(e))
        return _json(orjson.dumps(self.faults.describe()))

    async def clear_fault(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json(orjson.dumps(self.faults.describe()))

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(orjson.dumps(self.faults.describe()))

    async def get_stats(self, request: web.Request) -> web.Response:
        stats = self.metrics.stats.as_json()
        stats["queue_size"] = len(self.engine.queue)
        stats["inflight_inputs"] = self.permits.in_use
        return _json(orjson.dumps(stats))

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.metrics.stats = type(self.metrics.stats)()
        return await self.get_stats(request)


def _special(tid: int) -> dict[str, Any]:
    return {"id": tid, "text": SPECIAL_TOKENS[tid], "special": True, "start": None, "stop": None}


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [x / total for x in exps]


def _json(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
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


def _tei_route(handler: Handler, *, openai: bool = False) -> Handler:
    """Render TEI errors in the route's shape, and extractor rejections as plain text."""

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Rejection as e:
            return web.Response(status=e.status, text=e.text)
        except TeiError as e:
            body = e.openai_body() if openai else e.native_body()
            return web.Response(status=e.status, body=body, content_type="application/json")

    return route


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route and status; unknown routes get axum's empty 404/405."""
    sim = request.app[SIMULATOR_KEY]
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed as e:
        response = web.Response(status=405, headers={"Allow": ",".join(sorted(e.allowed_methods))})
    except web.HTTPNotFound:
        response = web.Response(status=404)
    sim.metrics.requests.labels(_route_label(request), str(response.status)).inc()
    return response


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[SIMULATOR_KEY].settings.api_key
    if (
        key is not None
        and request.path not in PUBLIC_ROUTES
        and not request.path.startswith("/simulator/")
        and request.headers.get("Authorization") != f"Bearer {key}"
    ):
        return web.Response(status=401)
    return await handler(request)


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
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


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (its engine starts and stops with the app)."""
    sim = Simulator(settings)
    # Bodies are read and limited by the handlers, as TEI limits them (see read_json).
    app = web.Application(middlewares=[_observe, _auth, _faults], client_max_size=1 << 40)
    app[SIMULATOR_KEY] = sim

    async def start(app: web.Application) -> None:
        sim.engine.start()

    async def stop(app: web.Application) -> None:
        await sim.engine.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    native = {
        "/embed": sim.embed,
        "/": sim.embed,
        "/invocations": sim.embed,
        "/embed_all": sim.embed_all,
        "/embed_sparse": sim.embed_sparse,
        "/predict": sim.predict,
        "/rerank": sim.rerank,
        "/similarity": sim.similarity,
        "/tokenize": sim.tokenize,
        "/decode": sim.decode,
    }
    for path, handler in native.items():
        app.router.add_post(path, _tei_route(handler))
    for path in ("/v1/embeddings", "/embeddings"):
        app.router.add_post(path, _tei_route(sim.openai_embed, openai=True))
    for path in ("/health", "/", "/ping"):
        app.router.add_get(path, sim.health, allow_head=False)
    app.router.add_get("/info", sim.info, allow_head=False)
    app.router.add_get("/metrics", sim.prometheus, allow_head=False)
    app.router.add_get("/simulator/faults", sim.get_faults)
    app.router.add_post("/simulator/faults", sim.set_fault)
    app.router.add_delete("/simulator/faults", sim.clear_fault)
    app.router.add_get("/simulator/stats", sim.get_stats)
    app.router.add_delete("/simulator/stats", sim.reset_stats)
    return app


def run(settings: SimulatorSettings) -> None:
    """Run the simulator until SIGINT or SIGTERM.

    Handlers are cancelled when their client disconnects (aiohttp's `handler_cancellation`), so
    that, as in TEI, inputs of a caller that left are never computed.
    """

    def listening(_: str) -> None:  # aiohttp calls this once the port is bound
        logging.getLogger("embedding_proxy.simulator").info(
            "TEI simulator (not a real model) listening on http://%s:%d",
            settings.host,
            settings.port,
        )

    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=listening,
            handler_cancellation=True,
        )
    except OSError as e:
        raise cannot_listen(settings.host, settings.port, e) from None


async def serve(settings: SimulatorSettings) -> None:
    """Run the simulator until cancelled (with `run`'s handler cancellation)."""
    runner = web.AppRunner(create_app(settings), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
