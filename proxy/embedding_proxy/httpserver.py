"""A small HTTP/1.1 server on asyncio's protocol layer and httptools' parser.

The proxy's own CPU per request is what bounds its throughput, and a general web framework costs
about as much per request as everything else the proxy does. This server does only what the proxy
needs: whole bodies up to a size limit, keep-alive and pipelining (answers in order, one handler
at a time per connection), `Expect: 100-continue`, idle-connection timeout, and a handler that is
cancelled when its client disconnects, so that a caller who left takes its inputs out of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers
MAX_PIPELINED = 16  # requests queued on one connection before it stops reading
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
# Framing is ours to write; a handler's (or an upstream's) copy of these would contradict it.
_OWN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "keep-alive"}
)


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
        self.path = path
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
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


Handler = Callable[[Request], Awaitable[Response]]


class _Clock:
    """The Date header, formatted once a second rather than once a response."""

    def __init__(self) -> None:
        self._second = 0
        self._line = b""

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


def _head(response: Response, keep_alive: bool, date: bytes) -> bytes:
    status = response.status
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown")), date]
    skip = _OWN_HEADERS
    if response.content_type is not None:
        lines.append(b"Content-Type: " + response.content_type.encode("latin-1") + b"\r\n")
        skip = _OWN_HEADERS | {"content-type"}
    if response.headers:
        headers = response.headers
        # A list keeps repeated headers (an upstream's two Set-Cookie), in order.
        for name, value in headers.items() if isinstance(headers, dict) else headers:
            if name.lower() not in skip:
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class Connection(asyncio.Protocol):
    """One client connection: parse requests, run them in order, write the answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        self.pending: deque[tuple[Request, bool]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.last_active = self.loop.time()
        self.closing = False
        self.paused = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.header_list: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.body_parts: list[bytes] = []
        self.body_bytes = 0
        self.oversize = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.pending.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the caller left: its handler (and queued inputs) go with it

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {e}".encode())

    # No eof_received: a client's FIN closes the connection and cancels its handler. A client
    # that half-closes to wait for its answer is rare; one that gave up is common.

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name, value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, b"request line and headers are too large")
            raise httptools.HttpParserError("head too large")

    def on_headers_complete(self) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.header_list:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        length = headers.get("content-length")
        limit = self.server.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            self._oversize()
            return
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.oversize:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body_bytes:
            self._oversize()
            return
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        if self.oversize:
            return
        keep_alive = self.parser.should_keep_alive()
        self._enqueue(self._request(b"".join(self.body_parts)), keep_alive)

    # Requests in order.
    def _request(self, body: bytes, oversize: bool = False) -> Request:
        url = httptools.parse_url(self.url)
        path = (url.path or b"/").decode("latin-1")
        query = url.query.decode("latin-1") if url.query else ""
        method = self.parser.get_method().decode("latin-1")
        return Request(method, path, query, self.headers, body, self.remote, oversize)

    def _oversize(self) -> None:
        """Answer at once (the handler decides the body); the rest of the body is read and
        dropped, so the client sees the answer rather than a reset connection."""
        self.oversize = True
        self._enqueue(self._request(b"", oversize=True), self.parser.should_keep_alive())

    def _enqueue(self, request: Request, keep_alive: bool) -> None:
        self.pending.append((request, keep_alive))
        if self.task is None:
            self._next()
        elif len(self.pending) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def _next(self) -> None:
        if self.closing or not self.pending:
            self.task = None
            return
        request, keep_alive = self.pending.popleft()
        if self.paused and len(self.pending) < MAX_PIPELINED // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.task = self.loop.create_task(self._run(request, keep_alive))

    async def _run(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self.server.handler(request)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            response = Response(
                500,
                b'{"error":"internal error in the proxy","error_type":"Backend"}',
                "application/json",
            )
        transport = self.transport
        if transport is None or self.closing:
            return
        keep_alive = keep_alive and not self.server.closing
        head = _head(response, keep_alive, self.server.clock.date_line())
        if request.method == "HEAD":
            transport.write(head)
        else:
            transport.writelines([head, response.body])
        self.last_active = self.loop.time()
        if not keep_alive:
            self.closing = True
            transport.close()
            return
        self._next()

    def _fail(self, status: int, message: bytes) -> None:
        """A request we cannot parse: answer plainly and close."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        response = Response(status, message + b"\n", "text/plain; charset=utf-8")
        self.transport.write(_head(response, False, self.server.clock.date_line()) + response.body)
        self.transport.close()

    @property
    def idle(self) -> bool:
        return self.task is None and not self.pending


class Server:
    """Listen on one address; `close` stops accepting and lets answers in progress finish."""

    def __init__(
        self, handler: Handler, max_body_bytes: int, keepalive_seconds: float = 75.0
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.clock = _Clock()
        self.closing = False
        self._listener: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, backlog: int = 4096) -> None:
        self._listener = await self.loop.create_server(
            lambda: Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        self._sweeper = self.loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than the timeout."""
        while True:
            await asyncio.sleep(min(5.0, self.keepalive_seconds))
            cutoff = self.loop.time() - self.keepalive_seconds
            for conn in list(self.connections):
                if conn.idle and conn.last_active < cutoff and conn.transport is not None:
                    conn.transport.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close idle connections, wait up to `timeout` for answers in progress."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        end = self.loop.time() + timeout
        while True:
            for conn in list(self.connections):
                if conn.idle and conn.transport is not None:
                    conn.transport.close()
            if not self.connections or self.loop.time() >= end:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
