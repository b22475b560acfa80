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

The parts: message.py (requests, answers, limits), head.py (the checks on a head),
reader.py (reading requests), connection.py (answering them), answer.py (writing an
answer); here, listening, the body budget shared by all connections, and shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
from collections.abc import Callable

from .answer import Clock
from .connection import Connection
from .message import Handler, Limits, Vet
from .reader import FEED_SLICE, RequestReader

log = logging.getLogger(__name__)

STALLED_SECONDS = 1.0  # in a head this long (or silent since accepted): a stall, at the cap
TRIM_AFTER = 64 * 1024 * 1024  # bodies held at once before the heap is trimmed when all are gone


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
        self,
        handler: Handler,
        limits: Limits | None = None,
        vet: Vet | None = None,
        always: bytes = b"",
    ) -> None:
        """`always`: header lines (`Name: value\r\n` each) that every answer carries."""
        self.handler = handler
        self.vet = vet
        self.limits = limits or Limits()
        self.body_held = 0  # bytes of request bodies held: read, and not yet answered
        self.finisher: RequestReader | None = None  # may read past a full budget (`charge`)
        # Connections waiting for body budget, first come first served (a dict keeps order).
        self.waiting: dict[RequestReader, None] = {}
        self.evictions = 0
        # Connections whose clients leave answers waiting (writing paused), longest first, and
        # the bytes each had unsent when it paused.
        self.slow: dict[Connection, int] = {}
        self.slow_bytes = 0
        self.slow_drops = 0
        self._high = 0  # the most body bytes held since memory was last handed back
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.clock = Clock(always)
        self.draining = False
        self.refusals = 0
        self._last_refusal_log = -60.0
        self._listener: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(
        self, host: str, port: int, backlog: int = 4096, reuse_port: bool = False
    ) -> None:
        self._listener = await self.loop.create_server(
            lambda: Connection(self),
            host,
            port,
            backlog=backlog,
            reuse_address=True,
            reuse_port=reuse_port or None,  # worker processes share the port (SO_REUSEPORT)
        )
        self._sweeper = self.loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    def charge(self, conn: RequestReader, size: int) -> bool:
        """`size` more body bytes arrived on `conn`. False: the budget is full, `conn` must
        wait for room. One body at a time (the finisher) may always be read to its end past a
        full budget, so bodies charged in part can never all wait on each other."""
        self.body_held += size
        if self.body_held <= self.limits.max_body_buffer_bytes:
            if conn is self.finisher:
                conn.last_body = self.loop.time()
            if self.waiting:
                self._wake()
            return True
        if self.finisher is None:
            self.finisher = conn
        if self.finisher is not conn:
            return False
        conn.last_body = self.loop.time()  # it must keep coming (FINISHER_STALL_SECONDS)
        return True

    def done_reading(self, conn: RequestReader) -> None:
        """`conn` read its body (or gave it up): a finisher passes its turn to the waiting
        connection first in line while the budget is still full."""
        if self.finisher is not conn:
            return
        self.finisher = None
        if self.waiting and self.body_held > self.limits.max_body_buffer_bytes:
            first = next(iter(self.waiting))
            del self.waiting[first]
            self.finisher = first
            first.granted()

    def release(self, size: int) -> None:
        if not size:
            return
        self.body_held -= size
        self._high = max(self._high, self.body_held + size)
        if self.body_held == 0 and self._high >= TRIM_AFTER:
            self._high = 0
            _trim()
        if self.waiting:
            self._wake()

    def _wake(self) -> None:
        """Let waiting connections read again, first come first served, as many as the room
        left may take one read slice each (they wait again when they find it full)."""
        room = self.limits.max_body_buffer_bytes - self.body_held
        while self.waiting and room > 0:
            conn = next(iter(self.waiting))
            del self.waiting[conn]
            room -= FEED_SLICE
            conn.granted()

    def hold_answer(self, conn: Connection, unsent: int) -> None:
        """`conn`'s client left `unsent` bytes of answers waiting. Over the answer budget, drop
        the connections that have left theirs waiting longest, until it fits (the newest always
        does): a client reading a byte now and then must not hold its answer for ever."""
        self.slow[conn] = unsent
        self.slow_bytes += unsent
        while self.slow_bytes > self.limits.max_answer_buffer_bytes and len(self.slow) > 1:
            oldest = next(iter(self.slow))
            self.answer_taken(oldest)
            self.slow_drops += 1
            log.debug("%s left its answer waiting over the answer budget: dropped", oldest.remote)
            if oldest.transport is not None:
                oldest.transport.abort()

    def answer_taken(self, conn: Connection) -> None:
        self.slow_bytes -= self.slow.pop(conn, 0)

    def evict_idle(self) -> bool:
        """At the connection cap: close the connection idle longest between requests, or else
        the one longest in a head not finished (or not begun), to make room for a new one.
        False if every connection has a request in progress."""
        idle = [c for c in self.connections if c.idle()]
        if idle:
            oldest = min(idle, key=lambda c: c.answered_at)
        else:
            # Peers that stall in a head must not hold every slot: the probes need one. A
            # connection just made has had no time to send its head: a burst is not a stall.
            stalled = self.loop.time() - STALLED_SECONDS
            heads = [c for c in self.connections if c.in_head() and c.since <= stalled]
            if not heads:
                return False
            oldest = min(heads, key=lambda c: c.since)
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
