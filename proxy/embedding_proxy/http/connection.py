"""One client connection: the requests read (reader.py) answered in order, one handler at a
time, the handler cancelled when its client disconnects; then closing, and the timeouts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import partial
from typing import Any

from .answer import ALLOW, INTERNAL_ERROR, NO_BODY, answer_head, plain
from .message import Answer, Later, Request, Response
from .reader import _BODY, _HEAD, _IDLE, RequestReader, ServerSide

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0  # after a last answer, read and drop what the client still sends, this long
FINISHER_STALL_SECONDS = 2.0  # the body read past a full budget may pause this long at most


class Connection(RequestReader):
    """One client connection: parse requests, run them in order, write the answers."""

    def __init__(self, server: ServerSide) -> None:
        super().__init__(server)
        self.served = 0  # answers written
        self.answered_at = 0.0  # when the last one was
        self.write_paused_at = 0.0
        self.closing = False  # last answer written (or none to write): lingering, then closed
        self.half_closed = False  # the client shut its sending side and waits for its answers
        self.closed_at = 0.0

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
        server.answer_taken(self)
        server.release(self.reserved + self.pending_bytes)  # a running handler's: when it ends
        self.reserved = self.pending_bytes = 0
        if self.wants:
            self.wants = 0
            server.waiting.pop(self, None)
        server.done_reading(self)
        self.pending.clear()
        self.stash = b""
        # The parser and this protocol refer to each other, so this object may wait for the
        # cycle collector: what it holds of an unfinished request goes now.
        self._reset()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the caller left: its handler (and queued inputs) go with it

    def eof_received(self) -> bool:
        """The client sent FIN. If its last request said it was the last (`Connection: close`,
        or HTTP/1.0), the client has shut its sending side to wait, as RFC 9112 (9.6) lets it:
        what it sent is answered, then the connection closes. Otherwise it gave up waiting (a
        pooled client's timeout closes so): the connection closes, and the handler and its
        queued inputs go with it."""
        if self.ended and not self.closing and (self.task is not None or self.pending):
            self.half_closed = True
            return True  # keep writing
        return False

    def pause_writing(self) -> None:
        """The client is not reading: handle none of its further requests, read none."""
        self.write_paused = True
        self.write_paused_at = self.loop.time()
        self._update_reading()
        if self.transport is not None:
            self.server.hold_answer(self, self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.write_paused = False
        self.server.answer_taken(self)
        if not self.closing:
            self._update_reading()
            if self.task is None:
                self._next()

    def _next(self) -> None:
        if self.closing or self.write_paused or not self.pending:
            self.task = None
            if self.continue_due and not self.pending and not self.closing and not self.wants:
                self._continue()
            return
        item, keep_alive = self.pending.popleft()
        if item.__class__ is not Request:
            self.task = None
            if item is not None:
                self._write(None, item, False)  # type: ignore[arg-type]
            self._finish()
            return
        request: Request = item  # type: ignore[assignment]
        size = len(request.body)
        self.pending_bytes -= size
        if self.held:
            self._update_reading()
        answer = self._answer(request)
        kind = answer.__class__
        if kind is Response:
            self.task = None
            self.server.release(size)
            self._respond(request, answer, keep_alive)  # type: ignore[arg-type]
            return
        if kind is Later:  # its future's callbacks run however it ends: the body goes there
            future = self.task = answer.future  # type: ignore[union-attr]
            future.add_done_callback(partial(self._settle, answer, request, keep_alive, size))
            return
        task = self.task = self.loop.create_task(self._run(answer, request, keep_alive))  # type: ignore[arg-type]
        if size:  # the handler holds the body until it ends, however it ends
            task.add_done_callback(lambda _, size=size: self.server.release(size))

    def _answer(self, request: Request) -> Answer:
        try:
            if self.refused and not self._probe(request):
                return plain(503, "too many connections", {"Retry-After": "1"})
            if request.path == "*":
                return Response(200, headers=ALLOW)  # OPTIONS *: the server itself
            return self.server.handler(request)
        except Exception:
            return _failed(request)

    async def _run(
        self, answer: Coroutine[Any, Any, Response], request: Request, keep_alive: bool
    ) -> None:
        try:
            response = await answer
        except asyncio.CancelledError:
            return
        except Exception:
            response = _failed(request)
        self._respond(request, response, keep_alive)

    def _settle(
        self,
        answer: Later,
        request: Request,
        keep_alive: bool,
        size: int,
        future: asyncio.Future[Any],
    ) -> None:
        self.server.release(size)
        try:
            response = answer.finish(future)
        except asyncio.CancelledError:
            return
        except Exception:
            response = _failed(request)
        self._respond(request, response, keep_alive)

    def _respond(self, request: Request, response: Response, keep_alive: bool) -> None:
        if self.closing or self.transport is None:
            return
        if self.refused or (
            self.server.draining and not self.pending and self.phase == _IDLE and not self.stash
        ):
            keep_alive = False  # every request received is answered, then the connection ends
        if not self._write(request, response, keep_alive) or not keep_alive:
            self.ended = True
            self._finish()
        elif self.pending or self.continue_due:
            self._next()
        else:
            self.task = None  # `_next` with nothing to do, without the call

    def _write(self, request: Request | None, response: Response, keep_alive: bool) -> bool:
        """Write one answer; False if it could not be written whole (the connection must end)."""
        transport = self.transport
        assert transport is not None
        date = self.server.clock.date_line()
        try:
            head = answer_head(response, keep_alive, date)
        except Exception:
            what = f"{request.method} {request.path}" if request is not None else "an error"
            log.exception("cannot write the answer to %s; answering 500", what)
            response = Response(500, INTERNAL_ERROR, "application/json")
            head = answer_head(response, False, date)
            keep_alive = False
        try:
            if (request is not None and request.method == "HEAD") or response.status in NO_BODY:
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
        if self.half_closed:
            transport.close()  # nothing more can come: close once the answers are written
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
            if self.server.finisher is self and now - self.last_body > FINISHER_STALL_SECONDS:
                # Past a full budget every other body waits for this one: it must keep coming.
                self._fail(408, "request body stalled while others wait for room")
            elif not self.continue_due and now - self.since > limits.body_timeout:
                self._fail(None if self.oversize else 408, "request body not received in time")
        elif self.task is None and not self.pending:
            if self.served:
                late = now - self.answered_at > limits.keepalive_timeout
            else:  # nothing asked yet since the connection was made
                late = now - self.since > limits.head_timeout
            if late:
                transport.close()

    def _probe(self, request: Request) -> bool:
        """A probe, answered even over the connection cap: the kubelet must learn the truth."""
        return request.method in ("GET", "HEAD") and request.path in self.limits.probe_paths

    def in_head(self) -> bool:
        """Nothing asked yet, or a head begun and not finished, with nothing in progress."""
        return (
            (self.phase == _HEAD or (self.phase == _IDLE and not self.served))
            and self.task is None
            and not self.pending
            and not self.stash
            and not self.closing
            and self.transport is not None
        )

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


def _failed(request: Request) -> Response:
    log.exception("unhandled error answering %s %s", request.method, request.path)
    return Response(500, INTERNAL_ERROR, "application/json")
