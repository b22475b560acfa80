"""A small HTTP/1.1 server on asyncio's protocol layer and httptools' parser.

The proxy's own CPU per request is what bounds its throughput, and a general web framework costs
about as much per request as everything else the proxy does. This server does only what the proxy
needs: whole bodies up to a size limit, keep-alive and pipelining (answers in order, one handler
at a time per connection), `Expect: 100-continue`, and a handler that is cancelled when its client
disconnects, so that a caller who left takes its inputs out of the queue.

Every byte a peer sends is hostile (docs/security.md): request targets are origin-form only, the
framing rules are h11's, the head, the header count, the body, the pipeline and the answers waiting
to be written are bounded, and slow peers meet timeouts. uvicorn's httptools protocol and its flow
control were the checklist.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import httptools

log = logging.getLogger(__name__)

MAX_PIPELINED = 16  # requests queued behind the one in progress before reading stops ...
PIPELINED_BYTES = 256 * 1024  # ... or this many bytes of their bodies
FEED_SLICE = 16 * 1024  # a large read is parsed in slices, so that a full pipeline stops within one
HEADER_OVERHEAD = 64  # bytes charged per header against max_head_bytes: what a header costs held
BODY_FRAMING = 8  # a body may come with up to this many times its size in chunk framing
TRIM_AFTER = 64 * 1024 * 1024  # bodies held at once before the heap is trimmed when all are gone
LINGER_SECONDS = 5.0  # after a last answer, read and drop what the client still sends, this long
_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is: between requests, in a head, in a body

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus if s >= 200
}
_NO_BODY = frozenset({204, 304})  # and 1xx: answers that carry neither a body nor its length
# Framing is ours to write; a handler's (or an upstream's) copy of these would contradict it.
_OWN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "keep-alive"}
)
_OWN_WITH_TYPE = _OWN_HEADERS | {"content-type"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a header value: all but HTAB
_ALLOW = {"Allow": "GET, HEAD, POST, OPTIONS"}


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
    (Set-Cookie); either is written in order."""

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
# Asked with a request's head (its body empty and unread) before its body is read: an answer
# here is given at once and the body is never read (the connection then closes).
Vet = Callable[[Request], Response | None]


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


def _head(response: Response, keep_alive: bool, date: bytes, head_only: bool = False) -> bytes:
    """The status line and headers. Raises ValueError (or UnicodeEncodeError) for an answer
    that cannot be written: a bad status, a header name that is not a token, a control
    character or a character beyond Latin-1 in a value."""
    status = response.status
    line = _STATUS_LINES.get(status)
    if line is None:
        if status.__class__ is not int or not 200 <= status <= 599:
            raise ValueError(f"cannot answer with status {status!r}")
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    lines = [line, date]
    no_body = status in _NO_BODY
    skip = _OWN_HEADERS
    if response.content_type is not None and not no_body:
        lines.append(_type_line(response.content_type))
        skip = _OWN_WITH_TYPE
    headers = response.headers
    if headers:
        for name, value in headers if headers.__class__ is list else headers.items():
            if name.lower() not in skip:
                if _TOKEN.fullmatch(name) is None:
                    raise ValueError(f"header name {name!r} is not a token")
                lines.append(name.encode() + b": " + _value(value) + b"\r\n")
    if not no_body:
        lines.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


@functools.lru_cache(maxsize=64)  # a handful of types, checked once each
def _type_line(content_type: str) -> bytes:
    return b"Content-Type: " + _value(content_type) + b"\r\n"


def _value(value: str) -> bytes:
    if _CONTROL.search(value) is not None:
        raise ValueError(f"header value {value!r} holds a control character")
    return value.encode("latin-1")


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, message.encode() + b"\n", "text/plain; charset=utf-8", headers)


_INTERNAL_ERROR = b'{"error":"internal error in the proxy","error_type":"Backend"}'


class Connection(asyncio.Protocol):
    """One client connection: parse requests, run them in order, write the answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        # Requests received, not yet answered: (request, keep_alive); a Response or None in
        # place of a request is a last answer (or none) after which the connection closes.
        self.pending: deque[tuple[Request | Response | None, bool]] = deque()
        self.pending_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.phase = _IDLE
        self.since = self.loop.time()  # when the phase began (a head, a body, reading again)
        self.messages = 0  # requests begun
        self.served = 0  # answers written
        self.answered_at = 0.0  # when the last one was
        self.held = False  # reading stopped: pipeline full, or the client is not reading
        self.stash = b""  # bytes read but not yet parsed while held
        self.write_paused = False
        self.write_paused_at = 0.0
        self.ended = False  # no more requests are read on this connection
        self.closing = False  # last answer written (or none to write): lingering, then closed
        self.closed_at = 0.0
        self.refused = False  # over the connection limit: every request gets 503
        self.continue_due = False  # the request being read waits for `100 Continue`
        self.reserved = 0  # bytes of the body budget held for the body being read
        self.wants = 0  # bytes of it asked for and not yet granted (reading stopped meanwhile)
        self._reset()

    def _reset(self) -> None:
        self.url_parts: list[bytes] = []
        self.url = b""
        self.header_list: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.raw = 0  # bytes of this head (or body) read, but for the read it began in
        self.body_parts: list[bytes] = []
        self.body_bytes = 0
        self.oversize = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        server = self.server
        if len(server.connections) >= self.limits.max_connections and not server.evict_idle():
            self.refused = True
            server.refused_connection()
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = self.ended = True
        server = self.server
        server.connections.discard(self)
        server.release(self.reserved + self.pending_bytes)  # a running handler's: when it ends
        self.reserved = self.pending_bytes = 0
        if self.wants:
            self.wants = 0
            server.waiting.pop(self, None)
        self.pending.clear()
        self.stash = b""
        # The parser and this protocol refer to each other, so this object may wait for the
        # cycle collector: what it holds of an unfinished request goes now.
        self._reset()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the caller left: its handler (and queued inputs) go with it

    # No eof_received: a client's FIN closes the connection and cancels its handler. A client
    # that half-closes to wait for its answer is rare; one that gave up is common.

    def pause_writing(self) -> None:
        """The client is not reading: handle none of its further requests, read none."""
        self.write_paused = True
        self.write_paused_at = self.loop.time()
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closing:
            self._update_reading()
            if self.task is None:
                self._next()

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return  # the last request was read; what follows is dropped
        if self.stash or len(data) > FEED_SLICE:
            self._feed_slices(data)
        else:
            self._feed(data)

    def _feed_slices(self, data: bytes) -> None:
        if self.stash:
            data, self.stash = self.stash + data, b""
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            if self.held:  # the pipeline filled up: the rest waits until it drains
                self.stash = bytes(view[start:])
                return
            self._feed(view[start : start + FEED_SLICE])  # type: ignore[arg-type]
            if self.ended:
                return

    def _feed(self, data: bytes) -> None:
        began, phase = self.messages, self.phase
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # The request asked for another protocol; it was answered as plain HTTP/1.1 (as a
            # server may do), so what follows is the next request.
            self.parser = httptools.HttpRequestParser(self)
            rest = bytes(memoryview(data)[e.args[0] :])
            if rest and not self.ended:
                self._feed(rest)
            return
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed HTTP request: {e}")
            return
        if phase != _IDLE and self.phase == phase and self.messages == began:
            # httptools holds a header (or a chunked body's trailer) in parts until it ends;
            # count what it may hold, from the bytes read whole within one head or body.
            self.raw += len(data)
            limits = self.limits
            if phase == _HEAD:
                if self.raw > limits.max_head_bytes:
                    self._fail(431, "request line and headers are too large")
            elif self.raw > BODY_FRAMING * limits.max_body_bytes + limits.max_head_bytes:
                self._fail(None if self.oversize else 413, "request body and framing too large")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()
        self.phase = _HEAD
        self.messages += 1
        self.since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url_parts.append(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name, value))
        self._count_head(len(name) + len(value) + HEADER_OVERHEAD)
        if len(self.header_list) > self.limits.max_header_count:
            self._fail(431, "too many header fields")
            raise httptools.HttpParserError("too many headers")

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.limits.max_head_bytes:
            self._fail(431, "request line and headers are too large")
            raise httptools.HttpParserError("head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.header_list:
            # httptools keeps a value's trailing whitespace; h11 (and the RFC) drop it.
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            value = value.rstrip(" \t")
            if name in headers:
                if name == "host":
                    return self._refuse("more than one Host header")
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
        self.headers = headers
        version = parser.get_http_version()
        # HTTP/1.0 keep-alive needs a `Connection: keep-alive` answer; like h11, end instead.
        self.keep_alive = version == "1.1"
        if version != "1.1":
            if version != "1.0":
                return self._refuse(f"HTTP/{version} is not supported", 505)
        elif "host" not in headers:
            return self._refuse("HTTP/1.1 request without a Host header")
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.lower() != "chunked":
            return self._refuse("only Transfer-Encoding: chunked is supported")
        parts = self.url_parts
        self.url = url = parts[0] if len(parts) == 1 else b"".join(parts)
        if url[:1] != b"/" and (url != b"*" or parser.get_method() != b"OPTIONS"):
            # Absolute-form, authority-form, or anything else: the proxy only ever talks to
            # its own upstream, and a target that is not a path could name another host.
            return self._refuse("the request target must be a path starting with /")
        if b"#" in url:
            return self._refuse("a request target has no fragment")
        if _unsafe_path(url):
            return self._refuse("the request path has a dot segment or starts with //")
        if parser.should_upgrade() and (
            coding is not None
            or headers.get("content-length", "0") != "0"
            or parser.get_method() == b"CONNECT"
        ):
            return self._refuse("protocol upgrades are not supported")
        self.phase = _BODY
        self.raw = 0
        self.since = self.loop.time()
        if self.refused:  # over the connection limit: 503 at once, the body never read
            self._oversize(False)
            return
        expect = headers.get("expect")
        # A 1.0 client does not know 100 Continue (RFC 9110 section 10.1.1): it sends its body.
        continue_wanted = (
            expect is not None and expect.lower() == "100-continue" and version == "1.1"
        )
        length = headers.get("content-length")
        size = int(length) if length is not None else (0 if coding is None else -1)
        if size > self.limits.max_body_bytes:
            # Answer at once; without an `Expect` the body is read and dropped (the client sees
            # the answer rather than a reset), with one the client may never send it.
            self._oversize(not continue_wanted and self.keep_alive and parser.should_keep_alive())
            return
        vet = self.server.vet
        if size and vet is not None:
            answer = vet(self._request(b""))
            if answer is not None:  # refused on its head: the body is never read
                self.oversize = True
                self._enqueue(answer, False)
                return
        if size:
            self._reserve(size if size > 0 else self.limits.max_body_bytes)
        if continue_wanted:
            if self.task is None and not self.pending and not self.wants:
                self._continue()
            else:
                self.continue_due = True  # once the answers before it are written

    def _refuse(self, reason: str, status: int = 400) -> None:
        self._fail(status, reason)
        raise httptools.HttpParserError(reason)

    def _reserve(self, size: int) -> None:
        """Hold `size` bytes of the server's body budget for this body; without room, read
        nothing more until the server grants it."""
        if self.server.reserve(self, size):
            self.reserved = size
        else:
            self.wants = size
            self._update_reading()

    def granted(self) -> None:
        """The server granted the budget this connection waited for."""
        self.reserved, self.wants = self.wants, 0
        self._update_reading()
        if self.continue_due and self.task is None and not self.pending:
            self._continue()  # the body is asked for only once there is room for it

    def on_body(self, body: bytes) -> None:
        if self.oversize:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            self._oversize(self.keep_alive and self.parser.should_keep_alive())
            return
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        self.continue_due = False
        reserved, self.reserved = self.reserved, 0
        if self.oversize:
            self.server.release(reserved)
            return
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.body_parts = []
        if self.wants:
            # Its body came in the same read as its head (one FEED_SLICE at most): charged
            # though over the budget, rather than parsed again.
            self.server.waiting.pop(self, None)
            self.wants = 0
            self.server.body_held += len(body)
            self._update_reading()
        else:
            # The budget now holds this body until it is answered (pending_bytes, then the task).
            self.server.release(reserved - len(body))
        self._enqueue(self._request(body), self.keep_alive and self.parser.should_keep_alive())

    def _continue(self) -> None:
        assert self.transport is not None
        self.continue_due = False
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.since = self.loop.time()  # the body timeout starts when the body is asked for

    # Requests in order.
    def _request(self, body: bytes, oversize: bool = False) -> Request:
        url = self.url
        if url == b"*":
            path, query = "*", ""
        else:
            parsed = httptools.parse_url(url)  # type: ignore[arg-type]
            path = parsed.path.decode("latin-1")
            query = parsed.query.decode("latin-1") if parsed.query else ""
        method = self.parser.get_method().decode("latin-1")
        return Request(method, path, query, self.headers, body, self.remote, oversize)

    def _oversize(self, keep_alive: bool) -> None:
        """Answer at once (the handler decides the body); the rest of the body is dropped."""
        self.oversize = True
        self.body_parts = []
        self.server.release(self.reserved)
        self.reserved = 0
        self._enqueue(self._request(b"", oversize=True), keep_alive)

    def _enqueue(self, request: Request | Response | None, keep_alive: bool) -> None:
        if self.ended:
            if request.__class__ is Request:
                self.server.release(len(request.body))  # type: ignore[union-attr]
            return  # after a request that closes the connection, nothing more is answered
        if not keep_alive:
            self.ended = True
            self._drop_reading()
        self.pending.append((request, keep_alive))
        if request.__class__ is Request:
            self.pending_bytes += len(request.body)  # type: ignore[union-attr]
        if self.task is None:
            self._next()
        else:
            self._update_reading()

    def _fail(self, status: int | None, reason: str) -> None:
        """A request we cannot take: once the answers before it are written, answer it (or
        not, with no status) and close. Nothing more is read."""
        if self.ended:
            return
        log.debug("%s from %s: %s", status or "close", self.remote, reason)
        self._enqueue(_plain(status, reason) if status else None, False)

    def _update_reading(self) -> None:
        hold = (
            self.write_paused
            or self.wants > 0
            or len(self.pending) >= MAX_PIPELINED
            or self.pending_bytes >= PIPELINED_BYTES
        )
        if hold == self.held or self.transport is None:
            return
        self.held = hold
        if hold:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
            self.since = self.loop.time()  # the peer was not late while we did not read
            if self.stash:
                self.loop.call_soon(self._feed_stash)

    def _feed_stash(self) -> None:
        if self.stash and not self.held and not self.ended:
            self._feed_slices(b"")

    def _next(self) -> None:
        if self.closing or self.write_paused or not self.pending:
            self.task = None
            if self.continue_due and not self.pending and not self.closing:
                self._continue()
            return
        item, keep_alive = self.pending.popleft()
        if item.__class__ is Request:
            size = len(item.body)  # type: ignore[union-attr]
            self.pending_bytes -= size
            if self.held:
                self._update_reading()
            self.task = self.loop.create_task(self._run(item, keep_alive))  # type: ignore[arg-type]
            if size:  # the handler holds the body until it ends, however it ends
                self.task.add_done_callback(lambda _, size=size: self.server.release(size))
        else:
            self.task = None
            if item is not None:
                self._write(None, item, False)  # type: ignore[arg-type]
            self._finish()

    async def _run(self, request: Request, keep_alive: bool) -> None:
        try:
            if self.refused:
                response = _plain(503, "too many connections", {"Retry-After": "1"})
            elif request.path == "*":
                response = Response(200, headers=_ALLOW)  # OPTIONS *: the server itself
            else:
                response = await self.server.handler(request)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            response = Response(500, _INTERNAL_ERROR, "application/json")
        if self.closing or self.transport is None:
            return
        if self.refused or (
            self.server.draining and not self.pending and self.phase == _IDLE and not self.stash
        ):
            keep_alive = False  # every request received is answered, then the connection ends
        if not self._write(request, response, keep_alive) or not keep_alive:
            self.ended = True
            self._finish()
            return
        self._next()

    def _write(self, request: Request | None, response: Response, keep_alive: bool) -> bool:
        """Write one answer; False if it could not be written whole (the connection must end)."""
        transport = self.transport
        assert transport is not None
        date = self.server.clock.date_line()
        try:
            head = _head(response, keep_alive, date)
        except Exception:
            what = f"{request.method} {request.path}" if request is not None else "an error"
            log.exception("cannot write the answer to %s; answering 500", what)
            response = Response(500, _INTERNAL_ERROR, "application/json")
            head = _head(response, False, date)
            keep_alive = False
        try:
            if (request is not None and request.method == "HEAD") or response.status in _NO_BODY:
                transport.write(head)
            else:
                transport.writelines([head, response.body])
        except Exception:
            log.exception("writing an answer failed; closing the connection")
            transport.abort()
            return False
        self.served += 1
        self.answered_at = self.loop.time()
        return keep_alive

    def _finish(self) -> None:
        """The last answer is written: send FIN, and read and drop whatever the client still
        sends until it closes (or LINGER_SECONDS pass), so that its unread data does not make
        the kernel reset the connection and destroy the answer."""
        transport = self.transport
        if self.closing or transport is None:
            return
        self.closing = self.ended = True
        self.closed_at = self.loop.time()
        if transport.is_closing():
            return
        if self.held:
            self.held = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            transport.close()

    def expire(self, now: float) -> None:
        """Called by the server's sweep: enforce this connection's timeouts."""
        transport = self.transport
        if transport is None:
            return
        limits = self.limits
        if self.closing:
            waiting = limits.send_timeout if transport.get_write_buffer_size() else LINGER_SECONDS
            if now - self.closed_at > waiting:
                transport.abort()
        elif self.write_paused:
            if now - self.write_paused_at > limits.send_timeout:
                log.debug("%s read none of its answer in time: dropped", self.remote)
                transport.abort()
        elif self.held or self.ended:
            return  # not reading: the client is not the one late
        elif self.phase == _HEAD:
            if now - self.since > limits.head_timeout:
                self._fail(408, "request head not received in time")
        elif self.phase == _BODY:
            if not self.continue_due and now - self.since > limits.body_timeout:
                self._fail(None if self.oversize else 408, "request body not received in time")
        elif self.task is None and not self.pending:
            if self.served:
                late = now - self.answered_at > limits.keepalive_timeout
            else:  # nothing asked yet since the connection was made
                late = now - self.since > limits.head_timeout
            if late:
                transport.close()

    def _drop_reading(self) -> None:
        """No more requests are read: give back budget held or asked for a body not read."""
        if self.wants:
            self.wants = 0
            self.server.waiting.pop(self, None)
        if self.reserved:
            self.server.release(self.reserved)
            self.reserved = 0
        self.body_parts = []

    def idle(self) -> bool:
        """Between requests on a kept-alive connection, after at least one answer."""
        return (
            self.served > 0
            and self.task is None
            and not self.pending
            and self.phase == _IDLE
            and not self.stash
            and not self.closing
            and not self.write_paused
            and self.transport is not None
        )

    def close_between_requests(self) -> None:
        """Shutting down: end the connection if it is between requests (and has had one)."""
        transport = self.transport
        if transport is None:
            return
        if self.closing:
            if not transport.get_write_buffer_size():
                transport.close()
        elif (
            self.served
            and self.task is None
            and not self.pending
            and self.phase == _IDLE
            and not self.stash
        ):
            transport.close()


def _unsafe_path(url: bytes) -> bool:
    """A `.` or `..` segment (raw or percent-encoded), or `//` at the start: the upstream (or
    anything between) may resolve it to a path outside the one asked for."""
    path = url.partition(b"?")[0]
    if path[:2] == b"//":
        return True
    if b"." not in path and b"%" not in path:
        return False
    for segment in path.lower().replace(b"%2e", b".").split(b"/"):
        if segment in (b".", b".."):
            return True
    return False


def _trimmer() -> Callable[[], object]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return lambda: None


_malloc_trim = _trimmer()


def _trim() -> None:
    """Hand freed heap memory back to the system: glibc keeps what many bodies freed at once
    (docs/security.md has the figures)."""
    _malloc_trim(0)


class Server:
    """Listen on one address. `drain` ends each connection after its next answer; `close`
    accepts what waits in the listen backlog, stops listening, and lets answers finish."""

    def __init__(
        self, handler: Handler, limits: Limits | None = None, vet: Vet | None = None
    ) -> None:
        self.handler = handler
        self.vet = vet
        self.limits = limits or Limits()
        self.body_held = 0  # bytes of the body budget granted
        # Connections waiting for body budget, first come first served (a dict keeps order).
        self.waiting: dict[Connection, None] = {}
        self.evictions = 0
        self._high = 0  # the most body bytes held since memory was last handed back
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.clock = _Clock()
        self.draining = False
        self.refusals = 0
        self._last_refusal_log = -60.0
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

    def reserve(self, conn: Connection, size: int) -> bool:
        """Grant `size` bytes of the body budget now, or queue `conn` for it (False). One body
        always fits in an empty budget, so a granted body can always be read whole."""
        if not self.waiting and (
            self.body_held == 0 or self.body_held + size <= self.limits.max_body_buffer_bytes
        ):
            self.body_held += size
            return True
        self.waiting[conn] = None
        return False

    def release(self, size: int) -> None:
        if not size:
            return
        self.body_held -= size
        self._high = max(self._high, self.body_held + size)
        if self.body_held == 0 and self._high >= TRIM_AFTER:
            self._high = 0
            _trim()
        budget = self.limits.max_body_buffer_bytes
        while self.waiting:
            conn = next(iter(self.waiting))
            if self.body_held and self.body_held + conn.wants > budget:
                break
            del self.waiting[conn]
            self.body_held += conn.wants
            conn.granted()

    def evict_idle(self) -> bool:
        """At the connection cap: close the connection idle longest between requests, to make
        room for a new one. False if none is idle."""
        idle = [c for c in self.connections if c.idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.answered_at)
        self.connections.discard(oldest)
        oldest.closing = oldest.ended = True
        assert oldest.transport is not None
        oldest.transport.close()
        self.evictions += 1
        return True

    def refused_connection(self) -> None:
        self.refusals += 1
        now = self.loop.time()
        if now - self._last_refusal_log >= 10:
            self._last_refusal_log = now
            log.warning(
                "over %d connections: answering 503 (%d refused so far)",
                self.limits.max_connections,
                self.refusals,
            )

    async def _sweep(self) -> None:
        """Enforce every connection's timeouts; a sweep is a pass over the connections."""
        limits = self.limits
        shortest = min(
            limits.head_timeout, limits.body_timeout, limits.keepalive_timeout, limits.send_timeout
        )
        interval = max(0.01, min(1.0, shortest / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.expire(now)

    def drain(self) -> None:
        """From now on each connection ends after answering every request it has received."""
        self.draining = True

    async def close(self, timeout: float = 5.0) -> None:
        """Take in the connections waiting in the listen backlog, stop listening, end the
        connections between requests, and wait up to `timeout` for the rest to be answered."""
        self.draining = True
        if self._listener is not None:
            for sock in await self._stop_listening():
                with contextlib.suppress(OSError):
                    await self.loop.connect_accepted_socket(lambda: Connection(self), sock)
        end = self.loop.time() + timeout
        while True:
            for conn in list(self.connections):
                conn.close_between_requests()
            if not self.connections or self.loop.time() >= end:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _stop_listening(self) -> list[socket.socket]:
        """Stop listening, and accept every connection the kernel had completed by then:
        closing a listening socket resets the connections still in its backlog."""
        assert self._listener is not None
        # A duplicate keeps each socket listening (and queueing) once the loop lets go of it.
        held = [socket.socket(fileno=os.dup(s.fileno())) for s in self._listener.sockets]
        self._listener.close()
        for _ in range(3):  # uvloop closes its descriptor at the end of a loop iteration
            await asyncio.sleep(0)
        accepted = []
        for sock in held:  # all at once, no await: what is queued now is all there will be
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                while True:
                    accepted.append(sock.accept()[0])
            sock.close()
        return accepted
