"""A lean HTTP/1.1 client for the one call on the proxy's hot path: POST a batch to TEI.

A general client costs several hundred microseconds of CPU per call; with one caller at a time
every request is its own upstream call, and that cost is most of what the proxy adds to TEI's
latency. This one keeps a pool of keep-alive connections, writes pre-framed requests, and reads
answers framed by httptools; everything else (`/info`, forwarded routes) stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

# Bounds on an upstream's answer: whatever it sends, one connection holds at most this much.
MAX_HEAD_BYTES = 64 * 1024  # status line and headers
MAX_HEADERS = 100
DEFAULT_MAX_BODY = 100_000_000
DEFAULT_MAX_HELD = 256 * 1024 * 1024  # answer bodies of all connections at once
READ_BYTES = 256 * 1024  # one read from a connection at most


class ClientError(Exception):
    """The connection failed, or the answer could not be read."""


class AnswerError(ClientError):
    """The answer broke a limit (head, header count, body size): asking again will not help."""


class Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body


class _Budget:
    """Answer bodies held across the client's connections, from their heads until they are
    handed over: each is charged its Content-Length (or `max_body` without one) at its head; one
    that does not fit waits, first come first served, its connection not read meanwhile. One
    always fits in an empty budget, so a granted body can always be read whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.waiting: deque[tuple[_Connection, int]] = deque()

    def take(self, conn: _Connection, size: int) -> bool:
        if not self.waiting and (not self.held or self.held + size <= self.limit):
            self.held += size
            return True
        self.waiting.append((conn, size))
        return False

    def give_back(self, size: int) -> None:
        self.held -= size
        while self.waiting:
            conn, wants = self.waiting[0]
            if conn.closed:
                self.waiting.popleft()
                continue
            if self.held and self.held + wants > self.limit:
                return
            self.waiting.popleft()
            self.held += wants
            conn.granted(wants)


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection, one request at a time. Read into a buffer shared by the
    client's connections (`get_buffer`): each read is parsed before the next one is made, and
    the parser copies what it keeps, so an answer is copied once on its way in, not twice."""

    def __init__(
        self,
        max_body: int = DEFAULT_MAX_BODY,
        budget: _Budget | None = None,
        buffer: memoryview | None = None,
    ) -> None:
        self.buffer = buffer if buffer is not None else memoryview(bytearray(READ_BYTES))
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.budget = budget or _Budget(max_body)
        self.charged = 0  # of the budget, for the answer being read
        self.wants = 0  # of it, asked for and not yet granted (reading paused meanwhile)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.received = False  # any byte of the current answer
        self._reset()

    def _reset(self) -> None:
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.head_bytes = 0  # bytes received while the head is not complete
        self.header_bytes = 0  # of the header lines parsed
        self.header_count = 0
        self.body_bytes = 0
        self.in_head = True
        self.until_close = (
            False  # no Content-Length, not chunked: the body ends with the connection
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.until_close and not self.in_head:
            # The end of the connection is the end of this answer's body (RFC 9112 6.3, rule 8).
            self.until_close = False
            self.on_message_complete()
            return
        self._fail(ClientError(f"connection closed{f': {exc}' if exc else ' by the server'}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.buffer[:nbytes])  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
                raise AnswerError(f"head exceeds {MAX_HEAD_BYTES} bytes")
        except AnswerError as e:
            self._fail(e)
            self.close()
        except httptools.HttpParserError as e:
            cause = e.__context__
            self._fail(
                cause
                if isinstance(cause, AnswerError)
                else ClientError(f"malformed HTTP answer: {e}")
            )
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            raise AnswerError(f"more than {MAX_HEADERS} headers")
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEAD_BYTES:
            raise AnswerError(f"head exceeds {MAX_HEAD_BYTES} bytes")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise AnswerError(
                f"body of {length} bytes exceeds upstream.max_answer_bytes ({self.max_body})"
            )
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.until_close = length is None and not chunked
        if 100 <= self.parser.get_status_code() < 200:
            return  # an interim answer: no body
        size = int(length) if length is not None and length.isdigit() else self.max_body
        if not size:
            return
        if self.budget.take(self, size):
            self.charged = size
        else:
            self.wants = size
            if self.transport is not None:
                self.transport.pause_reading()  # until the budget has room (granted)

    def granted(self, size: int) -> None:
        self.charged, self.wants = size, 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def give_back(self) -> None:
        """The answer is handed over (or given up): its room in the budget goes back."""
        if self.charged:
            charged, self.charged = self.charged, 0
            self.budget.give_back(charged)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body:
            raise AnswerError(f"body exceeds upstream.max_answer_bytes ({self.max_body})")
        self.parts.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._reset()  # an interim answer: the real one follows
            return
        if self.wants:  # the whole body came in the read with its head: held, not waiting
            self.budget.waiting.remove((self, self.wants))
            self.wants = 0
            if self.transport is not None:
                self.transport.resume_reading()
        answer = Answer(status, self.headers, b"".join(self.parts))
        if not self.parser.should_keep_alive() or status == 101:
            self.close()
        self._reset()
        if self.waiter is not None and not self.waiter.done():
            if status == 101:
                self.waiter.set_exception(AnswerError("upstream switched protocols"))
            else:
                self.waiter.set_result(answer)

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def send(self, head: bytes, body: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.received = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines([head, body])
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """POST to one server over at most `max_connections` keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        max_connections: int,
        max_body: int = DEFAULT_MAX_BODY,
        max_held: int = DEFAULT_MAX_HELD,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported upstream scheme {parts.scheme!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        host_header = parts.netloc.rpartition("@")[2]
        self._host_line = f"Host: {host_header}\r\n".encode("latin-1")
        self.max_body = max_body
        self.budget = _Budget(max_held)
        self._buffer = memoryview(bytearray(READ_BYTES))  # every connection's reads, one by one
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    def _head(self, path: str, length: int, headers: dict[str, str]) -> bytes:
        lines = [f"POST {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_line]
        lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        lines.append(b"Content-Length: %d\r\n\r\n" % length)
        return b"".join(lines)

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self.max_body, self.budget, self._buffer),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                )
        except TimeoutError:
            raise ClientError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise ClientError(e.strerror or str(e)) from None
        return conn

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], connect_timeout: float
    ) -> Answer:
        """One POST. The caller bounds the whole call with its own timeout (cancellation closes
        the connection, whose answer would otherwise arrive for the next request)."""
        head = self._head(path, len(body), headers)
        async with self._slots:
            while True:
                while self._idle and self._idle[-1].closed:
                    self._idle.pop()
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._connect(connect_timeout)
                try:
                    answer = await conn.send(head, body)
                except AnswerError:
                    conn.close()
                    raise
                except ClientError:
                    conn.close()
                    # A kept-alive connection the server closed meanwhile: try a fresh one.
                    if reused and not conn.received:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                finally:
                    conn.give_back()  # the caller cuts the answer up at once, without awaiting
                if not conn.closed:
                    self._idle.append(conn)
                return answer

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
