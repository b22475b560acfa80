"""Where the proxy's parts' own words become a caller's answer: the batcher's refusals as TEI's
error statuses and shapes, and the one wrapper that turns a handler's ProxyError into its answer
and observes every answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .api.errors import TIMEOUT, UNHEALTHY, VALIDATION, ProxyError, overloaded
from .batching.answers import OverBudget, TooLarge
from .batching.refusals import Expired, Full, Refused, ShuttingDown, TooManyGroups
from .http.message import Answer, Handler, Later, Request, Response

JSON = "application/json"


def refusal(refused: Refused) -> ProxyError:
    """The answer for what the batcher refused or gave up on."""
    if isinstance(refused, Full):
        lane = f" for lane {refused.lane!r}" if refused.lane else ""
        if refused.asked > refused.capacity:  # no wait would make room: not a 429 to retry
            return ProxyError(
                413,
                f"{refused.asked} inputs exceed the queue{lane} ({refused.capacity} inputs); "
                "send fewer at once",
                VALIDATION,
                reason="too_large",
            )
        return overloaded(
            f"proxy queue{lane} is full ({refused.queued} of {refused.capacity} inputs waiting); "
            "retry later",
            retry_after_s=refused.retry_after,
        )
    if isinstance(refused, TooManyGroups):
        return overloaded(
            f"too many parameter groups waiting at once ({refused.limit}); retry later",
            reason="too_many_groups",
        )
    if isinstance(refused, TooLarge):
        return ProxyError(
            413,
            f"the answer exceeds limits.max_answer_bytes ({refused.limit} bytes); "
            "send fewer inputs at once",
            VALIDATION,
            reason="answer_too_large",
        )
    if isinstance(refused, OverBudget):
        return overloaded(
            f"answers held for waiting requests are over limits.max_answers_held_bytes "
            f"({refused.limit} bytes); retry later",
            reason="answers_held",
        )
    if isinstance(refused, Expired):
        return ProxyError(504, "request deadline passed while queued", TIMEOUT)
    if isinstance(refused, ShuttingDown):
        return ProxyError(503, "proxy is shutting down", UNHEALTHY)
    raise TypeError(f"no answer for {refused!r}")


class Outcome:
    """What a handler's work tells the wrapper besides its answer."""

    __slots__ = ("inputs", "started", "waited")

    def __init__(self, started: float = 0.0) -> None:
        self.inputs = 0  # inputs the request held, once parsed
        self.started = started  # perf_counter() at its arrival
        self.waited = 0.0  # seconds its inputs waited in the queue, the longest


# A handler's work: its answer, the Outcome filled in as it goes.
Work = Callable[[Request, Outcome], Answer]


def responder(
    work: Work,
    error_body: Callable[[ProxyError], bytes],
    observe: Callable[[str, int, float, int], None],
    reject: Callable[[ProxyError], None],
    route: str | None = None,
) -> Handler:
    """A handler from its work: a ProxyError becomes its answer in the dialect's shape (and a
    rejection counted), and every answer is observed under `route` (the request's path if None),
    in whichever form the work answers (http/message.py)."""

    def handle(request: Request) -> Answer:
        started = time.perf_counter()
        outcome = Outcome(started)
        try:
            answer = work(request, outcome)
        except ProxyError as e:
            answer = _error(e)
        kind = answer.__class__
        if kind is Later:
            finish = answer.finish  # type: ignore[union-attr]

            def finished(future: asyncio.Future[Any]) -> Response:
                try:
                    response = finish(future)
                except ProxyError as e:
                    response = _error(e)
                observe(route or request.path, response.status, started, outcome.inputs)
                return response

            answer.finish = finished  # type: ignore[union-attr]
            return answer
        if kind is not Response:
            return _awaited(answer, request, started, outcome)  # type: ignore[arg-type]
        observe(route or request.path, answer.status, started, outcome.inputs)  # type: ignore[union-attr]
        return answer

    def _error(e: ProxyError) -> Response:
        reject(e)
        return Response(e.status, error_body(e), JSON, headers=e.headers)

    async def _awaited(
        answer: Awaitable[Response], request: Request, started: float, outcome: Outcome
    ) -> Response:
        try:
            response = await answer
        except ProxyError as e:
            response = _error(e)
        observe(route or request.path, response.status, started, outcome.inputs)
        return response

    return handle
