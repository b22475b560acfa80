"""One simulated TEI and what every inference route shares: the JSON body as TEI's extractor reads
it, batch and prompt checks, and TEI's per-input pipeline (permit, tokenization, queue, forward
pass); the vectors' JSON cached."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import orjson
from aiohttp import web

from . import f32json, schema
from .backends import build_engine
from .errors import (
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    ErrorType,
    TeiError,
    overloaded,
    syntax_error,
)
from .faults import Faults
from .gpu import Forward, Permits
from .metrics import SimulatorMetrics
from .settings import SimulatorSettings
from .tokens import Encoded, encode
from .vectors import model_vector, vector_json

T = TypeVar("T")


class Done(NamedTuple):
    """One input computed: what it was, what its forward pass reported, and how long it took
    from its permit to its place in the queue (TEI's `tokenization` time)."""

    encoded: Encoded
    forward: Forward
    tokenization: float


SIMULATOR_KEY: web.AppKey[Simulator] = web.AppKey("simulator")


class VectorCache:
    """Serialized JSON of recent vectors, written as TEI writes float32 (f32json.py): answering a
    repeated input costs a dict lookup."""

    def __init__(self, size: int, model_dimensions: int) -> None:
        self.size = size
        self.model_dimensions = model_dimensions
        self._items: OrderedDict[tuple[bytes, bool, int | None], bytes] = OrderedDict()

    def json(
        self, key: bytes, normalize: bool, dimensions: int | None, pooled: Any = None
    ) -> bytes:
        if pooled is not None:  # the model's own output: nothing to cache
            return f32json.dumps(model_vector(pooled, normalize, dimensions))
        k = (key, normalize, dimensions)
        hit = self._items.get(k)
        if hit is not None:
            self._items.move_to_end(k)
            return hit
        out = vector_json(
            key,
            normalize=normalize,
            dimensions=dimensions,
            model_dimensions=self.model_dimensions,
        )
        if self.size:
            self._items[k] = out
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return out


class Simulator:
    """One simulated TEI: settings, the GPU engine, permits, caches, faults and metrics."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.permits = Permits(settings.max_concurrent_requests)
        self.metrics = SimulatorMetrics(
            queue_size=lambda: len(self.engine.queue), in_flight=lambda: self.permits.in_use
        )
        self.engine = build_engine(settings, self.metrics.record_forward)
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
        each: bool = False,
    ) -> list[Done]:
        """Compute `items` as TEI does and return them in order, or raise the first error.

        Permits (router/src/http/server.rs): a single input takes one with `try_acquire`, else
        429 at once. In TEI 1.9 so does every input of a batch, in order: on /embed and the other
        embedding routes the first one missing answers 429 before anything is computed; on
        /predict and /rerank (`each`) every input tries for its own inside the joined futures,
        those that got one are computed and the others fail with 429. Up to TEI 1.8 the inputs of
        a batch wait for their permits instead.

        Inputs that fail validation are not computed; the others are, even when the answer is
        the error of another input (TEI awaits them all). `after` is an error found only once an
        input is computed (such as `dimensions` larger than the model's).
        """
        n = len(items)
        if single or not self.settings.before_1_9:
            granted = min(n, self.permits.free)
            if granted < n and (single or not each):
                raise overloaded()
            self.permits.try_acquire(granted)
        elif self.permits.try_acquire(n):  # TEI 1.8, a batch whose permits are all free
            granted = n
        else:
            return await self._run_waiting(items, prepare, after)
        started = asyncio.get_running_loop().time()
        try:
            outcomes: list[Encoded | TeiError] = []
            for item in items[:granted]:
                try:
                    outcomes.append(prepare(item))
                except TeiError as e:
                    outcomes.append(e)
            outcomes += [overloaded() for _ in range(n - granted)]
            valid = [o for o in outcomes if isinstance(o, Encoded)]
            futures = self.engine.submit([o.tokens for o in valid], valid) if valid else []
            tokenization = asyncio.get_running_loop().time() - started
            forwards = iter(await asyncio.gather(*futures))
        finally:
            self.permits.release(granted)
        done: list[Done] = []
        for outcome in outcomes:
            if isinstance(outcome, TeiError):
                raise outcome
            if after is not None:
                raise after
            done.append(Done(outcome, next(forwards), tokenization))
        return done

    async def _run_waiting(
        self, items: Sequence[T], prepare: Callable[[T], Encoded], after: TeiError | None
    ) -> list[Done]:
        loop = asyncio.get_running_loop()

        async def one(item: T) -> Done:
            await self.permits.acquire()
            try:
                started = loop.time()
                encoded = prepare(item)
                (future,) = self.engine.submit([encoded.tokens], [encoded])
                tokenization = loop.time() - started
                forward = await future
            finally:
                self.permits.release()
            if after is not None:
                raise after
            return Done(encoded, forward, tokenization)

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
        """The prompt a request's `prompt_name` names; without one, the default prompt."""
        if name is None:
            return self.settings.default_prompt
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
        refuse: tuple[TeiError | None, TeiError | None] = (None, None),
    ) -> list[Done]:
        """The shared path of /embed, /v1/embeddings, /embed_all, /embed_sparse, /similarity.

        `refuse` holds what the model type makes every input fail with (models.py): first the
        route's own check, then `Infer::embed`'s, with `dimensions: 0` checked between them.
        """
        if inputs.batch:
            self.check_batch(len(inputs.items))
        s = self.settings
        truncate = s.auto_truncate if truncate is None else truncate
        route_refusal, embed_refusal = refuse

        def prepare(value: schema.Model) -> Encoded:
            if route_refusal is not None:
                raise route_refusal
            if dimensions == 0:
                raise TeiError(
                    ErrorType.VALIDATION, "`dimensions` should be positive", prefixed=True
                )
            if embed_refusal is not None:
                raise embed_refusal
            return encode(
                value,
                truncate=bool(truncate),
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

    def learn(self, tid: int, word: str) -> None:
        self.vocabulary[tid] = word
        if len(self.vocabulary) > 65536:
            self.vocabulary.popitem(last=False)
