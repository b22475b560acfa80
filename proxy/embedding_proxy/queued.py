"""One request's inputs from the moment they are queued until the request is answered or its
caller leaves: submitted to the batcher, expired at the request's deadline, waited on (by a
coroutine, or by the HTTP server for a request of one input: http/message.py `Later`), and
tidied up however they end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from .api import tei as tei_api
from .api.errors import TIMEOUT, ProxyError
from .batching.answers import AnswerBudget, TooLarge
from .batching.batcher import Batcher
from .batching.deadlines import Deadlines
from .batching.refusals import Refused
from .callers.priority import Who
from .http.message import Response
from .respond import Outcome, refusal
from .telemetry import logs
from .upstream.client import Piece


class Proxy(Protocol):
    """What a request's inputs use of the proxy (app.Proxy)."""

    callers: Iterator[int]  # numbers each request's inputs: isolation per caller
    batcher: Batcher[tei_api.Group, tuple[int, Any], Piece]
    traces: dict[int, dict[str, str]]  # callers' trace contexts, while queued
    deadlines: Deadlines[Queued]
    answers: AnswerBudget[Piece]


# A request's answer from its inputs' answers.
Render = Callable[[tei_api.BatchRequest, list[Piece], Outcome], Response]


class Queued:
    """A request's inputs in the queue. Refused (a ProxyError) when the batcher will not take
    them; `close` once, however the request ends."""

    __slots__ = (
        "caller",
        "context",
        "entries",
        "futures",
        "outcome",
        "proxy",
        "render",
        "req",
        "slot",
    )

    def __init__(
        self,
        proxy: Proxy,
        req: tei_api.BatchRequest,
        deadline: float,
        who: Who,
        outcome: Outcome | None,
        context: dict[str, str] | None,
        render: Render | None = None,
    ) -> None:
        self.proxy = proxy
        self.req = req
        self.render = render
        self.outcome = outcome
        self.context = context
        self.caller = caller = next(proxy.callers)
        items = req.items
        owned = [(caller, items[0])] if len(items) == 1 else [(caller, i) for i in items]
        try:
            self.entries = proxy.batcher.submit(req.key, owned, req.costs, deadline, *who)
        except Refused as e:
            raise refusal(e) from None
        if context is not None:
            proxy.traces[caller] = context
        self.futures = [e.future for e in self.entries]
        self.slot = proxy.deadlines.add(deadline, self)

    def expire(self) -> None:
        """The deadline passed: every input not yet answered fails with 504."""
        for future in self.futures:
            if not future.done():
                future.set_exception(
                    ProxyError(
                        504,
                        "request did not finish within its deadline",
                        TIMEOUT,
                        reason="deadline",
                    )
                )

    async def wait(self) -> None:
        """Until every input is answered or one has failed (within the answer budget)."""
        try:
            if len(self.futures) == 1:
                await asyncio.wait(self.futures)
            else:
                await self.proxy.answers.gather(self.futures)
        except Refused as e:
            raise refusal(e) from None

    def close(self) -> None:
        """Inputs still queued are dropped; what the request's answer and log say is noted."""
        proxy, entries = self.proxy, self.entries
        proxy.deadlines.remove(self.slot, self)
        first = entries[0]
        if len(entries) > 1 or first.queued or not first.future.done():
            proxy.batcher.cancel(entries)  # inputs still queued or pending are dropped
        if self.context is not None:
            del proxy.traces[self.caller]
        outcome = self.outcome
        if outcome is not None:
            if len(entries) == 1:  # the hot path: one input
                e = entries[0]
                outcome.waited = e.started - e.enqueued if e.started else 0.0
            else:
                outcome.waited = _longest_wait(entries)
        access = logs.current()
        if access is not None:
            _time_batch(access, entries, asyncio.get_running_loop().time())

    def finish(self, future: asyncio.Future[Any]) -> Response:
        """A request of one input, its future done: its answer (`Later`'s finish)."""
        self.close()
        assert self.render is not None and self.outcome is not None
        return self.render(self.req, self.pieces(), self.outcome)

    def pieces(self) -> list[Piece]:
        """Every input's answer, or the first failure raised."""
        futures = self.futures
        for future in futures:
            if future.cancelled():
                raise asyncio.CancelledError
            error = future.exception()
            if error is not None:
                raise refusal(error) if isinstance(error, Refused) else error
        if len(futures) == 1:
            piece: Piece = futures[0].result()
            if len(piece.fragment) > self.proxy.answers.per_request:
                raise refusal(TooLarge(self.proxy.answers.per_request))
            return [piece]
        return [f.result() for f in futures]


def _time_batch(access: logs.Access, entries: Sequence[Any], now: float) -> None:
    """A request's inputs, their longest queue wait and upstream time, for the access log."""
    access.inputs += len(entries)
    started = [e.started for e in entries if e.started]
    if started:
        access.queue_s = max(e.started - e.enqueued for e in entries if e.started)
        access.upstream_s = now - min(started)


def _longest_wait(entries: Sequence[Any]) -> float:
    return max((e.started - e.enqueued for e in entries if e.started), default=0.0)
