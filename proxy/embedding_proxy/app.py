"""The sidecar's HTTP side: handlers for TEI's and OpenAI's dialects, health, readiness and
metrics, and the lifecycle (start, config reload, graceful drain). The background chores are in
housekeeping.py, the error-to-answer wrapper in respond.py, the routes in routes.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .api import answer_headers
from .api import openai as openai_api
from .api import tei as tei_api
from .api.errors import UNHEALTHY, VALIDATION, ProxyError, too_large
from .batching.answers import AnswerBudget
from .batching.batcher import Batcher
from .batching.deadlines import Deadlines
from .callers.auth import KeyStore, check_lent
from .callers.priority import HEADER, Key, Priorities, Who
from .callers.ratelimit import RateLimiter
from .config.reload import ConfigWatcher
from .config.settings import Config
from .housekeeping import Housekeeping
from .http.cors import Cors
from .http.message import Answer, Later, Request, Response
from .queued import Queued, Render
from .respond import Outcome, responder
from .telemetry import trace
from .telemetry.metrics import Metrics, Tally
from .upstream.client import Piece, Upstream

log = logging.getLogger(__name__)

JSON = "application/json"
TIMEOUT_HEADER = "x-request-timeout-ms"
fragment = operator.attrgetter("fragment")  # of a Piece
_MILLISECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


def _tei_answer(req: tei_api.BatchRequest, pieces: list[Piece], outcome: Outcome) -> Response:
    return Response(
        body=tei_api.render(req, list(map(fragment, pieces))),
        content_type=JSON,
        lines=answer_headers.for_caller(req.items, pieces, outcome.waited, outcome.started),
    )


class Proxy:
    """Everything one proxy process holds: config, metrics, batcher, upstream client, state."""

    def __init__(self, config: Config, reload: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.set_config_version(config.version)
        self.upstream = Upstream(config.upstream, self.metrics)
        self.batcher: Batcher[tei_api.Group, tuple[int, Any], Piece] = Batcher(
            self._dispatch,
            config.batching,
            on_batch=self.metrics.observe_batch,
            answers=(ProxyError,),
            on_full=self.metrics.count_full,
            # TEI's /tokenize takes no permits (router/src/http/server.rs).
            takes_permits=lambda group: group.route != "/tokenize",
        )
        self.priorities = Priorities(config.batching)
        self.answers: AnswerBudget[Piece] = AnswerBudget(
            config.limits.max_answer_bytes,
            config.limits.max_answers_held_bytes,
            _piece_size,
            _keep_piece,
        )
        self.keys = KeyStore(config.auth)
        self.cors = Cors(config.server.cors_allow_origin)
        self.limiter = RateLimiter(config.limits.rate_per_second, config.limits.rate_burst)
        self.housekeeping = Housekeeping(self, config.upstream)
        self.draining = False  # the pod terminates (SIGTERM or SIGUSR1): not ready, still serving
        self.stopping = False  # drain delay over: new work refused
        self.started_at = int(time.time())
        self._reload = reload
        self.callers = itertools.count()  # numbers each request's inputs: isolation per caller
        self.traces: dict[int, dict[str, str]] = {}  # callers' trace contexts, while queued
        self.deadlines: Deadlines[Queued] = Deadlines(Queued.expire)
        self._drain: asyncio.Task[None] | None = None
        self._tally = Tally(self.metrics)
        self._tasks: list[asyncio.Task[None]] = []
        self.watcher: ConfigWatcher | None = None
        self.handle_tei = responder(self._tei, ProxyError.tei_body, *self.tally)
        self.handle_openai = responder(
            self._openai, ProxyError.openai_body, *self.tally, route="/v1/embeddings"
        )
        self.handle_openai_bare = responder(
            self._openai, ProxyError.openai_body, *self.tally, route="/embeddings"
        )

    # Lifecycle.
    async def start(self, config_path: Path | None = None) -> None:
        await self.upstream.start()
        self._tasks.append(asyncio.create_task(self.housekeeping.watch_upstream()))
        self._tasks.append(asyncio.create_task(self.housekeeping.sample_and_tidy()))
        if config_path is not None and self._reload is not None:
            self.watcher = ConfigWatcher(
                config_path, self._reload, self.apply, self._count_reload, lambda: self.config
            )
            self._tasks.append(asyncio.create_task(self.watcher.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.close()
        await self.upstream.close()

    def begin_drain(self) -> asyncio.Task[None]:
        """The pod is terminating (SIGUSR1 from the preStop hook, or SIGTERM): start the drain,
        once; the process stays up until SIGTERM."""
        if self._drain is None:
            self.draining = True
            self._drain = asyncio.create_task(self._drain_work())
        return self._drain

    async def shutdown(self) -> None:
        """SIGTERM: drain (or finish the drain under way), then return."""
        await self.begin_drain()

    async def _drain_work(self) -> None:
        """Unready at once, serve through the drain delay, then finish queued work."""
        server = self.config.server
        log.info("draining: not ready; serving new requests for %.1f s", server.drain_seconds)
        await asyncio.sleep(server.drain_seconds)
        self.stopping = True
        done = await self.batcher.drain(server.grace_seconds)
        log.info("drained: %s", "all work answered" if done else "grace period ran out")

    def apply(self, config: Config) -> None:
        """A reloaded config: batching and limits apply live; the rest needs a restart."""
        for section in ("server", "upstream"):
            if getattr(config, section) != getattr(self.config, section):
                log.warning("config: %s settings changed; they apply after a restart", section)
        self.config = self.config.model_copy(
            update={
                "version": config.version,
                "batching": config.batching,
                "limits": config.limits,
                "auth": config.auth,
            }
        )
        self.batcher.update(settings=config.batching)
        self.priorities = Priorities(config.batching)
        limits = config.limits
        self.answers.per_request = limits.max_answer_bytes
        self.answers.total = limits.max_answers_held_bytes
        self.keys.update(config.auth)
        if (limits.rate_per_second, limits.rate_burst) != (
            self.limiter.rate,
            self.limiter.burst_setting,
        ):
            self.limiter = RateLimiter(limits.rate_per_second, limits.rate_burst)
        self.metrics.set_config_version(config.version)
        log.info("config %r applied: %s", config.version, config.batching)

    def _count_reload(self, ok: bool) -> None:
        self.metrics.config_reloads.labels(result="ok" if ok else "failed").inc()

    # The batch path.
    async def _dispatch(
        self, group: tei_api.Group, items: list[tuple[int, Any]], deadline: float
    ) -> Sequence[Piece | ProxyError]:
        owners, inputs = zip(*items, strict=True)  # items are (caller, input)
        traced = self.traces
        # The trace context of the first caller that sent one (telemetry/trace.py).
        context = next((traced[o] for o in owners if o in traced), None) if traced else None
        return await self.upstream.call_batch(group, inputs, deadline, owners, context)

    def deadline(self, request: Request) -> float:
        ms = float(self.config.server.request_timeout_ms)
        header = request.headers.get(TIMEOUT_HEADER)
        if header is not None:
            # Digits only: float() would take "nan", "-5", "1e3" and "1_0"; 0 is no deadline.
            if not _MILLISECONDS.fullmatch(header) or float(header) <= 0:
                raise ProxyError(
                    400,
                    "X-Request-Timeout-Ms must be a positive number of milliseconds",
                    VALIDATION,
                )
            ms = min(ms, float(header))
        return asyncio.get_running_loop().time() + ms / 1000

    async def run_batch(
        self,
        req: tei_api.BatchRequest,
        deadline: float,
        who: Who,
        outcome: Outcome | None = None,
        context: dict[str, str] | None = None,
    ) -> list[Piece]:
        """Queue a request's inputs and wait; the first error fails it, its queued inputs unsent.
        `outcome.waited`: the longest its inputs waited in the queue; `context`: its trace's."""
        queued = Queued(self, req, deadline, who, outcome, context)
        try:
            await queued.wait()
        finally:
            queued.close()
        return queued.pieces()

    def admit(self, request: Request) -> Who:
        """The caller and its lane; refused while stopping, without a valid key, over the
        client's rate, or asking for a lane above its key's."""
        if self.stopping:
            raise ProxyError(503, "proxy is shutting down", UNHEALTHY, reason="shutting_down")
        headers = request.headers
        gated = self.keys.enabled or self.upstream.guarded
        key = self.check_key(headers.get("authorization")) if gated else None
        if self.limiter.enabled:
            client = key.key if key else request.remote or "unknown"
            self.limiter.take(client, asyncio.get_running_loop().time())
        return self.priorities.who(headers.get(HEADER), key, request.remote)

    def check_key(self, authorization: str | None) -> Key | None:
        """The caller's key, when the proxy has keys of its own; else, when it holds the
        upstream's credentials, the caller must present those same ones (never lent to a
        caller TEI would refuse); else anyone may call. 401 otherwise."""
        if self.keys.enabled:
            return self.keys.check(authorization)
        if self.upstream.guarded:
            check_lent(authorization, self.upstream.authorization())
        return None

    def read_body(self, request: Request) -> tuple[bytes, Who]:
        who = self.admit(request)
        if request.oversize:
            raise too_large(self.config.server.max_body_bytes)
        # axum's Json, as TEI reads it: application/json, or any application/*+json.
        if request.headers.get("content-type") != JSON and not _json(request.content_type):
            raise ProxyError(
                415,
                "Expected request with `Content-Type: application/json`",
                VALIDATION,
                reason="content_type",
            )
        return request.body, who

    # Handlers.
    def _tei(self, request: Request, outcome: Outcome) -> Answer:
        body, who = self.read_body(request)
        req = tei_api.parse(request.path, body, self.config.limits)
        return self.answer_batch(req, request, who, outcome)

    def answer_batch(
        self,
        req: tei_api.BatchRequest,
        request: Request,
        who: Who,
        outcome: Outcome,
        render: Render = _tei_answer,
    ) -> Answer:
        """Queue a parsed request and answer it, by default in TEI's shape for its route. One
        input (the hot path) is answered by the server when its future is done (`Later`);
        more are awaited."""
        outcome.inputs = len(req.items)
        headers = request.headers
        context = trace.context(headers) if "traceparent" in headers else None
        deadline = self.deadline(request)
        if len(req.items) == 1:
            queued = Queued(self, req, deadline, who, outcome, context, render)
            return Later(queued.futures[0], queued.finish)
        return self._answer_batch(req, deadline, who, outcome, context, render)

    async def _answer_batch(
        self,
        req: tei_api.BatchRequest,
        deadline: float,
        who: Who,
        outcome: Outcome,
        context: dict[str, str] | None,
        render: Render,
    ) -> Response:
        return render(req, await self.run_batch(req, deadline, who, outcome, context), outcome)

    @property
    def served_model_name(self) -> str:
        """The `model` of OpenAI answers: TEI's `served_model_name` (its model id before 1.9)."""
        info = self.upstream.info
        return info.served_model_name if info is not None else "unknown"

    def _openai(self, request: Request, outcome: Outcome) -> Answer:
        body, who = self.read_body(request)
        req, encoding = openai_api.parse(body, self.config.limits)

        def render(req: tei_api.BatchRequest, pieces: list[Piece], outcome: Outcome) -> Response:
            return Response(
                body=openai_api.render(
                    list(map(fragment, pieces)),
                    sum(p.tokens for p in pieces),
                    self.served_model_name,
                    encoding,
                ),
                content_type=JSON,
                lines=answer_headers.for_caller(req.items, pieces, outcome.waited, outcome.started),
            )

        return self.answer_batch(req, request, who, outcome, render)

    async def handle_health(self, request: Request) -> Response:
        return Response(status=200)

    async def handle_ready(self, request: Request) -> Response:
        if self.draining:
            reason = "draining"
        elif not self.upstream.answering:
            reason = f"upstream {self.upstream.shown} not answering"
        else:
            return Response(200, b'{"status":"ready"}', JSON)
        body = orjson.dumps({"status": "not ready", "reason": reason})
        return Response(503, body, JSON)

    async def handle_metrics(self, request: Request) -> Response:
        m, b = self.metrics, self.batcher
        m.queue_depth.set(b.queue_depth)
        m.set_lanes(b.lanes)
        m.inflight_inputs.set(b.inflight_inputs)
        m.queue_depth_avg.set(self.housekeeping.queue_depth_avg.value)
        m.groups.set(b.group_count)
        m.batch_size_limit.set(b.batch_size_limit)
        m.upstream_concurrency_limit.set(b.concurrency.limit())
        m.upstream_up.set(1 if self.upstream.answering else 0)
        return Response(200, generate_latest(m.registry), CONTENT_TYPE_LATEST)

    async def handle_metrics_elsewhere(self, request: Request) -> Response:
        port = self.config.server.metrics_port
        body = f"metrics are served on port {port} (server.metrics_port)\n".encode()
        return Response(404, body, "text/plain; charset=utf-8")

    @property
    def tally(self) -> tuple[Callable[[str, int, float, int], None], Callable[[ProxyError], None]]:
        return self._tally.observe, self._tally.count_rejection


def _json(kind: str) -> bool:
    return kind == JSON or (kind.startswith("application/") and kind.endswith("+json"))


def _piece_size(piece: Piece) -> int:
    return len(piece.fragment)


def _keep_piece(piece: Piece) -> int:
    """A result held while its request waits for the rest: a copy, not a view that would keep
    its whole batch's answer alive (others' results in it are gone once they are answered)."""
    if piece.fragment.__class__ is memoryview:
        piece.fragment = bytes(piece.fragment)
    return len(piece.fragment)
