"""The client for TEI: limits from /info, one pooled keep-alive session, retries with backoff for
overload and transient failures, and isolation of a bad input (a batch that TEI rejects for its
input is split until only the offending inputs fail)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ..api import errors
from ..api.answer_headers import CallTimes
from ..api.errors import TIMEOUT, UPSTREAM, ProxyError
from ..api.forwarding import (
    answer_headers,
    request_headers,
    target_url,
    url_credentials,
)
from ..api.splitting import share, split
from ..api.tei import Group
from ..batching.answers import AnswerBudget
from ..config.redaction import redact
from ..config.reload import Fingerprint, fingerprint
from ..config.settings import UpstreamConfig
from ..http import client as httpclient
from ..telemetry import logs
from ..telemetry.metrics import Metrics
from .errors import UpstreamError, describe, too_big
from .info import UpstreamInfo
from .retry import RetryBudget, backoff_seconds, retry_after_seconds

log = logging.getLogger(__name__)

# Statuses that belong to the input rather than to the upstream's state: split and retry halves.
INPUT_ERRORS = frozenset({400, 413, 422})
# TEI's 424 for one input whose score came out NaN (router/src/http/server.rs, `predict`): an
# input error too, unlike its other 424s (a backend failure, a route the model type lacks).
NAN = "score is NaN"
# Statuses that say "not now": safe to retry, embeddings being pure functions.
RETRY_STATUSES = frozenset({429, 503})


class Piece:
    """One input's answer: its raw JSON fragment, its share of the batch's tokens, and what the
    batch's answer headers said of its work (api/answer_headers.py)."""

    __slots__ = ("fragment", "times", "tokens")

    def __init__(
        self, fragment: bytes | memoryview, tokens: int, times: CallTimes | None = None
    ) -> None:
        self.fragment = fragment
        self.tokens = tokens
        self.times = times


class Upstream:
    def __init__(self, config: UpstreamConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        url = URL(config.url.rstrip("/"))
        # URL credentials: our own header (authorization()), never left in a URL a client reads.
        self.url_auth = url_credentials(url)
        # Credentials of its own that TEI (or what fronts it) requires: lent only to callers
        # who present them (app.Proxy.check_key).
        self.guarded = config.api_key_file is not None or self.url_auth is not None
        self.origin = url.with_user(None)
        self.base = str(self.origin)
        self.shown = redact(config.url.rstrip("/"))  # as it may be shown: without secrets
        self.budget = RetryBudget(config.retry.budget_ratio)
        self.info: UpstreamInfo | None = None
        self.api_key: str | None = None
        self._key_seen: Fingerprint = None
        self._general_client: aiohttp.ClientSession | None = None
        self._batch_client: httpclient.Client | None = None
        # Whether TEI answers: set by the health probes, cleared at once by a call that finds
        # the connection refused, reset or closed (the readiness endpoint reads it).
        self.answering = False
        self.state = logs.UpstreamState(self.shown, log)  # logs each change once
        self.losses = 0
        self._lost = asyncio.Event()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, keepalive_timeout=60, enable_cleanup_closed=True
        )
        self._general_client = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            max_headers=httpclient.MAX_HEADERS,
            middlewares=(self._only_upstream,),
        )
        self._batch_client = httpclient.Client(
            self.base,
            self.config.max_connections,
            self.config.max_answer_bytes,
            self.config.max_answer_buffer_bytes,
        )
        self.refresh_key()

    async def close(self) -> None:
        if self._general_client is not None:
            await self._general_client.close()
        if self._batch_client is not None:
            self._batch_client.close()

    @property
    def batch_client(self) -> httpclient.Client:
        """The lean client: batch POSTs, the hot path."""
        assert self._batch_client is not None, "Upstream.start() not called"
        return self._batch_client

    @property
    def general_client(self) -> aiohttp.ClientSession:
        """aiohttp: /info, /health and forwarded routes (any method, compressed answers, repeated
        headers), never anything but the upstream."""
        assert self._general_client is not None, "Upstream.start() not called"
        return self._general_client

    async def _only_upstream(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        """Every request the session makes (a redirect's too) goes to the upstream or nowhere."""
        url = request.url
        if (url.scheme, url.host, url.port) != (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ):
            raise aiohttp.InvalidUrlClientError(url.origin(), "not the configured upstream")
        return await handler(request)

    def refresh_key(self) -> None:
        """(Re)read the key TEI requires when its file (a mounted Secret) has changed."""
        path = self.config.api_key_file
        if path is None or fingerprint(path) == self._key_seen:
            return
        self._key_seen = fingerprint(path)
        try:
            self.api_key = path.read_text().strip() or None
        except OSError as e:
            log.error("cannot read upstream.api_key_file %s: %s", path, e.strerror)

    def authorization(self) -> str | None:
        """What every call to TEI sends: the key when there is one, else the URL's credentials."""
        return f"Bearer {self.api_key}" if self.api_key else self.url_auth

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if auth := self.authorization():
            headers["Authorization"] = auth
        return headers

    def lost(self, error: object) -> None:
        """A call found TEI not answering. Only the error path pays for this."""
        self.losses += 1
        if self.answering:
            self.answering = False
            self._lost.set()
            self.state.down(redact(logs.describe(error)))

    async def wait_for_loss(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a call finds TEI not answering meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._lost.wait()
        self._lost.clear()

    async def fetch_info(self) -> UpstreamInfo:
        """TEI's /info, read now (and kept in `info`)."""
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout_ms / 1000 + 3)
        try:
            async with self.general_client.get(
                self.base + "/info", headers=self._headers(), timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    message = f"upstream /info answered {resp.status}"
                    raise UpstreamError(502, message, UPSTREAM, logs.describe(message))
                self.info = UpstreamInfo.parse(orjson.loads(await resp.read()))
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            cause = logs.describe(e)
            raise UpstreamError(
                502, f"upstream {self.shown} unreachable: {redact(cause)}", UPSTREAM, cause
            ) from None
        return self.info

    async def healthy(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout_ms / 1000)
        try:
            async with self.general_client.get(
                self.base + "/health", headers=self._headers(), timeout=timeout
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def call_batch(
        self,
        group: Group,
        items: Sequence[Any],
        deadline: float,
        owners: Sequence[int] = (),
        context: Mapping[str, str] | None = None,
    ) -> list[Piece | ProxyError]:
        """One answer per item (`owners`: each item's caller, if known; `context`: the trace
        headers sent with it). A whole-batch failure raises ProxyError."""
        payload = group.payload(items)
        status, body, headers = await self._post(group.route, payload, deadline, context)
        if status == 200:
            fragments = split(body, len(items))
            tokens = share(_int_header(headers.get("x-compute-tokens")), items)
            times = CallTimes.of(headers)
            return [Piece(f, t, times) for f, t in zip(fragments, tokens, strict=True)]
        error = errors.from_upstream(status, body)
        input_error = status in INPUT_ERRORS or (status == 424 and error.message == NAN)
        if input_error and len(items) > 1 and (not owners or len(set(owners)) > 1):
            # Halve until each failing part holds one caller's inputs only: that caller's error.
            mid = len(items) // 2
            left, right = await asyncio.gather(
                self.call_batch(group, items[:mid], deadline, owners and owners[:mid], context),
                self.call_batch(group, items[mid:], deadline, owners and owners[mid:], context),
            )
            return left + right
        if input_error:
            return [error] * len(items)
        raise error

    async def _post(
        self, route: str, payload: bytes, deadline: float, context: Mapping[str, str] | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """POST with retries; (status, body, headers) of the last attempt."""
        sent = self._headers() if context is None else {**self._headers(), **context}
        loop = asyncio.get_running_loop()
        retry = self.config.retry
        self.budget.record_attempt()
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProxyError(504, "deadline passed before the upstream answered", TIMEOUT)
            started = time.perf_counter()
            self.metrics.upstream_inflight.inc()
            reason: str
            delay: float | None = None
            try:
                async with asyncio.timeout(min(self.config.timeout_ms / 1000, remaining)):
                    answer = await self.batch_client.post(
                        route, payload, sent, self.config.connect_timeout_ms / 1000
                    )
                body, status, headers = answer.body, answer.status, answer.headers
                delay = retry_after_seconds(headers.get("retry-after"))
            except TimeoutError:
                self._observe(route, "timeout", started)
                limit = (
                    "the request's deadline"
                    if remaining * 1000 < self.config.timeout_ms
                    else (f"upstream.timeout_ms ({self.config.timeout_ms} ms)")
                )
                message = f"upstream did not answer within {limit}"
                raise UpstreamError(504, message, TIMEOUT, "no answer in time") from None
            except httpclient.AnswerError as e:
                self._observe(route, "error", started)
                raise UpstreamError(
                    502, f"upstream answer refused: {e}", UPSTREAM, f"answer refused: {e}"
                ) from None
            except httpclient.ClientError as e:
                self._observe(route, "error", started)
                self.lost(e)
                reason, status, body, headers = "connection", 0, b"", {}
                error = UpstreamError(
                    502, f"upstream {self.shown} unreachable: {redact(str(e))}", UPSTREAM, str(e)
                )
            else:
                self._observe(route, str(status), started)
                if status not in RETRY_STATUSES:
                    return status, body, headers
                reason = str(status)
                error = errors.from_upstream(status, body)
            finally:
                self.metrics.upstream_inflight.dec()
            if attempt >= retry.max_attempts or not self.budget.try_spend():
                if status:
                    return status, body, headers
                raise error
            pause = backoff_seconds(attempt, retry.backoff_ms, retry.max_backoff_ms)
            if delay is not None:
                pause = max(pause, min(delay, retry.max_backoff_ms / 1000))
            if loop.time() + pause >= deadline:
                if status:
                    return status, body, headers
                raise error
            self.metrics.retries.labels(reason=reason).inc()
            await asyncio.sleep(pause)

    def _observe(self, route: str, outcome: str, started: float) -> None:
        self.metrics.upstream_responses.labels(route=route, status=outcome).inc()
        self.metrics.upstream_duration.labels(route=route).observe(time.perf_counter() - started)

    def target(self, path: str, query: str) -> URL:
        return target_url(self.origin, path, query)

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        deadline: float,
        answers: AnswerBudget[Any] | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Pass a request through unchanged, but for hop-by-hop headers and keys. Its answer
        is held within `upstream.max_answer_bytes` (502) and, with `answers`, within one
        request's answer budget (413) and all requests' (429)."""
        url = self.target(path, query)
        out = request_headers(headers)
        # The caller's credentials stay here: TEI gets the proxy's own, or none.
        if auth := self.authorization():
            out["Authorization"] = auth
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = aiohttp.ClientTimeout(
            total=max(0.001, min(self.config.timeout_ms / 1000, remaining)),
            sock_connect=self.config.connect_timeout_ms / 1000,
        )
        limit = self.config.max_answer_bytes
        try:
            async with self.general_client.request(
                method,
                url,
                data=body or None,
                headers=out,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                if not 200 <= resp.status <= 599:
                    message = f"upstream answered status {resp.status}"
                    raise UpstreamError(502, message, UPSTREAM, message)
                if resp.content_length is not None and resp.content_length > limit:
                    raise too_big(limit)
                parts: list[bytes] = []
                size = taken = 0
                try:
                    async for chunk in resp.content.iter_any():
                        size += len(chunk)
                        if size > limit:
                            raise too_big(limit)
                        if answers is not None:
                            taken += len(chunk)
                            answers.hold(size, len(chunk))
                        parts.append(chunk)
                    return resp.status, answer_headers(resp.raw_headers), b"".join(parts)
                finally:
                    if answers is not None:
                        answers.release(taken)
        except TimeoutError:
            raise UpstreamError(
                504, "upstream did not answer in time", TIMEOUT, "no answer in time"
            ) from None
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as e:
            # The answer broke the parser or a limit. aiohttp's message, without the bytes it may
            # quote after a colon.
            what = str(e.message if isinstance(e, aiohttp.ClientResponseError) else e)
            what = what.partition(":")[0]
            raise UpstreamError(
                502, f"upstream answer refused: {what}", UPSTREAM, f"answer refused: {what}"
            ) from None
        except aiohttp.ClientError as e:
            if isinstance(e, aiohttp.ClientConnectionError):
                self.lost(describe(e))
            raise UpstreamError(
                502, f"upstream {self.shown} unreachable: {describe(e)}", UPSTREAM, describe(e)
            ) from None


def _int_header(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
