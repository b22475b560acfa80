"""Reading requests off one connection: httptools' callbacks, the bounds on what a peer may make
the server hold (head, header count, body, pipeline, the body budget shared by all connections),
reading paused and resumed for them, and the queue of requests read and not yet answered. The
connection (connection.py) answers that queue."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

import httptools

from .answer import Clock, plain
from .head import BadHead, read_head
from .message import Handler, Limits, Request, Response, Vet

log = logging.getLogger(__name__)

MAX_PIPELINED = 16  # requests queued behind the one in progress before reading stops ...
PIPELINED_BYTES = 256 * 1024  # ... or this many bytes of their bodies
FEED_SLICE = 16 * 1024  # a large read is parsed in slices, so that a full pipeline stops within one
HEADER_OVERHEAD = 64  # bytes charged per header against max_head_bytes: what a header costs held
BODY_FRAMING = 8  # a body may come with up to this many times its size in chunk framing
_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is: between requests, in a head, in a body
# Methods as str, made once: any other is decoded.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


class ServerSide(Protocol):
    """What a connection uses of its server (server.Server): its settings, the set of
    connections, and the body budget shared by all of them."""

    limits: Limits
    loop: asyncio.AbstractEventLoop
    handler: Handler
    vet: Vet | None
    clock: Clock
    draining: bool
    body_held: int
    waiting: dict[Any, None]  # connections waiting for body budget, in order
    connections: set[Any]

    finisher: Any  # the one connection that may read its body past a full budget

    def charge(self, conn: RequestReader, size: int) -> bool: ...
    def done_reading(self, conn: RequestReader) -> None: ...
    def release(self, size: int) -> None: ...
    def evict_idle(self) -> bool: ...
    def hold_answer(self, conn: Any, unsent: int) -> None: ...
    def answer_taken(self, conn: Any) -> None: ...
    def refused_connection(self) -> None: ...


class RequestReader(asyncio.Protocol):
    """The reading half of a connection; `Connection` adds the answering half (`_next`)."""

    def __init__(self, server: ServerSide) -> None:
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
        self.task: asyncio.Future[Any] | None = None  # the answer being made
        self.phase = _IDLE
        self.since = self.loop.time()  # when the phase began (a head, a body, reading again)
        self.messages = 0  # requests begun
        self.held = False  # reading stopped: pipeline full, or the client is not reading
        self.stash = b""  # bytes read but not yet parsed while held
        self.write_paused = False
        self.ended = False  # no more requests are read on this connection
        self.refused = False  # over the connection limit: every request gets 503
        self.continue_due = False  # the request being read waits for `100 Continue`
        self.reserved = 0  # bytes of the body being read, charged to the body budget
        self.wants = 0  # 1 while waiting for room in the body budget (reading stopped)
        self.last_body = 0.0  # when body bytes last came, past a full budget
        self._reset()

    def _reset(self) -> None:
        self.url_parts: list[bytes] = []
        self.url = b""
        self.header_list: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.raw = 0  # bytes of this head (or body) read, but for the read it began in
        self.body_parts: list[bytes] = []
        self.request: Request | None = None  # once its head is complete
        self.body_bytes = 0
        self.oversize = False
        self.keep_alive = False

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
        self.head_bytes += len(url)
        if self.head_bytes > self.limits.max_head_bytes:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.header_list
        headers.append((name, value))
        self.head_bytes += len(name) + len(value) + HEADER_OVERHEAD
        limits = self.limits
        if self.head_bytes > limits.max_head_bytes:
            self._too_large()
        if len(headers) > limits.max_header_count:
            self._fail(431, "too many header fields")
            raise httptools.HttpParserError("too many headers")

    def _too_large(self) -> None:
        self._fail(431, "request line and headers are too large")
        raise httptools.HttpParserError("head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        try:
            headers, version, self.url, coding = read_head(parser, self.header_list, self.url_parts)
        except BadHead as e:
            return self._refuse(e.reason, e.status)
        self.headers = headers
        # HTTP/1.0 keep-alive needs a `Connection: keep-alive` answer; like h11, end instead.
        self.keep_alive = version == "1.1"
        self.phase = _BODY
        self.raw = 0
        self.since = self.loop.time()
        expect = headers.get("expect")
        # A 1.0 client does not know 100 Continue (RFC 9110 section 10.1.1): it sends its body.
        continue_wanted = (
            expect is not None and expect.lower() == "100-continue" and version == "1.1"
        )
        length = headers.get("content-length")
        size = int(length) if length is not None else (0 if coding is None else -1)
        # The request, made once: its body comes with its last byte (on_message_complete).
        self.request = request = self._request()
        if self.refused:  # over the connection limit: answered at once, the body never read
            request.oversize = size != 0
            self.oversize = True
            self._enqueue(self._take_request(), False)
            return
        if size > self.limits.max_body_bytes:
            # Answer at once; without an `Expect` the body is read and dropped (the client sees
            # the answer rather than a reset), with one the client may never send it.
            self._oversize(not continue_wanted and self.keep_alive and parser.should_keep_alive())
            return
        vet = self.server.vet
        if size and vet is not None:
            answer = vet(request)
            if answer is not None:  # refused on its head: the body is never read
                self.oversize = True
                self._enqueue(answer, False)
                return
        if continue_wanted:
            if self.server.body_held >= self.limits.max_body_buffer_bytes:
                self._wait_for_room()  # the body is asked for only once there is room for it
            if self.task is None and not self.pending and not self.wants:
                self._continue()
            else:
                self.continue_due = True  # once the answers before it are written, and room

    def _refuse(self, reason: str, status: int = 400) -> None:
        self._fail(status, reason)
        raise httptools.HttpParserError(reason)

    def _wait_for_room(self) -> None:
        """Read nothing more until the server has room in the body budget (`granted`)."""
        if not self.wants:
            self.wants = 1
            self.server.waiting[self] = None
            self._update_reading()

    def granted(self) -> None:
        """The server has room for this connection's body again: read on."""
        self.wants = 0
        self.last_body = self.loop.time()
        self._update_reading()
        if self.continue_due and self.task is None and not self.pending:
            self._continue()  # the body is asked for only once there is room for it

    def on_body(self, body: bytes) -> None:
        if self.oversize:
            return
        size = len(body)
        self.body_bytes += size
        if self.body_bytes > self.limits.max_body_bytes:
            self._oversize(self.keep_alive and self.parser.should_keep_alive())
            return
        self.body_parts.append(body)
        # Charged as it comes, never by what a head declares: a peer that sends no body holds
        # none of the budget.
        self.reserved += size
        if not self.server.charge(self, size):
            self._wait_for_room()

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        self.continue_due = False
        reserved, self.reserved = self.reserved, 0
        self.server.done_reading(self)
        if self.wants:  # its last bytes came in the read that found the budget full
            self.server.waiting.pop(self, None)
            self.wants = 0
            self._update_reading()
        if self.oversize:
            self.server.release(reserved)
            return
        parts = self.body_parts
        request = self._take_request()
        request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.body_parts = []
        # The budget holds this body (`reserved` bytes) until it is answered (pending_bytes,
        # then the task).
        self._enqueue(request, self.keep_alive and self.parser.should_keep_alive())

    def _continue(self) -> None:
        assert self.transport is not None
        self.continue_due = False
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.since = self.loop.time()  # the body timeout starts when the body is asked for

    # Requests in order.
    def _take_request(self) -> Request:
        """The request read (its head complete); the connection lets go of it."""
        request, self.request = self.request, None
        return request  # type: ignore[return-value]

    def _request(self) -> Request:
        url = self.url
        if url == b"*":
            path, query = "*", ""
        else:
            parsed = httptools.parse_url(url)  # type: ignore[arg-type]
            path = parsed.path.decode("latin-1")
            query = parsed.query.decode("latin-1") if parsed.query else ""
        raw = self.parser.get_method()
        method = _METHODS.get(raw) or raw.decode("latin-1")
        return Request(method, path, query, self.headers, b"", self.remote)

    def _oversize(self, keep_alive: bool) -> None:
        """Answer at once (the handler decides the body); the rest of the body is dropped."""
        self.oversize = True
        self.body_parts = []
        self.server.release(self.reserved)
        self.reserved = 0
        self.server.done_reading(self)
        request = self._take_request()
        request.oversize = True
        self._enqueue(request, keep_alive)

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
        self._enqueue(plain(status, reason) if status else None, False)

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
            self.since = self.loop.time()  # the peer was not late while we did not read
            if self.stash:
                # What was read stays the only thing held: the socket is read again once it
                # is parsed, or a connection woken again and again would pile reads up.
                self.loop.call_soon(self._feed_stash)
            else:
                self.transport.resume_reading()

    def _feed_stash(self) -> None:
        if self.stash and not self.held and not self.ended:
            self._feed_slices(b"")
        if not self.held and not self.stash and self.transport is not None:
            self.transport.resume_reading()

    def _drop_reading(self) -> None:
        """No more requests are read: give back budget held or asked for a body not read."""
        if self.wants:
            self.wants = 0
            self.server.waiting.pop(self, None)
        if self.reserved:
            self.server.release(self.reserved)
            self.reserved = 0
        self.server.done_reading(self)
        self.body_parts = []

    def _next(self) -> None:
        """Answer the next request queued, if none is being answered: the connection's."""
        raise NotImplementedError
