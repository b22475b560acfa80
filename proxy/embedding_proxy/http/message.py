"""What the HTTP server's users see: a request read in full, the answer a handler gives, the
handler's signature, and the limits one peer is held to (docs/security.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Limits:
    """What one peer may make the server hold, and for how long (docs/security.md)."""

    max_body_bytes: int = 2_000_000  # larger bodies: 413, never held
    max_head_bytes: int = 64 * 1024  # request line and headers (HEADER_OVERHEAD each): 431
    max_header_count: int = 100  # more headers: 431
    head_timeout: float = 10.0  # a request head not complete this long after it began: 408
    body_timeout: float = 30.0  # a body not complete this long after its head: 408
    keepalive_timeout: float = 75.0  # a connection idle between requests this long is closed
    send_timeout: float = 60.0  # a client that takes none of its answer this long is dropped
    max_connections: int = 4096  # at this many, the longest-idle keep-alive one is closed;
    # with none idle, a new connection gets 503 and a close
    # Request bodies held (being read, or waiting for their answer) across all connections: a
    # body is read only once its whole size (Content-Length, or max_body_bytes if chunked)
    # fits; until then its connection is not read.
    max_body_buffer_bytes: int = 256 * 1024 * 1024
    # Answers held in write buffers for clients that do not take them as fast as they come,
    # across all connections: beyond it, the connection whose client has left its answer
    # waiting longest is dropped.
    max_answer_buffer_bytes: int = 256 * 1024 * 1024
    # GET and HEAD paths answered even on a connection over `max_connections` (the probes).
    probe_paths: frozenset[str] = frozenset()


class Request:
    """One request, its body read in full."""

    __slots__ = ("body", "headers", "method", "oversize", "path", "query", "remote")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        remote: str | None,
        oversize: bool = False,
    ) -> None:
        self.method = method
        self.path = path  # always starts with "/" (or is "*" for OPTIONS, answered here)
        self.query = query
        self.headers = headers  # names in lower case; repeated headers joined with ", "
        self.body = body
        self.remote = remote
        self.oversize = oversize  # the body was over the limit and was not read

    @property
    def path_qs(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type")
        if not value:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()


class Response:
    """An answer. `headers` is a dict, or a list of (name, value) pairs for repeated headers
    (Set-Cookie); either is written in order. `lines`: header lines the handler wrote itself
    (`Name: value\r\n` each, names tokens, values without control characters), written as
    they are after `headers`, unchecked: the cheap way for headers made of the proxy's own
    numbers."""

    __slots__ = ("body", "content_type", "headers", "lines", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        lines: bytes = b"",
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.lines = lines


class Later:
    """An answer that waits on one future, with no task of its own: once `future` is done the
    server writes `finish(future)`. `finish` is called however the future ends, cancelled too
    (the client left), and then raises CancelledError once it has tidied up. The hot path's form:
    a task and the coroutines it steps through cost the proxy about 55k instructions a request
    more than one callback (docs/benchmarks.md, section 11)."""

    __slots__ = ("finish", "future")

    def __init__(
        self, future: asyncio.Future[Any], finish: Callable[[asyncio.Future[Any]], Response]
    ) -> None:
        self.future = future
        self.finish = finish


# What a handler gives: an answer now, a Later, or a coroutine to run as a task.
Answer = Response | Later | Coroutine[Any, Any, Response]
Handler = Callable[[Request], Answer]


def then(answer: Answer, change: Callable[[Response], Response]) -> Answer:
    """`answer` with `change` applied to its response once there is one, in the same form."""
    kind = answer.__class__
    if kind is Response:
        return change(answer)  # type: ignore[arg-type]
    if kind is Later:
        finish = answer.finish  # type: ignore[union-attr]
        answer.finish = lambda future: change(finish(future))  # type: ignore[union-attr]
        return answer
    return _then(answer, change)  # type: ignore[arg-type]


async def _then(answer: Awaitable[Response], change: Callable[[Response], Response]) -> Response:
    return change(await answer)


async def settle(answer: Answer) -> Response:
    """The response of any answer, awaited (for handlers that wrap others in a coroutine)."""
    kind = answer.__class__
    if kind is Response:
        return answer  # type: ignore[return-value]
    if kind is not Later:
        return await answer  # type: ignore[misc]
    future = answer.future  # type: ignore[union-attr]
    try:
        await asyncio.wait((future,))
    except asyncio.CancelledError:  # the client left: so does the work, tidied up by finish
        future.cancel()
        answer.finish(future)  # type: ignore[union-attr]
        raise
    return answer.finish(future)  # type: ignore[union-attr]


# Asked with a request's head (its body empty and unread) before its body is read: an answer
# here is given at once and the body is never read (the connection then closes).
Vet = Callable[[Request], Response | None]
