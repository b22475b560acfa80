"""A minimal HTTP/1.1 keep-alive client on asyncio's protocol layer, for the load generator.

A general client (aiohttp's) costs the caller 150-200 µs of CPU per request with a 16 KB answer;
on a 2-core machine that shares its cores with the proxy and the upstream, the load generator
would then take CPU from what it measures. This one sends pre-built request bytes and reads
one answer framed by Content-Length (or chunked), on one connection per worker, nothing else.
"""

from __future__ import annotations

import asyncio

import orjson


class HttpError(Exception):
    """The connection failed or the answer could not be framed."""


def build_request(host: str, port: int, path: str, body: bytes, extra: str = "") -> bytes:
    """A POST of `body`; `extra`: more header lines, each ending in CRLF."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lower case, with the colon) in a response head."""
    start = head.lower().find(b"\r\n" + name)
    if start < 0:
        return None
    start += 2 + len(name)
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else None].strip()


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """The body of a complete chunked answer from `start`, and where it ends; None if incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < eol + 2 + size + 2:
            return None
        parts.append(bytes(buf[eol + 2 : eol + 2 + size]))
        pos = eol + 2 + size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc or 'closed by server'}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._answer()
        except (ValueError, HttpError) as e:
            waiter.set_exception(HttpError(f"bad answer: {e}"))
            return
        if answer is not None:
            waiter.set_result(answer)

    def _answer(self) -> tuple[int, bytes] | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end])
        status = int(head[9:12])
        length = _header(head, b"content-length:")
        if length is not None:
            stop = end + 4 + int(length)
            if len(buf) < stop:
                return None
            body = bytes(buf[end + 4 : stop])
        elif (_header(head, b"transfer-encoding:") or b"").lower() == b"chunked":
            framed = _dechunk(buf, end + 4)
            if framed is None:
                return None
            body, stop = framed
        else:
            raise HttpError("answer without Content-Length or chunked framing")
        del buf[:stop]
        return status, body

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise HttpError("connection closed")
        waiter = self.waiter = self.loop.create_future()
        self.transport.write(data)
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("request timed out"))


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(loop), host, port)
    return conn


def error_text(body: bytes) -> str:
    """An error body as one short line (TEI's {"error": ...} when it is JSON)."""
    try:
        return str(orjson.loads(body).get("error", body[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")
